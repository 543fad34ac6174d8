"""What a simulated board measures: a WFDB record resampled to the board's rate, or a synthetic ECG."""

from __future__ import annotations

import os
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
from scipy.signal import resample_poly

from bedside.leads import LEAD_INDEX, derive_limb_leads
from bedside.records import open_record
from devices.errors import DeviceError


@dataclass(frozen=True)
class DeviceSignal:
    """Samples a board would digitise: [n, channels] float32 mV at fs_hz; NaN where the source has a gap."""

    name: str
    fs_hz: float
    leads: tuple[str, ...]
    mv: np.ndarray

    @property
    def n_samples(self) -> int:
        return int(self.mv.shape[0])


def resample_ratio(fs_from: float, fs_to: float) -> tuple[int, int]:
    """(up, down) integers with fs_to / fs_from == up / down (to 1 part in 10**6)."""
    ratio = Fraction(fs_to / fs_from).limit_denominator(100000)
    if abs(float(ratio) - fs_to / fs_from) > 1e-6 * fs_to / fs_from:
        raise DeviceError(f"cannot resample {fs_from:g} Hz to {fs_to:g} Hz with a small integer ratio")
    return ratio.numerator, ratio.denominator


def record_signal(path: str | os.PathLike[str], fs_hz: float, leads: tuple[str, ...],
                  start_s: float = 0.0, duration_s: float | None = None) -> DeviceSignal:
    """A WFDB record's leads, polyphase-resampled (scipy.signal.resample_poly) to the board's rate.

    Gaps (NaN) in the record stay gaps: every output sample whose filter support touches a NaN is
    NaN, and the simulator sends no frame for it.
    """
    record = open_record(path, require_window=False)
    start = int(round(start_s * record.fs_hz))
    stop = None if duration_s is None else start + int(round(duration_s * record.fs_hz))
    if start >= record.n_samples:
        raise DeviceError(f"{record.path}: start {start_s:g} s is past the end ({record.duration_s:.1f} s)")
    x = record.read(start, stop)
    rows = np.stack([x[LEAD_INDEX[lead]] for lead in leads])
    y = resample_leads(rows, record.fs_hz, fs_hz)
    return DeviceSignal(os.path.basename(record.path), fs_hz, tuple(leads), y.T.astype(np.float32))


def resample_leads(rows: np.ndarray, fs_from: float, fs_to: float) -> np.ndarray:
    """[k, n] mV at fs_from -> [k, m] float64 at fs_to (resample_poly); output touched by a NaN is NaN."""
    up, down = resample_ratio(fs_from, fs_to)
    if up == down:
        return rows.astype(np.float64)
    nan = np.isnan(rows)
    y = resample_poly(np.where(nan, 0.0, rows).astype(np.float64), up, down, axis=1)
    if nan.any():
        touched = resample_poly(nan.astype(np.float64), up, down, axis=1)
        y[np.abs(touched) > 1e-9] = np.nan
    return y


# Synthetic ECG: a heart dipole (x: patient's left, y: inferior, z: anterior) made of Gaussian
# waves, projected on each lead's direction, so that the limb leads obey Einthoven's law.
_WAVES = (  # (offset from R in s, width sigma in s, amplitude mV, dipole direction)
    (-0.160, 0.025, 0.15, (0.50, 0.85, 0.10)),  # P
    (-0.028, 0.008, 0.12, (-0.70, -0.20, 0.70)),  # Q (septal)
    (0.000, 0.011, 1.40, (0.60, 0.60, -0.50)),  # R
    (0.030, 0.011, 0.45, (-0.20, -0.50, -0.80)),  # S
    (0.280, 0.045, 0.35, (0.60, 0.60, 0.40)),  # T
)
_DIRECTIONS: dict[str, tuple[float, float, float]] = {
    "I": (1.0, 0.0, 0.0),
    "II": (0.5, 0.866, 0.0),
    **{f"V{k}": (float(np.cos(np.radians(a))), 0.15, float(np.sin(np.radians(a))))
       for k, a in zip(range(1, 7), (120, 95, 75, 60, 30, 0))},
}


def synthetic_signal(fs_hz: float, leads: tuple[str, ...], duration_s: float = 30.0, hr_bpm: float = 72.0,
                     seed: int = 0) -> DeviceSignal:
    """A plausible 12-lead ECG (sinus rhythm, beat-to-beat variation, wander and noise), reproducible by seed."""
    rng = np.random.default_rng(seed)
    n = int(round(duration_s * fs_hz))
    t = np.arange(n) / fs_hz
    dipole = np.zeros((3, n))
    rr = 60.0 / hr_bpm
    beat = 0.4
    while beat < duration_s + 0.5:
        scale = 1.0 + 0.05 * rng.standard_normal()
        for offset, sigma, amp, direction in _WAVES:
            d = np.asarray(direction) / np.linalg.norm(direction)
            centre = beat + offset
            lo, hi = np.searchsorted(t, [centre - 5 * sigma, centre + 5 * sigma])
            if hi > lo:
                g = amp * scale * np.exp(-0.5 * ((t[lo:hi] - centre) / sigma) ** 2)
                dipole[:, lo:hi] += d[:, None] * g[None, :]
        beat += rr * (1.0 + 0.03 * rng.standard_normal())
    wander = 0.05 * np.sin(2 * np.pi * 0.3 * t + rng.uniform(0, 2 * np.pi))
    signals = {name: np.asarray(v) @ dipole + wander + 0.005 * rng.standard_normal(n)
               for name, v in _DIRECTIONS.items()}
    signals.update(derive_limb_leads(signals["I"], signals["II"]))
    missing = [lead for lead in leads if lead not in signals]
    if missing:
        raise DeviceError(f"the synthetic ECG has no lead {', '.join(missing)}")
    mv = np.stack([signals[lead] for lead in leads], axis=1).astype(np.float32)
    return DeviceSignal(f"synthetic-{hr_bpm:g}bpm-seed{seed}", fs_hz, tuple(leads), mv)
