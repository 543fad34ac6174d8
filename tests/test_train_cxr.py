"""The CXR encoder: frozen during alignment (BatchNorm statistics included) and strict weight loading."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
import torchxrayvision as xrv

from tests.trainer_fixtures import tiny_config, write_tiny_cache
from trainer import checkpoint as ckpt
from trainer.align import AlignModel, build_align
from trainer.config import CxrModelConfig, load_config
from trainer.cxr_model import (TrainerWarning, XrvDenseNetEncoder, build_cxr_encoder, freeze, load_densenet_weights,
                               resolve_weights, xrv_cache_file)
from trainer.cxr_train import run_cxr
from trainer.ecg_model import EcgEncoder, EcgEncoderConfig
from trainer.engine import fit
from trainer.losses import cross_modal_supcon
from trainer.pipeline import make_context
from trainer.pretrain import run_pretrain

TINY_ECG = EcgEncoderConfig(stem_channels=8, kernel=10, stride=10, d_model=16, layers=1, heads=2, ff_dim=32, dropout=0.0)


def state_copy(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def assert_same_state(before: dict[str, torch.Tensor], module: torch.nn.Module) -> None:
    after = module.state_dict()
    assert set(before) == set(after)
    for key, value in before.items():
        assert torch.equal(value, after[key]), f"{key} changed"


def test_frozen_densenet_keeps_weights_and_batchnorm_statistics():
    """torchxrayvision's DenseNet121 under alignment steps: parameters and BN buffers unchanged."""
    torch.manual_seed(0)
    cxr = freeze(XrvDenseNetEncoder())
    model = AlignModel(EcgEncoder(TINY_ECG), cxr, cxr.feature_dim, 8)
    before_cxr, before_ecg = state_copy(model.cxr_encoder), state_copy(model.ecg_encoder)
    assert any("running_mean" in k for k in before_cxr) and any("num_batches_tracked" in k for k in before_cxr)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    assert not model.cxr_encoder.training and model.ecg_encoder.training
    assert not any(p.requires_grad for p in model.cxr_encoder.parameters())
    for _ in range(2):
        ecg, img = torch.randn(4, 12, 1000), torch.rand(4, 1, 32, 32) * 2048 - 1024
        ze, zc = model(ecg, img)
        loss = cross_modal_supcon(ze, zc, torch.randint(0, 2, (4, 3)), temperature=0.1)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert_same_state(before_cxr, model.cxr_encoder)
    assert not torch.equal(before_ecg["stem.0.weight"], model.ecg_encoder.state_dict()["stem.0.weight"])
    # the check can fail: the same forward in train mode (the public code's defect) moves the statistics
    drifting = copy.deepcopy(model.cxr_encoder).train()
    with torch.no_grad():
        drifting(torch.rand(4, 1, 32, 32) * 2048 - 1024)
    assert not torch.equal(drifting.state_dict()["net.features.norm0.running_mean"], before_cxr["net.features.norm0.running_mean"])


def test_alignment_stage_leaves_the_trained_cxr_encoder_unchanged(tmp_path):
    """The real stage (small CNN): after alignment the CXR encoder equals the cxr stage's checkpoint."""
    cache = write_tiny_cache(tmp_path / "cache")
    loaded = load_config(tiny_config(tmp_path / "tiny.toml", steps=6, eval_every=3))  # 2 epochs of 48 pairs
    ctx = make_context(loaded, cache, tmp_path / "run", progress=False)
    try:
        run_pretrain(ctx, 0)
        run_cxr(ctx, 0)
        saved = ckpt.load(ctx.checkpoint_path(0, "cxr"))["state_dict"]
        task = build_align(ctx, 0, "cromotex")
        before_ecg = state_copy(task.model.ecg_encoder)
        result = fit(task, ctx.cfg.align.optim, seed=0, ckpt_dir=ctx.ckpt_dir(0), rt=ctx.rt, tracker=ctx.tracker,
                     config_sha256=ctx.config_sha256, log_tag="test")
    finally:
        ctx.tracker.close()
    # evaluated before the first step, every 3 steps and after the last, each time with the encoder checks
    assert [h["global_step"] for h in result.history] == [0, 3, 6] and result.steps_run == 6 and result.epochs == 2.0
    assert all({"loss", "spread_cos", "eff_rank", "probe_auroc"} <= set(h) for h in result.history)
    assert result.initial["global_step"] == 0 and result.kept["global_step"] == result.best_step
    encoder_state = {k[len("encoder."):]: v for k, v in saved.items() if k.startswith("encoder.")}
    assert any("running_var" in k for k in encoder_state)
    assert_same_state(encoder_state, task.model.cxr_encoder)
    changed = [k for k, v in task.model.ecg_encoder.state_dict().items() if not torch.equal(v, before_ecg[k])]
    assert changed  # the ECG side did train


@pytest.fixture(scope="module")
def densenet_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(1)
    return XrvDenseNetEncoder().net.state_dict()


def test_weights_load_strictly_with_a_wrapper_prefix(tmp_path, densenet_state):
    path = tmp_path / "w.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in densenet_state.items()}}, path)
    encoder = load_densenet_weights(path)
    for k, v in densenet_state.items():
        assert torch.equal(encoder.net.state_dict()[k], v)


def test_torchxrayvision_release_format_loads(tmp_path, densenet_state):
    """torchxrayvision's weights files are whole pickled models."""
    net = xrv.models.DenseNet(weights=None)
    net.load_state_dict(densenet_state)
    path = tmp_path / "release.pt"
    torch.save(net, path)
    encoder = load_densenet_weights(path)
    assert torch.equal(encoder.net.features.conv0.weight, densenet_state["features.conv0.weight"])


def test_mismatched_weights_are_an_error_not_silence(tmp_path, densenet_state):
    broken = {k: v for k, v in densenet_state.items() if "denseblock4" not in k}
    path = tmp_path / "broken.pt"
    torch.save(broken, path)
    with pytest.raises(ValueError, match="do not match.*denseblock4"):
        load_densenet_weights(path)
    torch.save({"foo.weight": torch.zeros(2)}, tmp_path / "foreign.pt")
    with pytest.raises(ValueError, match="not a torchxrayvision DenseNet"):
        load_densenet_weights(tmp_path / "foreign.pt")


def test_auto_weights_absent_warn_and_train_from_scratch(tmp_path, monkeypatch):
    monkeypatch.setattr(xrv.utils, "get_cache_dir", lambda: str(tmp_path / "xrv"))
    with pytest.warns(TrainerWarning, match="trained from scratch.*wget https://"):
        assert resolve_weights("auto") is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert resolve_weights("") is None  # asked for no weights: no warning


def test_auto_weights_found_in_the_torchxrayvision_cache(tmp_path, monkeypatch, densenet_state):
    monkeypatch.setattr(xrv.utils, "get_cache_dir", lambda: str(tmp_path / "xrv"))
    path = xrv_cache_file()
    assert path.name.startswith("mimic_nb")
    path.parent.mkdir(parents=True)
    torch.save(densenet_state, path)
    encoder, source = build_cxr_encoder(CxrModelConfig(arch="densenet121", weights="auto"))
    assert source == str(path)
    assert torch.equal(encoder.net.features.norm5.running_var, densenet_state["features.norm5.running_var"])


def test_missing_weights_path_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no such file.*\"auto\""):
        resolve_weights(str(tmp_path / "nope.pt"))


def test_small_cnn_shapes():
    encoder, source = build_cxr_encoder(CxrModelConfig(arch="small_cnn", width=4))
    assert source == "scratch" and encoder(torch.zeros(2, 1, 224, 224)).shape == (2, encoder.feature_dim)
