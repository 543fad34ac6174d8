"""The ECG preprocessing recipe, shared by training and the bedside (one implementation).

The default recipe is the CroMoTEX paper's: polyphase resampling to 100 Hz, baseline wander removed
by subtracting two cascaded median filters (0.2 s then 0.6 s), each lead min-max scaled to [-1, 1],
10 s windows of 1000 samples. Steps are small functions that take the sampling rate explicitly.

The last step, the scaling, is a recipe choice (:data:`SCALINGS`):

- ``"minmax"`` (the paper's): each lead to [-1, 1] on its own. Absolute and between-lead voltage is
  lost, so low QRS voltage (a clinical sign of effusion and anasarca) and LVH voltage cannot be seen;
- ``"fixed_mv"``: every lead divided by the same full scale (``full_scale_mv``, 4 mV by default)
  and clipped to [-1, 1]: amplitude is kept, only beats taller than the full scale are clipped.

The pipeline is split at the point where the signal is still in millivolts
(:func:`condition`), because training augments in mV before scaling (3KG); the bedside runs
:func:`preprocess_window`, which is exactly ``scale(condition(...), recipe)``. :func:`scale` is the
one definition of the scaling, used by training, export and the bedside.

:func:`condition` stays the one definition of the recipe (training conditions each window with it);
``bedside.stream_condition.StreamConditioner`` conditions a live stream once per sample with the same
functions and parameters and cuts windows from it that are bit-identical to :func:`condition`'s.

Gaps: a window holding NaN samples raises :class:`GapError` naming each NaN run. It is never
zero-filled: a flat line reads as asystole. Training skips and counts such records; the bedside
raises a technical condition instead of scoring the window.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from fractions import Fraction
from functools import lru_cache
from typing import Any

import numpy as np
from scipy.ndimage import median_filter
from scipy.signal import firwin, resample_poly

from bedside.errors import GapError
from bedside.leads import CANONICAL_LEADS

RECIPE_NAME = "cromotex-v1"
#: Input scalings a recipe may name (see the module docstring).
SCALINGS: tuple[str, ...] = ("minmax", "fixed_mv")


@dataclass(frozen=True)
class Recipe:
    """Parameters of the preprocessing; stored in every cache manifest and model bundle."""

    name: str = RECIPE_NAME
    leads: tuple[str, ...] = CANONICAL_LEADS
    fs_hz: float = 100.0
    window_s: float = 10.0
    baseline_filters_s: tuple[float, ...] = (0.2, 0.6)
    median_mode: str = "nearest"  # edge handling of the median filters (scipy.ndimage)
    resampler: str = "polyphase"  # scipy.signal.resample_poly, Kaiser window (scipy default)
    scaling: str = "minmax"  # SCALINGS: "minmax" per lead to [-1, 1] (a flat lead maps to 0), or "fixed_mv"
    full_scale_mv: float = 4.0  # "fixed_mv" only: this many mV map to 1.0; larger values are clipped
    nan_policy: str = "reject"  # a window with any NaN is refused, never zero-filled
    units: str = "mV"

    @property
    def window_samples(self) -> int:
        """Samples per model window at ``fs_hz`` (1000 for the default recipe)."""
        return int(round(self.window_s * self.fs_hz))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["leads"] = list(self.leads)
        d["baseline_filters_s"] = list(self.baseline_filters_s)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Recipe":
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown preprocessing recipe fields {sorted(unknown)}; known: {sorted(known)}")
        d = dict(d)
        if "leads" in d:
            d["leads"] = tuple(d["leads"])
        if "baseline_filters_s" in d:
            d["baseline_filters_s"] = tuple(float(v) for v in d["baseline_filters_s"])
        recipe = cls(**d)
        recipe.validate()
        return recipe

    def validate(self) -> None:
        """Raise ValueError naming the field when a value is one this code cannot apply."""
        if self.name != RECIPE_NAME:
            raise ValueError(f"preprocessing recipe {self.name!r} is not implemented here (only {RECIPE_NAME!r})")
        if self.scaling not in SCALINGS:
            raise ValueError(f"recipe scaling {self.scaling!r} unknown; choices: {list(SCALINGS)}")
        if not (math.isfinite(self.full_scale_mv) and 0.1 <= self.full_scale_mv <= 50.0):
            raise ValueError(f"recipe full_scale_mv={self.full_scale_mv} must be a number of mV in [0.1, 50]")
        if self.nan_policy != "reject":
            raise ValueError(f"recipe nan_policy {self.nan_policy!r} unknown; choices: ['reject']")
        if self.resampler != "polyphase":
            raise ValueError(f"recipe resampler {self.resampler!r} unknown; choices: ['polyphase']")
        if self.fs_hz <= 0 or self.window_s <= 0:
            raise ValueError(f"recipe fs_hz={self.fs_hz} and window_s={self.window_s} must be positive")


DEFAULT_RECIPE = Recipe()


def find_gaps(x: np.ndarray) -> list[tuple[int, int, int]]:
    """NaN runs of a [leads, n] array as (lead index, first sample, length in samples)."""
    gaps: list[tuple[int, int, int]] = []
    nan = np.isnan(x)
    if not nan.any():
        return gaps
    for lead in np.flatnonzero(nan.any(axis=1)):
        edges = np.diff(np.concatenate(([0], nan[lead].astype(np.int8), [0])))
        starts = np.flatnonzero(edges == 1)
        stops = np.flatnonzero(edges == -1)
        gaps.extend((int(lead), int(a), int(b - a)) for a, b in zip(starts, stops))
    return gaps


def check_no_gaps(x: np.ndarray, fs_hz: float) -> None:
    """Raise GapError describing each NaN run (times in s) when ``x`` holds any NaN."""
    gaps = find_gaps(x)
    if gaps:
        shown = "; ".join(f"lead {lead} at {start / fs_hz:.3f} s for {n / fs_hz:.3f} s" for lead, start, n in gaps[:5])
        more = f" (+{len(gaps) - 5} more)" if len(gaps) > 5 else ""
        raise GapError(f"{len(gaps)} gap(s) in the window: {shown}{more}", gaps)


@lru_cache(maxsize=64)
def resample_ratio(fs_in_hz: float, fs_out_hz: float) -> tuple[int, int]:
    """(up, down) of the polyphase resampler, exact for rational rates, else within 1e-6."""
    ratio = Fraction(fs_out_hz / fs_in_hz).limit_denominator(100000)
    return ratio.numerator, ratio.denominator


def input_samples_for_window(fs_in_hz: float, recipe: Recipe = DEFAULT_RECIPE) -> int:
    """Samples at ``fs_in_hz`` needed to produce one model window of ``recipe.window_samples``."""
    up, down = resample_ratio(fs_in_hz, recipe.fs_hz)
    return int(math.ceil(recipe.window_samples * down / up))


#: The anti-aliasing window of the polyphase resampler (scipy.signal.resample_poly's default).
RESAMPLE_WINDOW: tuple[str, float] = ("kaiser", 5.0)


def resample_half_len(up: int, down: int) -> int:
    """Half length (taps) of the resampler's FIR: scipy's ``10 * max(up, down)``, at the upsampled rate.

    An output sample depends on the inputs within ``half_len / up`` input samples of it.
    """
    return 10 * max(up, down)


@lru_cache(maxsize=32)
def resample_filter(up: int, down: int, dtype: str = "float32") -> np.ndarray:
    """The resampler's FIR, designed once per (up, down, dtype): exactly the taps resample_poly designs
    itself (firwin of ``2 * half_len + 1`` taps, cutoff ``1 / max(up, down)`` of Nyquist, Kaiser 5.0), before
    its gain of ``up``. Read-only: resample_poly copies it before scaling."""
    half_len = resample_half_len(up, down)
    h = firwin(2 * half_len + 1, 1.0 / max(up, down), window=RESAMPLE_WINDOW).astype(dtype)
    h.flags.writeable = False
    return h


def resample(x: np.ndarray, fs_in_hz: float, fs_out_hz: float) -> np.ndarray:
    """Polyphase resampling along the last axis (anti-aliasing Kaiser FIR, scipy's default design, cached).

    Output sample ``j`` sits at input sample ``j * down / up``; the signal is zero beyond both ends
    (resample_poly's ``padtype="constant"``), so the first and last ``half_len / down`` outputs taper.
    """
    up, down = resample_ratio(fs_in_hz, fs_out_hz)
    if up == down:
        return np.asarray(x, dtype=np.float32)
    x = np.asarray(x)
    dtype = x.dtype if np.issubdtype(x.dtype, np.floating) else np.dtype(np.float64)
    h = resample_filter(up, down, dtype.name)
    return resample_poly(x, up, down, axis=-1, window=h).astype(np.float32, copy=False)


def median_kernel(duration_s: float, fs_hz: float) -> int:
    """Odd median-filter length in samples for a duration (0.2 s at 100 Hz gives 21)."""
    return int(round(duration_s * fs_hz)) | 1


def remove_baseline(x: np.ndarray, fs_hz: float, filters_s: tuple[float, ...] = (0.2, 0.6),
                    mode: str = "nearest") -> np.ndarray:
    """Subtract the baseline estimated by cascaded median filters (durations in s) per lead.

    Works on [..., n] arrays, each row (last axis) filtered on its own, exactly as a (1, k) footprint
    over a 2-D array would, only faster (see :func:`median_rows`).
    """
    x = np.asarray(x)
    rows = x.reshape(-1, x.shape[-1])
    baseline = rows
    for duration_s in filters_s:
        baseline = median_rows(baseline, median_kernel(duration_s, fs_hz), mode)
    return (rows - baseline).reshape(x.shape).astype(np.float32, copy=False)


def median_rows(rows: np.ndarray, k: int, mode: str = "nearest") -> np.ndarray:
    """Median filter of length ``k`` (odd) along each row of a 2-D array, rows independent.

    scipy's 1-D median is about ten times faster than a (1, k) footprint over a 2-D array. For
    ``mode="nearest"`` the rows are edge-padded by k // 2 and filtered as ONE 1-D array: no window
    reaches past its row's padding, so the output is bit-identical to filtering row by row.
    """
    if mode != "nearest":
        return np.stack([median_filter(row, size=k, mode=mode) for row in rows])
    h, n = k // 2, rows.shape[1]
    padded = np.empty((rows.shape[0], n + 2 * h), dtype=rows.dtype)  # np.pad(mode="edge"), without its overhead
    padded[:, h:h + n] = rows
    padded[:, :h] = rows[:, :1]
    padded[:, h + n:] = rows[:, -1:]
    flat = median_filter(padded.ravel(), size=k, mode="nearest")
    return flat.reshape(padded.shape)[:, h:h + n]


def scale_minmax(x: np.ndarray) -> np.ndarray:
    """Scale each lead (last axis) to [-1, 1]; a flat lead maps to 0. Works on [..., leads, n]."""
    lo = x.min(axis=-1, keepdims=True)
    hi = x.max(axis=-1, keepdims=True)
    span = hi - lo
    safe = np.where(span > 0, span, 1.0)
    out = np.where(span > 0, 2.0 * (x - lo) / safe - 1.0, 0.0)
    return out.astype(np.float32)


def scale_fixed_mv(x: np.ndarray, full_scale_mv: float) -> np.ndarray:
    """Divide by ``full_scale_mv`` (mV) and clip to [-1, 1]: the same factor for every lead, so amplitude is kept."""
    return np.clip(np.asarray(x, dtype=np.float32) / np.float32(full_scale_mv), -1.0, 1.0).astype(np.float32)


def scale(x_mv: np.ndarray, recipe: Recipe = DEFAULT_RECIPE) -> np.ndarray:
    """The recipe's input scaling of conditioned windows [..., leads, n] in mV (the one definition)."""
    if recipe.scaling == "minmax":
        return scale_minmax(x_mv)
    if recipe.scaling == "fixed_mv":
        return scale_fixed_mv(x_mv, recipe.full_scale_mv)
    raise ValueError(f"recipe scaling {recipe.scaling!r} unknown; choices: {list(SCALINGS)}")


def condition(x_mv: np.ndarray, fs_hz: float, recipe: Recipe = DEFAULT_RECIPE) -> np.ndarray:
    """A [12, n] window in mV at ``fs_hz`` to [12, window_samples] mV at the recipe's rate.

    Refuses a window with a gap (GapError) and one shorter than the recipe's window (ValueError).
    Samples beyond what one window needs are ignored (the window is its first 10 s).
    """
    x_mv = np.asarray(x_mv, dtype=np.float32)
    if x_mv.ndim != 2 or x_mv.shape[0] != len(recipe.leads):
        raise ValueError(f"expected a [{len(recipe.leads)}, n] array in {recipe.units}, got shape {x_mv.shape}")
    need = input_samples_for_window(fs_hz, recipe)
    if x_mv.shape[1] < need:
        raise ValueError(f"window has {x_mv.shape[1]} samples at {fs_hz:g} Hz; one {recipe.window_s:g} s window needs {need}")
    x_mv = x_mv[:, :need]
    check_no_gaps(x_mv, fs_hz)
    y = resample(x_mv, fs_hz, recipe.fs_hz)[:, : recipe.window_samples]
    return remove_baseline(y, recipe.fs_hz, recipe.baseline_filters_s, recipe.median_mode)


def preprocess_window(x_mv: np.ndarray, fs_hz: float, recipe: Recipe = DEFAULT_RECIPE) -> np.ndarray:
    """The full recipe: raw [12, n] mV at ``fs_hz`` to the model input [12, 1000] in [-1, 1]."""
    return scale(condition(x_mv, fs_hz, recipe), recipe)


def window_starts(n_samples: int, fs_hz: float, hop_s: float, recipe: Recipe = DEFAULT_RECIPE) -> list[int]:
    """First sample (at ``fs_hz``) of each full model window every ``hop_s`` over ``n_samples``."""
    if hop_s <= 0:
        raise ValueError(f"hop_s={hop_s} must be positive")
    win = input_samples_for_window(fs_hz, recipe)
    hop = max(1, int(round(hop_s * fs_hz)))
    return list(range(0, n_samples - win + 1, hop)) if n_samples >= win else []
