"""``trainer export`` end to end: run directory + cohort cache in, verified bundles and report out."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner
from onnx import numpy_helper

import export.pipeline as pipeline
from bedside.bundle import verify_bundle
from bedside.leads import CANONICAL_LEADS
from bedside.verify import verify_command
from export.cli import EXIT_VARIANT_REFUSED, export_command
from export.tensorrt import TensorRTUnavailable, tensorrt_backend
from export.thresholds import sens_spec
from export_fixtures import LABELS, fragile_splits, robust_splits, tiny_checkpoint, write_cache

CPU = ("CPUExecutionProvider",)


@pytest.fixture(scope="module")
def model_and_splits(tmp_path_factory):
    root = tmp_path_factory.mktemp("model")
    _, model = tiny_checkpoint(root / "scratch.pt")
    return model, robust_splits(model)


def make_run(tmp_path, val, test, manifest_sha256=None):
    """A run directory (run.json, config.toml, checkpoint) trained on a cache of ``val``/``test``."""
    cache = tmp_path / "cache"
    sha = write_cache(cache, val, test)
    run = tmp_path / "run"
    tiny_checkpoint(run / "checkpoints" / "classifier.pt", manifest_sha256=manifest_sha256 or sha, cache_dir=cache)
    (run / "run.json").write_text(json.dumps({"classifier": "checkpoints/classifier.pt"}))
    (run / "config.toml").write_text("[run]\nname = 'test'\n")
    return run, cache, sha


def _unwrapped(text: str) -> str:
    """The output without whitespace (the console wraps long paths at its width)."""
    return "".join(text.split())


def test_export_writes_verified_bundles_with_the_contract_metadata(model_and_splits, tmp_path, records_dir):
    model, (val, test) = model_and_splits
    run, cache, sha = make_run(tmp_path, val, test)
    out = tmp_path / "dist" / "model.onnx"
    try:
        tensorrt_backend()
        trt = []  # TensorRT present: building an engine is not this test's business
    except TensorRTUnavailable:
        trt = ["--tensorrt"]  # absent: the export must say so and go on
    res = CliRunner().invoke(export_command, [str(run), "--out", str(out), "--int8", *trt,
                                              "--parity-record", str(records_dir / "s0010_re")])
    assert res.exit_code == 0, res.output
    assert f"CPUbundle:{tmp_path / 'dist' / 'model.int8.onnx'}" in _unwrapped(res.output)  # INT8 accepted
    assert not trt or ("TensorRT is not installed here" in res.output and "skipped" in res.output)
    meta = verify_bundle(out, CPU).metadata
    assert meta["labels"] == LABELS and meta["leads"] == list(CANONICAL_LEADS)
    assert (meta["fs_hz"], meta["window_s"], meta["hop_s"]) == (100.0, 10.0, 5.0)
    assert meta["cohort_manifest_sha256"] == sha and meta["config_sha256"] == "c" * 64
    assert meta["calibration"]["method"] == "platt" and meta["variant"] == "fp32"
    assert meta["operating_point"] == {"metric": "specificity", "target": 0.9, "split": "validation"}
    assert meta["golden"]["source"] == "record s0010_re" and meta["golden"]["input_shape"] == [2, 12, 1000]
    assert meta["exporter_version"].startswith("cromotex-export") and meta["opset"] == 17
    assert set(meta["test_metrics"]) == set(LABELS)
    assert all(m["auroc"] == 1.0 for m in meta["test_metrics"].values())
    report = json.loads((tmp_path / "dist" / "model.report.json").read_text())
    assert [r["source"] for r in report["parity"]["results"]] == ["record s0010_re", "test split"]
    assert all(r["max_abs_diff"] <= 1e-4 for r in report["parity"]["results"])
    for v in report["variants"]:  # thresholds meet the operating point on validation
        assert all(r["specificity"] >= 0.9 for r in v["validation_rates"].values())
    # the bedside's own verify command passes every check on both bundles
    for bundle in (out, tmp_path / "dist" / "model.int8.onnx"):
        res = CliRunner().invoke(verify_command, [str(bundle), "--provider", "cpu"])
        assert res.exit_code == 0, res.output
        assert [line.split()[0] for line in res.output.splitlines()[:6]] == \
            ["file", "checksum", "signature", "runtime", "schema", "golden"]
        assert "verified" in res.output


def test_sensitivity_and_specificity_in_the_metadata_are_those_of_the_test_split(model_and_splits, tmp_path):
    model, (val, test) = model_and_splits
    run, cache, _ = make_run(tmp_path, val, test)
    out = tmp_path / "model.onnx"
    res = CliRunner().invoke(export_command, [str(run), "--out", str(out), "--calibration", "isotonic",
                                              "--operating-point", "sensitivity=0.8"])
    assert res.exit_code == 0, res.output
    bundle = verify_bundle(out, CPU)
    p = bundle.predict(test.inputs(len(test)))
    for k, label in enumerate(LABELS):
        m = bundle.metadata["test_metrics"][label]
        assert (m["sensitivity"], m["specificity"]) == pytest.approx(
            sens_spec(test.labels[:, k], p[:, k], bundle.thresholds[label]))


def test_parity_failure_refuses_and_writes_nothing(model_and_splits, tmp_path, monkeypatch):
    model, (val, test) = model_and_splits
    run, _, _ = make_run(tmp_path, val, test)
    real_export = pipeline.export_onnx

    def broken_export(*args, **kwargs):  # perturb one weight after export: the graph no longer matches
        proto = real_export(*args, **kwargs)
        init = max(proto.graph.initializer, key=lambda t: len(t.raw_data))
        w = numpy_helper.to_array(init) * 1.5
        init.CopyFrom(numpy_helper.from_array(w, init.name))
        return proto

    monkeypatch.setattr(pipeline, "export_onnx", broken_export)
    out = tmp_path / "dist" / "model.onnx"
    res = CliRunner().invoke(export_command, [str(run), "--out", str(out)])
    assert res.exit_code == 1
    assert "parity check failed" in res.output and "max |diff|" in res.output
    assert not (tmp_path / "dist").exists() or not any((tmp_path / "dist").iterdir())


def test_refused_int8_exits_3_and_keeps_the_fp32_bundle(tmp_path):
    root = tmp_path / "scratch"
    _, model = tiny_checkpoint(root / "c.pt")
    run, _, _ = make_run(tmp_path, *fragile_splits(model))
    out = tmp_path / "model.onnx"
    res = CliRunner().invoke(export_command, [str(run), "--out", str(out), "--int8"])
    assert res.exit_code == EXIT_VARIANT_REFUSED, res.output
    assert "REFUSED" in res.output and "refused: int8" in res.output
    assert out.is_file() and not (tmp_path / "model.int8.onnx").exists()


def test_default_int8_refused_exits_0_with_fp32_as_the_cpu_bundle(tmp_path):
    root = tmp_path / "scratch"
    _, model = tiny_checkpoint(root / "c.pt")
    run, _, _ = make_run(tmp_path, *fragile_splits(model))
    out = tmp_path / "model.onnx"
    res = CliRunner().invoke(export_command, [str(run), "--out", str(out)])  # INT8 built by default, not asked
    assert res.exit_code == 0, res.output
    assert "refused: int8" in res.output and f"CPUbundle:{out}(FP32" in _unwrapped(res.output)
    assert out.is_file() and not (tmp_path / "model.int8.onnx").exists()
    none = CliRunner().invoke(export_command, [str(run), "--out", str(tmp_path / "b.onnx"), "--no-int8"])
    assert none.exit_code == 0 and "INT8 variant" in none.output and "building the INT8" not in none.output
    assert not (tmp_path / "b.int8.onnx").exists()


def test_a_cache_of_another_cohort_is_refused(model_and_splits, tmp_path):
    _, (val, test) = model_and_splits
    run, _, sha = make_run(tmp_path, val, test, manifest_sha256="0" * 64)
    res = CliRunner().invoke(export_command, [str(run), "--out", str(tmp_path / "m.onnx")])
    assert res.exit_code == 1 and sha in res.output and "--cache" in res.output
    assert not (tmp_path / "m.onnx").exists()


@pytest.mark.parametrize("args,message", [(["--operating-point", "ppv=0.9"], "specificity=0.90"),
                                          (["--cache", "/nonexistent/cache"], "no such cache folder")])
def test_bad_options_are_named(model_and_splits, tmp_path, args, message):
    _, (val, test) = model_and_splits
    run, _, _ = make_run(tmp_path, val, test)
    res = CliRunner().invoke(export_command, [str(run), "--out", str(tmp_path / "m.onnx"), *args])
    assert res.exit_code != 0 and message in res.output


def test_checkpoint_file_without_cache_dir_asks_for_cache(tmp_path):
    path, _ = tiny_checkpoint(tmp_path / "c.pt")
    assert torch.load(path, weights_only=True)["cache_dir"] is None
    res = CliRunner().invoke(export_command, [str(path), "--out", str(tmp_path / "m.onnx")])
    assert res.exit_code == 1 and "--cache" in res.output
