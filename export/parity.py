"""Parity: the exported graph under onnxruntime must compute what the PyTorch model computes.

Compared on preprocessed windows of real WFDB records (through the bedside's own
``open_record`` + ``preprocess_window``) and on test-split windows. The export is refused when the
largest probability difference exceeds the tolerance (1e-4 by default).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from bedside.errors import GapError
from bedside.preprocess import DEFAULT_RECIPE, Recipe, input_samples_for_window, preprocess_window, window_starts
from bedside.records import open_record

log = logging.getLogger(__name__)

#: Largest allowed |p_onnxruntime - p_torch| of any probability.
PARITY_ATOL = 1e-4


class ParityError(Exception):
    """The exported model does not reproduce the PyTorch model; nothing may be written."""


@dataclass(frozen=True)
class ParityResult:
    """Differences between onnxruntime and PyTorch probabilities on one set of windows."""

    source: str
    windows: int
    max_abs_diff: float
    mean_abs_diff: float

    def to_dict(self) -> dict:
        return asdict(self)


def record_windows(path: str | Path, hop_s: float = 5.0, max_windows: int = 64,
                   recipe: Recipe = DEFAULT_RECIPE) -> tuple[np.ndarray, int]:
    """Preprocessed windows [N, 12, 1000] of a WFDB record every ``hop_s``, and how many had gaps.

    Windows holding a gap are skipped (never zero-filled) and counted in the second value.
    """
    rec = open_record(path, recipe)
    out: list[np.ndarray] = []
    gaps = 0
    need = input_samples_for_window(rec.fs_hz, recipe)
    for start in window_starts(rec.n_samples, rec.fs_hz, hop_s, recipe)[:max_windows]:
        raw = rec.read(start, start + need)
        try:
            out.append(preprocess_window(raw, rec.fs_hz, recipe))
        except GapError:
            gaps += 1
    if not out:
        raise ParityError(f"{path}: no gap-free {recipe.window_s:g} s window to compare on ({gaps} had gaps)")
    return np.stack(out), gaps


def torch_probs(model: torch.nn.Module, x: np.ndarray, batch: int = 64) -> np.ndarray:
    """PyTorch probabilities [N, K] of windows [N, 12, 1000], in batches, eval mode."""
    model = model.eval()
    outs = []
    with torch.inference_mode():
        for i in range(0, len(x), batch):
            outs.append(model(torch.from_numpy(np.ascontiguousarray(x[i:i + batch], dtype=np.float32))).numpy())
    return np.concatenate(outs).astype(np.float32)


def compare(source: str, model: torch.nn.Module, run_onnx: Callable[[np.ndarray], np.ndarray],
            x: np.ndarray, batch: int = 64) -> ParityResult:
    """Run both on windows ``x`` and measure the probability differences."""
    ref = torch_probs(model, x, batch)
    got = np.concatenate([run_onnx(x[i:i + batch]) for i in range(0, len(x), batch)])
    if got.shape != ref.shape:
        return ParityResult(source, len(x), float("inf"), float("inf"))
    diff = np.abs(got.astype(np.float64) - ref)
    # NaN anywhere is a failure, never a pass: max() of NaN compares false against the tolerance
    return ParityResult(source, len(x), float(np.max(diff)), float(np.mean(diff)))


def check_parity(results: Iterable[ParityResult], atol: float = PARITY_ATOL) -> list[ParityResult]:
    """Raise ParityError (with every number) unless each max difference is within ``atol``."""
    results = list(results)
    if not results:
        raise ParityError("no windows to check parity on")
    bad = [r for r in results if not r.max_abs_diff <= atol]
    lines = [f"  {r.source}: {r.windows} windows, max |diff| {r.max_abs_diff:.3g}, mean {r.mean_abs_diff:.3g}"
             for r in results]
    if bad:
        raise ParityError(f"onnxruntime differs from PyTorch by more than {atol:g} "
                          f"(on {', '.join(r.source for r in bad)}):\n" + "\n".join(lines)
                          + "\nthe exported graph does not compute the trained model; nothing was written")
    for line in lines:
        log.info("parity%s", line)
    return results
