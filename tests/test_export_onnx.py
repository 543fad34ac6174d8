"""ONNX export of the classifier, checkpoint loading, and the parity gate (including its refusal)."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

import export.pipeline as pipeline
from export.onnx_export import ExportError, export_onnx, load_checkpoint, model_opset, probability_model
from export.parity import ParityError, ParityResult, check_parity, compare, record_windows
from export.pipeline import ExportSettings, cpu_runner, run_export
from export_fixtures import LABELS, model_scores, random_windows, splits, tiny_checkpoint


@pytest.fixture
def ckpt(tmp_path):
    path, model = tiny_checkpoint(tmp_path / "run" / "checkpoints" / "classifier.pt")
    return path, model


def test_export_meets_the_contract_and_matches_torch_at_any_batch(ckpt):
    path, model = ckpt
    proto = export_onnx(probability_model(load_checkpoint(path)), 12, 1000)
    assert model_opset(proto) == 17
    assert [i.name for i in proto.graph.input] == ["ecg"] and [o.name for o in proto.graph.output] == ["probs"]
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [12, 1000]
    run = cpu_runner(proto)
    for n in (1, 7):
        x = random_windows(n, seed=n)
        from bedside.preprocess import scale_minmax

        got = run(scale_minmax(x))
        assert got.shape == (n, len(LABELS))
        assert np.max(np.abs(got - model_scores(model, x))) < 1e-5


def test_opset_18_goes_through_the_torch_export_exporter(ckpt):
    proto = export_onnx(probability_model(load_checkpoint(ckpt[0])), 12, 1000, opset=18)
    assert model_opset(proto) == 18
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param
    with pytest.raises(ExportError, match="opset 16 is below 17"):
        export_onnx(ckpt[1], 12, 1000, opset=16)


def test_parity_on_the_real_record_and_test_windows(ckpt, records_dir):
    path, model = ckpt
    run = cpu_runner(export_onnx(model, 12, 1000))
    x, gaps = record_windows(records_dir / "s0010_re")
    assert gaps == 0 and x.shape[1:] == (12, 1000) and len(x) >= 2
    assert np.abs(x).max() == pytest.approx(1.0)  # preprocessed: min-max scaled
    results = [compare("record", model, run, x), compare("test", model, run, splits(model)[1].inputs(50))]
    assert check_parity(results) == results
    assert all(r.max_abs_diff < 1e-5 for r in results)


def test_parity_refuses_nan_and_large_differences_with_the_numbers():
    ok = ParityResult("record s0010_re", 6, 2e-7, 1e-7)
    with pytest.raises(ParityError, match=r"test split: 10 windows, max \|diff\| 0.003"):
        check_parity([ok, ParityResult("test split", 10, 3e-3, 1e-3)])
    with pytest.raises(ParityError, match="nan"):
        check_parity([ParityResult("test split", 10, float("nan"), float("nan"))])


def test_a_broken_export_is_refused_and_nothing_is_written(ckpt, tmp_path, monkeypatch, records_dir):
    path, model = ckpt
    real_export = pipeline.export_onnx

    def broken_export(*args, **kwargs):  # an exporter that corrupts one weight of the graph
        proto = real_export(*args, **kwargs)
        init = max(proto.graph.initializer, key=lambda t: np.prod(t.dims))
        w = numpy_helper.to_array(init).copy()
        w.flat[0] += 0.5
        init.CopyFrom(numpy_helper.from_array(w, init.name))
        return proto

    monkeypatch.setattr(pipeline, "export_onnx", broken_export)
    val, test = splits(model)
    out = tmp_path / "out" / "bundle.onnx"
    settings = ExportSettings(parity_records=(records_dir / "s0010_re",), bootstrap=0)
    with pytest.raises(ParityError, match=r"more than 0.0001.*\n.*record s0010_re: \d+ windows, max \|diff\|"):
        run_export(load_checkpoint(path), val, test, None, out, settings)
    assert not out.parent.exists() or not any(out.parent.iterdir())


def test_load_checkpoint_from_run_dir_and_its_errors(ckpt, tmp_path):
    path, _ = ckpt
    run = path.parents[1]
    with pytest.raises(ExportError, match="no run.json"):
        load_checkpoint(run)
    (run / "run.json").write_text(json.dumps({"classifier": "checkpoints/classifier.pt"}))
    (run / "config.toml").write_text("[run]\n")
    loaded = load_checkpoint(run)
    assert loaded.path == path and loaded.run_dir == run and loaded.labels == LABELS
    with pytest.raises(ExportError, match="no such run directory"):
        load_checkpoint(tmp_path / "absent")
    data = torch.load(path, weights_only=True)
    for change, message in [({"kind": "cromotex-pretrain"}, "kind is 'cromotex-pretrain'"),
                            ({"labels": ["edema"]}, "1 labels but the head has 3 outputs")]:
        bad = tmp_path / "bad.pt"
        torch.save({**data, **change}, bad)
        with pytest.raises(ExportError, match=message):
            load_checkpoint(bad)
    torch.save({k: v for k, v in data.items() if k != "recipe"}, tmp_path / "norecipe.pt")
    with pytest.raises(ExportError, match=r"lacks \['recipe'\]"):
        load_checkpoint(tmp_path / "norecipe.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ExportError, match="junk.pt"):
        load_checkpoint(tmp_path / "junk.pt")


def test_weights_that_do_not_fit_the_config_are_an_error(ckpt, tmp_path):
    data = torch.load(ckpt[0], weights_only=True)
    data["encoder_config"] = {**data["encoder_config"], "d_model": 48}
    torch.save(data, tmp_path / "mismatch.pt")
    with pytest.raises(ExportError, match="do not fit the stored configuration"):
        probability_model(load_checkpoint(tmp_path / "mismatch.pt"))


def test_exported_graph_is_a_valid_onnx_model(ckpt):
    proto = export_onnx(ckpt[1], 12, 1000)
    onnx.checker.check_model(proto, full_check=True)


def test_record_windows_skip_and_count_gaps_never_fill_them(tmp_path):
    import wfdb

    from bedside.leads import CANONICAL_LEADS

    fs = 500
    t = np.arange(30 * fs) / fs
    x = np.stack([0.5 * np.sin(2 * np.pi * 1.2 * t + k) for k in range(12)], axis=1)
    x[12 * fs:13 * fs, 3] = np.nan  # a 1 s gap in aVR, inside the windows starting at 5 s and 10 s
    wfdb.wrsamp("gap", fs=fs, units=["mV"] * 12, sig_name=list(CANONICAL_LEADS), p_signal=x, fmt=["16"] * 12,
                adc_gain=[1000] * 12, baseline=[0] * 12, write_dir=str(tmp_path))
    windows, gaps = record_windows(tmp_path / "gap", hop_s=5.0)
    assert (len(windows), gaps) == (3, 2)  # windows at 0, 15, 20 s kept; 5 and 10 s refused
    assert np.isfinite(windows).all()
