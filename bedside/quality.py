"""Signal-quality index (SQI) per lead of one analysis window, and flat-lead (electrode off) detection.

Each lead gets five features, each mapped to 0 (bad) .. 1 (good) by a linear ramp between two
bounds from the alarm settings ([quality] in alarms.toml); the lead's SQI is the worst of them, so
the reason for a low SQI is always one named feature:

- ``flat``: raw peak-to-peak amplitude (mV) of the quietest 2 s stretch; a lead flat for 2 s is an
  electrode off or a dead channel (2 s holds a QRS down to 30 bpm, so a slow heart is not flat);
- ``clipped``: share of samples stuck at the window's extremes (amplifier saturation);
- ``noise``: share of spectral power above ``hf_hz`` (muscle noise, mains), of the power above 0.5 Hz,
  computed on the raw samples (only when the sampling rate resolves ``hf_hz``);
- ``no QRS``: kurtosis of the baseline-free signal: QRS spikes make an ECG leptokurtic (> 5 on the
  real recordings in ../shared/data), Gaussian noise gives 3, mains hum 1.5 (Li, Mark & Clifford 2008);
- ``too large``: baseline-free peak-to-peak beyond what an ECG reaches (movement, defibrillation).

The baseline-free signal is the recipe's conditioned window (100 Hz, median-filter baseline removed),
which the engine computes anyway for the model, so the SQI costs one FFT and a few reductions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.fft

from bedside.alarm_config import QualitySettings

FEATURES: tuple[str, ...] = ("flat", "clipped", "noise", "no QRS", "too large")
#: Length of the stretches searched for a flat lead, s.
FLAT_BLOCK_S = 2.0


@dataclass(frozen=True)
class WindowQuality:
    """Quality of one window, per lead (rows in the order of the input)."""

    sqi: np.ndarray  # [leads] 0..1
    feature_scores: np.ndarray  # [leads, len(FEATURES)] 0..1
    flat: np.ndarray  # [leads] bool: the lead carries no signal

    def worst_feature(self, lead: int) -> str:
        return FEATURES[int(np.argmin(self.feature_scores[lead]))]


def ramp_up(value: np.ndarray, bad: float, good: float) -> np.ndarray:
    """0 at or below ``bad``, 1 at or above ``good``, linear between (bad < good)."""
    return np.clip((value - bad) / (good - bad), 0.0, 1.0)


def ramp_down(value: np.ndarray, good: float, bad: float) -> np.ndarray:
    """1 at or below ``good``, 0 at or above ``bad``, linear between (good < bad)."""
    return 1.0 - ramp_up(value, good, bad)


def hf_power_ratio(x_mv: np.ndarray, fs_hz: float, hf_hz: float) -> np.ndarray:
    """Share of power above ``hf_hz`` in the power above 0.5 Hz, per row; 0 when fs cannot resolve it."""
    if fs_hz / 2 <= hf_hz:
        return np.zeros(x_mv.shape[0])
    d = x_mv - x_mv.mean(axis=1, keepdims=True)
    spectrum = scipy.fft.rfft(d, axis=1)  # float32 stays float32 (5x faster than numpy's rfft here)
    power = spectrum.real ** 2 + spectrum.imag ** 2
    f = np.fft.rfftfreq(x_mv.shape[1], 1.0 / fs_hz)
    # f ascends: the bins above a frequency are a tail slice (no boolean-mask copies of the spectrum)
    total = power[:, np.searchsorted(f, 0.5, side="right"):].sum(axis=1, dtype=np.float64)
    return power[:, np.searchsorted(f, hf_hz, side="right"):].sum(axis=1, dtype=np.float64) / np.maximum(total, 1e-12)


def kurtosis(x: np.ndarray) -> np.ndarray:
    """Pearson kurtosis per row (3 for Gaussian noise); 0 for a constant row."""
    d = x - x.mean(axis=1, keepdims=True)
    d2 = d * d
    var = d2.mean(axis=1)
    # (d * d) ** 2, not d ** 4: numpy's float power is a pow() call per element, 25x slower
    return np.where(var > 0, (d2 * d2).mean(axis=1) / np.maximum(var, 1e-30) ** 2, 0.0)


def window_quality(x_mv: np.ndarray, fs_hz: float, conditioned_mv: np.ndarray,
                   settings: QualitySettings) -> WindowQuality:
    """SQI of each lead: raw window ``x_mv`` [leads, n] at ``fs_hz`` and its baseline-free version.

    ``conditioned_mv`` is the same window after the recipe's resampling and baseline removal
    (bedside.preprocess.condition), in mV. Neither may hold NaN (gaps are refused before this).
    """
    x = np.asarray(x_mv, dtype=np.float32)
    c = np.asarray(conditioned_mv, dtype=np.float64)
    hi, lo = x.max(axis=1), x.min(axis=1)
    ptp = hi - lo
    tol = 1e-6 + 1e-3 * ptp[:, None]
    block = max(1, int(FLAT_BLOCK_S * fs_hz))
    n_blocks = max(1, x.shape[1] // block)
    blocks = x[:, : n_blocks * block].reshape(x.shape[0], n_blocks, -1)
    quietest = (blocks.max(axis=2) - blocks.min(axis=2)).min(axis=1)
    stuck = ((x >= hi[:, None] - tol) | (x <= lo[:, None] + tol)).mean(axis=1)
    s = settings
    scores = np.stack([
        ramp_up(quietest, *s.flat_mv),
        ramp_down(stuck, *s.clip_fraction),
        ramp_down(hf_power_ratio(x, fs_hz, s.hf_hz), *s.hf_ratio),
        ramp_up(kurtosis(c), *s.kurtosis),
        ramp_down(c.max(axis=1) - c.min(axis=1), *s.max_mv),
    ], axis=1)
    flat = scores[:, 0] < 0.5
    return WindowQuality(sqi=scores.min(axis=1), feature_scores=scores, flat=flat)
