"""Training configs: the shipped files parse; every bad value is refused with its key named."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from bedside.preprocess import DEFAULT_RECIPE
from trainer.config import Config, ConfigError, load_config, parse_config
from trainer.ecg_model import EcgClassifier, EcgEncoderConfig

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.mark.parametrize("name, min_seeds", [("demo.toml", 1), ("demo-compare.toml", 3), ("paper.toml", 3)])
def test_shipped_configs_parse(name, min_seeds):
    loaded = load_config(CONFIGS / name)
    cfg = loaded.config
    assert len(loaded.sha256) == 64 and loaded.text == (CONFIGS / name).read_text()
    assert "multilabel" in cfg.run.protocols and cfg.run.deploy_method in cfg.run.methods
    assert len(cfg.run.seeds) >= min_seeds  # the comparison configs: the report's intervals are over seeds
    assert "features" in cfg.run.methods  # every shipped config measures the crude-feature floor
    for stage in (cfg.pretrain, cfg.cxr, cfg.align, cfg.finetune):  # budgets in steps, evaluated several times
        assert stage.optim.eval_every_steps < stage.optim.steps and stage.optim.warmup_steps < stage.optim.steps


def test_paper_config_has_the_paper_sizes():
    cfg = load_config(CONFIGS / "paper.toml").config
    assert cfg.ecg == EcgEncoderConfig()  # the lead's defaults are the paper's
    assert cfg.ecg.tokens == 196
    assert (cfg.align.temperature, cfg.align.alpha, cfg.align.topk_fraction, cfg.align.direct_pair_weight) == (0.01, 5.0, 0.1, 3.0)
    assert cfg.align.optim.batch_size == 256 and cfg.cxr_model.arch == "densenet121"
    assert set(cfg.run.methods) == {"features", "supervised", "ssl", "clip", "supcon", "cromotex"}
    assert set(cfg.run.protocols) == {"multilabel", "binary"}
    assert cfg.preprocess.scalings[0] == "minmax"  # the paper's scaling is the one deployed
    assert cfg.run.label_fractions == (0.05, 0.1, 0.25, 1.0)


def test_demo_compare_runs_every_baseline_scaling_and_label_fraction():
    cfg = load_config(CONFIGS / "demo-compare.toml").config
    demo = load_config(CONFIGS / "demo.toml").config
    assert set(cfg.run.methods) == {"features", "supervised", "ssl", "clip", "supcon", "cromotex"}
    assert cfg.run.protocols == ("multilabel",)
    assert cfg.preprocess.scalings == ("fixed_mv", "minmax") and demo.preprocess.scalings == ("fixed_mv",)
    assert cfg.run.label_fractions == (0.05, 0.1, 0.25, 1.0)
    # only [run] and [preprocess] differ: the same models, augmentations and step budgets as the demo
    for part in ("ecg", "head", "cxr_model", "augment", "checks", "pretrain", "cxr", "align", "finetune"):
        assert getattr(cfg, part) == getattr(demo, part), part
    assert cfg.ecg.arch == "cnn"


def test_defaults_and_round_trip():
    cfg = parse_config("")
    assert cfg == Config()
    d = cfg.to_dict()
    assert d["run"]["seeds"] == [0, 1, 2] and d["pretrain"]["optim"]["batch_size"] == 512
    assert d["finetune"]["optim"]["steps"] == 5000 and "epochs" not in d["finetune"]["optim"]
    assert d["run"]["label_fractions"] == [1.0] and d["checks"]["collapse_cos"] == 0.95


def test_stage_budgets_are_steps():
    cfg = parse_config("[finetune]\nsteps = 30\neval_every_steps = 10\nwarmup_steps = 3\npatience = 2\n"
                       "batch_size = 8\nlr = 0\naugment = true\n")
    o = cfg.finetune.optim
    assert (o.steps, o.eval_every_steps, o.warmup_steps, o.patience, o.batch_size, o.lr) == (30, 10, 3, 2, 8, 0.0)
    assert cfg.finetune.augment and cfg.pretrain == Config().pretrain  # other stages keep their defaults


@pytest.mark.parametrize("table", ["pretrain", "cxr", "align", "finetune"])
@pytest.mark.parametrize("key", ["epochs", "warmup_epochs"])
def test_epoch_budgets_are_refused_with_the_step_keys(table, key):
    with pytest.raises(ConfigError, match=rf"\[{table}\] \['{key}'\]: budgets are in optimizer steps.*"
                                          rf"{key.replace('epochs', 'steps')} = N"):
        parse_config(f"[{table}]\n{key} = 3\n", "old.toml")


def test_preprocess_checks_and_arch_tables():
    cfg = parse_config("[preprocess]\nscalings = ['fixed_mv', 'minmax']\nfull_scale_mv = 5.0\n"
                       "[checks]\ncollapse_cos = 0.9\nmin_loss_drop = 0.0\n"
                       "[run]\nlabel_fractions = [0.1, 0.5, 1.0]\n[model.ecg]\narch = 'cnn'\n")
    assert cfg.preprocess.scalings == ("fixed_mv", "minmax") and cfg.preprocess.full_scale_mv == 5.0
    assert cfg.checks.collapse_cos == 0.9 and cfg.checks.min_loss_drop == 0.0
    assert cfg.run.label_fractions == (0.1, 0.5, 1.0) and cfg.ecg.arch == "cnn"


@pytest.mark.parametrize("text, match", [
    ("[align]\nepoch = 3\n", r"unknown key\(s\) \['epoch'\] in \[align\]"),
    ("[align]\nweighting = 'hard'\n", r"\[align\] weighting='hard' unknown; choices: \['none', 'topk'"),
    ("[align]\nalpha = 'five'\n", r"\[align\] alpha must be a number"),
    ("[finetune]\nepochs = 3\n", r"\[finetune\] \['epochs'\]: budgets are in optimizer steps.*steps = N"),
    ("[finetune]\nsteps = 0\n", r"\[finetune\] steps=0 must be >= 1"),
    ("[finetune]\nsteps = 10\nwarmup_steps = 20\n", r"\[finetune\] warmup_steps=20 must be in \[0, steps\]"),
    ("[finetune]\nsteps = 10\nwarmup_steps = 0\neval_every_steps = 20\n",
     r"\[finetune\] eval_every_steps=20 must be in \[1, steps=10\]"),
    ("[finetune]\npatience = -1\n", r"\[finetune\] patience=-1 must be >= 0"),
    ("[finetune]\nlr = -1\n", r"\[finetune\] lr=-1.0 must be >= 0"),
    ("[preprocess]\nscalings = ['zscore']\n", r"\[preprocess\] scalings=\['zscore'\] must be .* of \['minmax', 'fixed_mv'\]"),
    ("[preprocess]\nscalings = ['minmax', 'minmax']\n", r"\[preprocess\] scalings=.* must be distinct"),
    ("[preprocess]\nfull_scale_mv = 0\n", r"\[preprocess\] full_scale_mv=0.0 must be in \[0.1, 50\] mV"),
    ("[run]\nlabel_fractions = [0.1, 0.5]\n", r"\[run\] label_fractions=\[0.1, 0.5\] must be .* including 1.0"),
    ("[run]\nlabel_fractions = [0.0, 1.0]\n", r"\[run\] label_fractions=\[0.0, 1.0\] must be .* in \(0, 1\]"),
    ("[run]\nmethods = ['features', 'cromotex']\ndeploy_method = 'features'\n",
     r"deploy_method='features' .* a neural network"),
    ("[model.ecg]\narch = 'lstm'\n", r"\[model.ecg\] arch='lstm' unknown; choices: \['transformer', 'cnn'\]"),
    ("[model.ecg]\narch = 'cnn'\nlayers = 0\n", r"\[model.ecg\] the cnn needs layers >= 1"),
    ("[checks]\ncollapse_cos = 1.5\n", r"\[checks\] collapse_cos=1.5 must be in \(0, 1\]"),
    ("[checks]\nprobe_max_train = 5\n", r"\[checks\] probe_max_train=5 must be >= 20"),
    ("[checks]\ncos = 0.9\n", r"unknown key\(s\) \['cos'\] in \[checks\]"),
    ("[pretrain]\nbatch_size = 2.5\n", r"\[pretrain\] batch_size must be an integer"),
    ("[run]\nmethods = ['cromotex', 'magic']\n", r"\[run\] methods=.*unknown \['magic'\]"),
    ("[run]\nmethods = ['ssl']\n", r"\[run\] deploy_method='cromotex' must be one of"),
    ("[run]\nprotocols = ['binary']\n", r"protocols must include 'multilabel'"),
    ("[run]\nseeds = [1, 1]\n", r"\[run\] seeds=\[1, 1\] must be distinct"),
    ("[run]\ndevice = 'tpu'\n", r"\[run\] device='tpu' unknown"),
    ("[run]\nprecision = 'fp16'\n", r"\[run\] precision='fp16' unknown"),
    ("[model.ecg]\nd_model = 30\nheads = 4\n", r"\[model.ecg\] d_model=30 must be a multiple of heads=4"),
    ("[model.head]\noutputs = 3\n", r"unknown key\(s\) \['outputs'\] in \[model.head\]"),
    ("[model.cxr]\narch = 'vit'\n", r"\[model.cxr\] arch='vit' unknown"),
    ("[model.cxr]\narch = 'small_cnn'\nweights = 'auto'\n", r"weights apply to arch='densenet121' only"),
    ("[augment]\nprojection = 'dower'\n", r"\[augment\] projection 'dower' unknown"),
    ("[model.gpu]\nx = 1\n", r"\[model\] holds only"),
    ("[trainer]\nx = 1\n", r"unknown table\(s\) \['trainer'\]"),
    ("[run\nx = 1\n", r"not valid TOML"),
    ("run = 3\n", r"\[run\] must be a table"),
])
def test_bad_values_name_the_key(text, match):
    with pytest.raises(ConfigError, match=match):
        parse_config(text, "bad.toml")


def test_missing_file_says_what_to_give(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config .*configs/demo.toml"):
        load_config(tmp_path / "nope.toml")


def test_stages_needed_follow_the_methods():
    assert parse_config("[run]\nmethods = ['supervised']\ndeploy_method = 'supervised'\ncxr_reference = false\n"
                        ).stages_needed() == {"pretrain": False, "cxr": False, "align": False}
    assert parse_config("[run]\nmethods = ['ssl']\ndeploy_method = 'ssl'\n").stages_needed() == {
        "pretrain": True, "cxr": True, "align": False}
    assert all(parse_config("").stages_needed().values())


def test_cnn_encoder_is_accepted_builds_and_exports(tmp_path):
    """arch = "cnn" (the demo's): [B, 12, 1000] to [B, d_model], and the exported graph matches PyTorch."""
    from export.onnx_export import export_onnx, load_checkpoint, probability_model
    from export.pipeline import cpu_runner

    cfg = parse_config("[model.ecg]\narch = 'cnn'\nstem_channels = 8\nkernel = 7\nstride = 2\nlayers = 2\n"
                       "d_model = 24\n[model.head]\nwidth = 16\ndepth = 1\n")
    assert cfg.ecg.arch == "cnn"
    torch.manual_seed(0)
    clf = EcgClassifier(cfg.ecg, replace(cfg.head, outputs=3))
    assert hasattr(clf.encoder, "cnn") and not hasattr(clf.encoder, "blocks")  # the CNN body, not the transformer
    x = torch.randn(5, 12, 1000)
    assert clf.encoder(x).shape == (5, 24)
    for module in clf.modules():  # BatchNorm statistics as after training, so eval mode is not the identity
        if isinstance(module, torch.nn.BatchNorm1d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 2.0)
    path = tmp_path / "cnn.pt"
    torch.save({"kind": "cromotex-classifier", "version": 1, "encoder_config": cfg.ecg.to_dict(),
                "head_config": replace(cfg.head, outputs=3).to_dict(), "state_dict": clf.state_dict(),
                "labels": ["a", "b", "c"], "recipe": DEFAULT_RECIPE.to_dict()}, path)
    model = probability_model(load_checkpoint(path))
    run = cpu_runner(export_onnx(model, 12, 1000))
    x = np.random.default_rng(1).uniform(-1, 1, (4, 12, 1000)).astype(np.float32)
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
        assert np.allclose(expected, torch.sigmoid(clf.eval()(torch.from_numpy(x))).numpy(), atol=1e-6)
    got = run(x)
    assert got.shape == (4, 3) and np.max(np.abs(got - expected)) < 1e-4
