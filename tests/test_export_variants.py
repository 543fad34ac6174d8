"""INT8 and FP16 variants: accepted only when every test AUROC holds within 0.005 of FP32; TensorRT skip."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from bedside.bundle import METADATA_KEY, verify_bundle
from export.onnx_export import export_onnx, load_checkpoint
from export.pipeline import ExportSettings, cpu_runner, run_export, variant_path
from export.quantize import GateResult, QuantOptions, auroc_gate, quantize_int8
from export.tensorrt import TensorRTUnavailable, tensorrt_backend
from bundles import fixture_signing_key
from export_fixtures import LABELS, fragile_splits, robust_splits, tiny_checkpoint

CPU = ("CPUExecutionProvider",)
KEY = fixture_signing_key()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "classifier.pt")


def _ops(path) -> set[str]:
    return {n.op_type for n in onnx.load(path).graph.node}


def test_int8_is_accepted_when_every_auroc_holds(tiny, tmp_path):
    path, model = tiny
    val, test = robust_splits(model)
    out = tmp_path / "model.onnx"
    result = run_export(load_checkpoint(path), val, test, None, out, ExportSettings(int8=True, bootstrap=100, signing_key=KEY))
    int8 = result.variants[1]
    assert int8.name == "int8" and int8.accepted and result.refused == []
    assert max(int8.gate.drops.values()) <= 0.005
    assert {"QuantizeLinear", "DequantizeLinear"} <= _ops(variant_path(out, "int8"))  # QDQ, the default
    bundle = verify_bundle(variant_path(out, "int8"), CPU)
    assert bundle.metadata["variant"] == "int8"
    # its own calibration and thresholds, fitted on its own validation outputs
    assert bundle.thresholds == pytest.approx(int8.thresholds)
    report = json.loads(out.with_name("model.report.json").read_text())
    assert [v["variant"] for v in report["variants"]] == ["fp32", "int8"]
    assert report["variants"][1]["gate"]["accepted"] is True


def test_int8_is_refused_with_the_numbers_and_not_written(tiny, tmp_path):
    path, model = tiny
    val, test = fragile_splits(model)
    out = tmp_path / "model.onnx"
    result = run_export(load_checkpoint(path), val, test, None, out, ExportSettings(int8=True, bootstrap=100, signing_key=KEY))
    gate = result.variants[1].gate
    assert result.refused == ["int8"] and not gate.accepted
    assert max(gate.drops.values()) > 0.005
    assert out.is_file() and not variant_path(out, "int8").exists()
    table = gate.table()
    assert "REFUSED" in table and all(f"{label}: FP32 {gate.reference[label]:.4f}" in table for label in LABELS)
    md = out.with_name("model.report.md").read_text()
    assert "INT8: REFUSED, not written" in md


def test_fp16_variant_keeps_float32_io_and_passes_its_golden(tiny, tmp_path):
    path, model = tiny
    val, test = robust_splits(model, n=600, margin_sd=0.5)
    out = tmp_path / "model.onnx"
    result = run_export(load_checkpoint(path), val, test, None, out, ExportSettings(int8=False, fp16=True, bootstrap=100,
                                                                                  signing_key=KEY))
    assert result.refused == [] and result.variants[1].gate.accepted
    fp16 = onnx.load(variant_path(out, "fp16"))
    assert {t.data_type for t in fp16.graph.initializer} >= {onnx.TensorProto.FLOAT16}
    assert fp16.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert fp16.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert variant_path(out, "fp16").stat().st_size < out.stat().st_size
    meta = {p.key: p.value for p in fp16.metadata_props}
    golden = json.loads(meta[METADATA_KEY])["golden"]
    assert golden["atol"] == 1e-3 and golden["atol_by_provider"]["TensorrtExecutionProvider"] >= 1e-2
    assert verify_bundle(variant_path(out, "fp16"), CPU).metadata["variant"] == "fp16"


def test_gate_accepts_at_the_limit_and_refuses_above_or_unmeasurable():
    ref = {"a": 0.80, "b": 0.70}
    assert auroc_gate("INT8", ref, {"a": 0.795, "b": 0.71}).accepted
    refused = auroc_gate("INT8", ref, {"a": 0.80, "b": 0.6949})
    assert not refused.accepted and refused.drops["b"] == pytest.approx(0.0051)
    assert not GateResult("INT8", {"a": float("nan")}, {"a": float("nan")}, 0.005).accepted
    with pytest.raises(ValueError, match="labels differ"):
        auroc_gate("INT8", ref, {"a": 0.8})


@pytest.mark.parametrize("options,op", [(QuantOptions(quant_format="QDQ"), "DequantizeLinear"),
                                        (QuantOptions(quant_format="QOperator", per_channel=True, reduce_range=True),
                                         "QLinearMatMul")])
def test_quantization_options_shape_the_graph(tiny, options, op):
    _, model = tiny
    val, _ = robust_splits(model, n=300, margin_sd=0.0)
    fp32 = export_onnx(model, 12, 1000)
    q = quantize_int8(fp32, val.inputs(32), options)
    assert op in {n.op_type for n in q.graph.node}
    x = val.inputs(16)
    assert np.max(np.abs(cpu_runner(q)(x) - cpu_runner(fp32)(x))) < 0.1  # quantized, not broken


def _matmul_inputs_quantized(q: onnx.ModelProto) -> list[bool]:
    """For each MatMul of a QDQ graph: are both of its inputs dequantized (i.e. the product runs in INT8)?"""
    made_by = {o: n.op_type for n in q.graph.node for o in n.output}
    return [all(made_by.get(i) == "DequantizeLinear" for i in n.input) for n in q.graph.node if n.op_type == "MatMul"]


def test_default_int8_keeps_attention_float_and_quantizes_the_weight_products(tiny):
    from export.quantize import activation_matmuls

    _, model = tiny
    val, _ = robust_splits(model, n=300, margin_sd=0.0)
    fp32 = export_onnx(model, 12, 1000)
    attention = activation_matmuls(fp32)
    assert attention  # the tiny transformer has attention products
    default = quantize_int8(fp32, val.inputs(32))
    assert {n.name for n in default.graph.node if n.op_type == "MatMul"} >= set(attention)
    quantized = _matmul_inputs_quantized(default)
    assert any(quantized) and not all(quantized)  # weight products INT8, attention products float
    assert all(_matmul_inputs_quantized(quantize_int8(fp32, val.inputs(32), QuantOptions(attention=True))))
    # float outputs: nothing quantizes a MatMul's output again; requantized: some QuantizeLinear follows one
    consumers = {i: n.op_type for n in default.graph.node for i in n.input}
    assert not any(consumers.get(o) == "QuantizeLinear" for n in default.graph.node if n.op_type == "MatMul"
                   for o in n.output)
    s8 = quantize_int8(fp32, val.inputs(32), QuantOptions(activations="int8"))
    zero_points = {t.name: t.data_type for t in s8.graph.initializer if t.name.endswith("zero_point")}
    assert onnx.TensorProto.INT8 in zero_points.values() and onnx.TensorProto.UINT8 not in zero_points.values()
    with pytest.raises(ValueError, match="choices"):
        quantize_int8(fp32, val.inputs(4), QuantOptions(activations="int4"))


def test_tensorrt_absent_is_said_and_skipped(tiny, tmp_path):
    try:
        backend = tensorrt_backend()
    except TensorRTUnavailable as exc:
        assert "TensorRT is not installed here" in str(exc) and "skipped" in str(exc)
    else:
        pytest.skip(f"TensorRT is installed here ({backend}); the skip path is not reachable")
    path, model = tiny
    val, test = robust_splits(model, n=600, margin_sd=0.5)
    out = tmp_path / "model.onnx"
    result = run_export(load_checkpoint(path), val, test, None, out, ExportSettings(int8=False, tensorrt=True, bootstrap=100,
                                                                                  signing_key=KEY))
    assert result.tensorrt["built"] is False and "not installed" in result.tensorrt["reason"]
    assert result.refused == [] and out.is_file()
    assert not list(tmp_path.glob("*.engine"))
