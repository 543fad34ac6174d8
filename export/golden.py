"""The golden input of a bundle, its expected output, and how far each runtime may stray from it.

The expected output is what onnxruntime's CPU provider computes for the bundle's own graph, so on a
CPU the check is close to exact. GPU providers compute differently: the CUDA provider uses TF32
matrix products by default, and the bedside asks the TensorRT provider for FP16 kernels. Their
tolerance comes from a measurement: the largest probability change that FP16 arithmetic causes
on the golden and parity windows (the FP16 variant run on the CPU), times a safety factor, and
never below a floor. docs/bundle.md explains each number.
"""

from __future__ import annotations

import numpy as np

from bedside.bundle import encode_array

CPU, CUDA, TRT = "CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider"

#: Per variant: (CPU tolerance, floor of the GPU tolerance). Probabilities, absolute.
#: fp32: 1e-4, the parity tolerance; CPUs of other vendors/ISAs differ ~1e-6 on the same graph.
#: fp16: CPU fp16 kernels vary more across ISAs (F16C/NEON), 1e-3.
#: int8: integer kernels differ across ISAs (u8s8 saturation on AVX2 without VNNI, none on ARM
#: or VNNI), a requantization step can move a probability by ~1e-3: 5e-3.
VARIANT_ATOL: dict[str, tuple[float, float]] = {"fp32": (1e-4, 5e-3), "fp16": (1e-3, 1e-2), "int8": (5e-3, 2e-2)}
#: GPU tolerance = max(floor, GPU_MARGIN x measured FP16 deviation).
GPU_MARGIN = 4.0
GOLDEN_WINDOWS = 2


def golden_tolerance(variant: str, fp16_deviation: float) -> tuple[float, dict[str, float]]:
    """(CPU atol, atol per GPU provider) for a variant, given the measured FP16 deviation."""
    cpu, floor = VARIANT_ATOL[variant]
    gpu = max(floor, GPU_MARGIN * float(fp16_deviation))
    return cpu, {CUDA: round(gpu, 6), TRT: round(gpu, 6)}


def golden_entry(x: np.ndarray, expected: np.ndarray, variant: str, fp16_deviation: float,
                 source: str) -> dict:
    """The bundle's ``golden`` metadata: input, expected output, tolerances, provenance."""
    atol, by_provider = golden_tolerance(variant, fp16_deviation)
    return {"input_b64": encode_array(x), "input_shape": list(x.shape),
            "expected": np.asarray(expected, dtype=np.float32).tolist(), "atol": atol,
            "atol_by_provider": by_provider, "source": source, "expected_on": CPU,
            "fp16_deviation": float(fp16_deviation)}
