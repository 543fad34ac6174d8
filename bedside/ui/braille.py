"""Drawing a waveform with braille dots: per-column min/max envelopes on a fixed time grid.

Each terminal cell holds 2 x 4 braille dots. Time runs on a grid of dot columns fixed to the signal's
own clock (dot column ``k`` covers signal time ``k / dots_per_s`` to ``(k+1) / dots_per_s``), so a
trace scrolls by whole columns and the same samples always land in the same columns. A column is
drawn from the lowest to the highest sample in it, stretched to touch its neighbour so the line is
continuous; a column with no valid sample (a gap, NaN) is left blank, never drawn as a flat line.
"""

from __future__ import annotations

import math

import numpy as np

#: Dot columns per second of signal: 25 dots/s, the terminal's 25 mm/s paper speed (1 dot = 1 mm).
DOTS_PER_S = 25.0
#: Vertical spans the gain snaps to (mV, full height of a trace), so the gain does not breathe.
SPANS_MV = (1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0, 24.0, 32.0)

_BITS = np.array([[0x01, 0x08], [0x02, 0x10], [0x04, 0x20], [0x40, 0x80]], dtype=np.int32)


def dot_window(end_index: int, fs_hz: float, n_dots: int, dots_per_s: float = DOTS_PER_S) -> tuple[int, np.ndarray]:
    """The last ``n_dots`` complete dot columns before sample ``end_index``.

    Returns (first dot column number, sample-index boundaries [n_dots + 1]).
    """
    spc = fs_hz / dots_per_s  # samples per dot column
    k_end = math.floor(end_index / spc)
    k0 = k_end - n_dots
    bounds = np.round(np.arange(k0, k_end + 1) * spc).astype(np.int64)
    return k0, bounds


def envelope(x: np.ndarray, bounds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Min and max of ``x`` (samples ``bounds[0]..bounds[-1]``) in each column; NaN where none is valid."""
    rel = bounds - bounds[0]
    n_cols = len(bounds) - 1
    lo = np.full(n_cols, np.nan, dtype=np.float32)
    hi = np.full(n_cols, np.nan, dtype=np.float32)
    nonempty = rel[1:] > rel[:-1]
    if x.size == 0 or not nonempty.any():
        return lo, hi
    starts = rel[:-1][nonempty]
    with np.errstate(invalid="ignore"):
        lo[nonempty] = np.fmin.reduceat(x, starts)  # fmin ignores NaN unless all are NaN
        hi[nonempty] = np.fmax.reduceat(x, starts)
    return lo, hi


def auto_range(lo: np.ndarray, hi: np.ndarray, spans_mv: tuple[float, ...] = SPANS_MV) -> tuple[float, float]:
    """Vertical range (mV) that holds the visible trace: the span snaps to ``spans_mv``, the centre to 1/8 span."""
    if not np.isfinite(lo).any():
        return -spans_mv[0] / 2, spans_mv[0] / 2
    v_lo, v_hi = float(np.nanmin(lo)), float(np.nanmax(hi))
    need = (v_hi - v_lo) * 1.1
    span = next((s for s in spans_mv if s >= need), spans_mv[-1])
    step = span / 8
    centre = round((v_lo + v_hi) / 2 / step) * step
    return centre - span / 2, centre + span / 2


def braille_rows(lo: np.ndarray, hi: np.ndarray, height: int, v_min: float, v_max: float) -> list[str]:
    """Render envelopes (two dot columns per cell, len(lo) even) as ``height`` rows of braille text."""
    n = len(lo)
    if n % 2:
        raise ValueError(f"need an even number of dot columns, got {n}")
    n_rows = 4 * height
    valid = np.isfinite(lo) & np.isfinite(hi)
    # Stretch each column to touch its left neighbour, so steep QRS edges stay connected.
    prev_lo, prev_hi = np.roll(lo, 1), np.roll(hi, 1)
    prev_lo[0] = prev_hi[0] = np.nan
    c_lo = np.where(valid, np.fmin(lo, prev_hi), np.nan)
    c_hi = np.where(valid, np.fmax(hi, prev_lo), np.nan)
    scale = (n_rows - 1) / (v_max - v_min)
    with np.errstate(invalid="ignore"):
        top = np.clip(np.round((v_max - c_hi) * scale), 0, n_rows - 1)
        bottom = np.clip(np.round((v_max - c_lo) * scale), 0, n_rows - 1)
    top = np.where(valid, top, n_rows).astype(np.int32)  # invalid columns: empty range
    bottom = np.where(valid, bottom, -1).astype(np.int32)
    r = np.arange(n_rows, dtype=np.int32)[:, None]
    dots = (r >= top[None, :]) & (r <= bottom[None, :])  # [n_rows, n]
    cells = dots.reshape(height, 4, n // 2, 2)
    code = (cells * _BITS[None, :, None, :]).sum(axis=(1, 3))
    code = np.where(code == 0, 0x20, 0x2800 + code)  # empty cell: a plain space
    return ["".join(map(chr, row)) for row in code.tolist()]


def second_ticks(k0: int, n_cells: int, dots_per_s: float = DOTS_PER_S) -> list[tuple[int, int]]:
    """(cell, whole second of signal time) for each second boundary inside cells 0..n_cells-1."""
    t_first = math.ceil(k0 / dots_per_s)
    t_last = (k0 + 2 * n_cells - 1) / dots_per_s
    out = []
    for s in range(t_first, math.floor(t_last) + 1):
        cell = int((round(s * dots_per_s) - k0) // 2)
        if 0 <= cell < n_cells:
            out.append((cell, s))
    return out
