"""Reduced-precision variants (INT8 static quantization, FP16) and the AUROC gate each must pass.

INT8: onnxruntime static quantization of the convolutions and of the transformer's weight matrix
products (the MLP head stays float), activations calibrated on validation windows (MinMax by
default), weights int8 and activations uint8 (U8S8). The default, chosen by measurement on an
AVX-512 VNNI CPU (scripts/bench_export.py, BENCHMARKS.md): QDQ format; the attention products
(activation x activation: scores and context) stay float, since quantizing both of their inputs
and the softmax between them cost more in Quantize/Dequantize than it saved; and the outputs of
the quantized Conv/MatMul stay float (``float_outputs``), so onnxruntime fuses each into one
MatMulIntegerToFloat with its bias and no requantization follows it. Post-training INT8 can
silently wreck a 12-lead model, so a variant is accepted only when no pathology's test AUROC falls
by more than ``max_drop`` (0.005) against FP32 (:func:`auroc_gate`).

FP16: weights and compute in float16 with float32 input/output (so the bundle's I/O contract is
unchanged), through onnxruntime's copy of onnxconverter-common's converter.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnx

from export.onnx_export import INPUT_NAME

#: Largest allowed fall of any pathology's test AUROC for a reduced-precision variant.
MAX_AUROC_DROP = 0.005


@dataclass(frozen=True)
class QuantOptions:
    """Settings of onnxruntime's ``quantize_static`` (see its docs for each)."""

    quant_format: str = "QDQ"  # QDQ (Quantize/DequantizeLinear pairs, fused by onnxruntime) or QOperator (QLinear*)
    per_channel: bool = False
    reduce_range: bool = False  # 7-bit weights: avoids u8s8 saturation on AVX2 without VNNI, costs precision
    activations: str = "uint8"  # uint8 (U8S8, x86's fast path) or int8 (S8S8, ARM's dot-product path)
    attention: bool = False  # also quantize the activation x activation MatMuls (attention scores, context)
    float_outputs: bool = True  # QDQ: quantized Conv/MatMul give float outputs (no requantization after them)
    # Gemm (the MLP head, a negligible share of the compute) stays float: quantizing the last layer
    # rounds the logits to 256 levels, and the ties cost 0.02-0.1 AUROC on the demo model
    op_types: tuple[str, ...] = ("Conv", "MatMul")
    calibrate_method: str = "MinMax"  # MinMax, Entropy or Percentile
    calibration_windows: int = 256

    def to_dict(self) -> dict:
        d = asdict(self)
        d["op_types"] = list(self.op_types)
        return d


ACTIVATION_TYPES = ("uint8", "int8")


class _Windows:
    """onnxruntime CalibrationDataReader over preprocessed windows, one batch at a time."""

    def __init__(self, x: np.ndarray, batch: int = 16) -> None:
        self._it: Iterator[dict[str, np.ndarray]] = (
            {INPUT_NAME: np.ascontiguousarray(x[i:i + batch], dtype=np.float32)} for i in range(0, len(x), batch))

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)


def quantize_int8(model: onnx.ModelProto, calibration: np.ndarray,
                  options: QuantOptions = QuantOptions()) -> onnx.ModelProto:
    """INT8 model from an FP32 one; ``calibration`` are preprocessed validation windows [N, 12, 1000]."""
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if len(calibration) == 0:
        raise ValueError("INT8 calibration needs at least one validation window")
    if options.activations not in ACTIVATION_TYPES:
        raise ValueError(f"INT8 activations {options.activations!r} unknown; choices: {list(ACTIVATION_TYPES)}")

    class Reader(_Windows, CalibrationDataReader):
        pass

    with tempfile.TemporaryDirectory(prefix="cromotex-int8-") as tmp:
        src, pre, dst = (Path(tmp) / n for n in ("fp32.onnx", "pre.onnx", "int8.onnx"))
        onnx.save(model, src)
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=False)
        extra = {"OpTypesToExcludeOutputQuantization": list(options.op_types)} if options.float_outputs else {}
        quantize_static(str(pre), str(dst), Reader(calibration[: options.calibration_windows]),
                        quant_format=QuantFormat[options.quant_format], per_channel=options.per_channel,
                        reduce_range=options.reduce_range, op_types_to_quantize=list(options.op_types),
                        nodes_to_exclude=[] if options.attention else activation_matmuls(onnx.load(pre)),
                        activation_type=QuantType.QUInt8 if options.activations == "uint8" else QuantType.QInt8,
                        weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod[options.calibrate_method],
                        extra_options=extra)
        return onnx.load(dst)


def activation_matmuls(model: onnx.ModelProto) -> list[str]:
    """Names of the MatMul nodes with no weight input (both operands computed: attention scores, context)."""
    weights = {t.name for t in model.graph.initializer}
    return [n.name for n in model.graph.node if n.op_type == "MatMul" and not any(i in weights for i in n.input)]


def convert_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    """FP16 weights and compute, float32 ``ecg`` in and ``probs`` out (Cast nodes at the edges)."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    return convert_float_to_float16(onnx.ModelProto.FromString(model.SerializeToString()),
                                    keep_io_types=True, disable_shape_infer=False)


@dataclass(frozen=True)
class GateResult:
    """AUROC per label of the reference and the candidate, and whether the candidate is accepted."""

    variant: str
    reference: dict[str, float]
    candidate: dict[str, float]
    max_drop: float

    @property
    def drops(self) -> dict[str, float]:
        return {k: self.reference[k] - self.candidate[k] for k in self.reference}

    @property
    def accepted(self) -> bool:
        # a NaN AUROC (no positives) or a NaN drop is never accepted
        return all(d <= self.max_drop + 1e-12 for d in self.drops.values())  # 1e-12: float rounding of the difference

    def table(self) -> str:
        rows = [f"  {k}: FP32 {self.reference[k]:.4f}, {self.variant} {self.candidate[k]:.4f}, "
                f"drop {d:+.4f}" for k, d in self.drops.items()]
        verdict = "accepted" if self.accepted else f"REFUSED (a drop exceeds {self.max_drop:g})"
        return f"{self.variant} test AUROC vs FP32, {verdict}:\n" + "\n".join(rows)

    def to_dict(self) -> dict:
        return {"variant": self.variant, "reference": self.reference, "candidate": self.candidate,
                "drops": self.drops, "max_drop": self.max_drop, "accepted": self.accepted}


def auroc_gate(variant: str, reference: dict[str, float], candidate: dict[str, float],
               max_drop: float = MAX_AUROC_DROP) -> GateResult:
    """Compare per-label test AUROC of a variant with FP32; see :class:`GateResult`."""
    if set(reference) != set(candidate):
        raise ValueError(f"labels differ: {sorted(reference)} vs {sorted(candidate)}")
    return GateResult(variant, dict(reference), dict(candidate), max_drop)
