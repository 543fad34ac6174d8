"""R peaks by the slope of the ECG: NeuroKit2's "neurokit" QRS method, computed with numpy and scipy only.

Why not call NeuroKit2: importing it (even ``neurokit2.ecg`` alone, whose package ``__init__`` runs
first) loads matplotlib, scikit-learn, pandas, pywt and every one of its submodules, about 74 MB of
resident memory for a 40-line algorithm; the live monitor's budget with the paper-size model is 250 MB
(BENCHMARKS.md, "Live from the simulator"). The method and its parameters are NeuroKit2's (Makowski et
al. 2021, ``ecg_findpeaks(method="neurokit")``, version 0.3.0) and the peaks are the same, sample for
sample: ``tests/test_qrs.py`` checks this against NeuroKit2 itself on MIT-BIH record 100, PTB and
Challenge records and a synthetic cohort (NeuroKit2 stays installed as the reference and as the
``detector = "neurokit"`` setting).

1. the absolute gradient, smoothed by a 0.1 s moving average; 1.5 x its own 0.75 s moving average is
   the threshold (both averages clamp the signal's ends, like ``scipy.ndimage`` mode "nearest");
2. a QRS complex is a run of the smoothed gradient above the threshold; runs shorter than 0.4 x the
   mean run length are noise;
3. in each complex the most prominent local maximum of the signal is the R peak; it is kept when it is
   more than 0.3 s after the previous kept peak. The first peak is measured from sample 0 as well (as in
   NeuroKit2), so a beat in a window's first 0.3 s is not reported: the engine takes such beats from the
   previous window (``heart_rate.BeatTracker``).
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import uniform_filter1d
from scipy.signal import find_peaks, peak_prominences

#: Moving average of the absolute gradient (s).
SMOOTH_S = 0.1
#: Moving average of the smoothed gradient that sets the threshold (s).
AVERAGE_S = 0.75
#: The threshold is this multiple of the average.
THRESHOLD_WEIGHT = 1.5
#: Runs above the threshold shorter than this fraction of the mean run are not QRS complexes.
MIN_LENGTH_WEIGHT = 0.4
#: Shortest interval between two kept R peaks (s).
MIN_DELAY_S = 0.3


def gradient_r_peaks(x_mv: np.ndarray, fs_hz: float) -> np.ndarray:
    """R-peak sample indices (int64, increasing) of one lead ``x_mv`` (1-D, mV, baseline removed)
    sampled at ``fs_hz``. A signal shorter than the 0.75 s average yields no peaks (NeuroKit2 raises)."""
    x = np.asarray(x_mv, dtype=np.float64)
    smooth = int(np.rint(SMOOTH_S * fs_hz))
    average = int(np.rint(AVERAGE_S * fs_hz))
    if x.ndim != 1 or x.size < max(2, average, smooth):
        return np.zeros(0, dtype=np.int64)
    slope = uniform_filter1d(np.abs(np.gradient(x)), smooth, mode="nearest")
    threshold = THRESHOLD_WEIGHT * uniform_filter1d(slope, average, mode="nearest")
    above = slope > threshold
    rising = np.flatnonzero(~above[:-1] & above[1:])
    if rising.size == 0:
        return np.zeros(0, dtype=np.int64)
    falling = np.flatnonzero(above[:-1] & ~above[1:])
    falling = falling[falling > rising[0]]
    n = min(rising.size, falling.size)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    lengths = falling[:n] - rising[:n]
    min_length = lengths.mean() * MIN_LENGTH_WEIGHT
    min_delay = int(np.rint(MIN_DELAY_S * fs_hz))
    # A complex's local maxima are scipy's (``find_peaks`` on the complex's samples): without two equal
    # neighbouring samples (a flat top), they are the signal's local maxima strictly inside the complex, found
    # once for the whole signal; a lone maximum is the most prominent without computing prominences.
    flat_tops = bool(np.any(x[1:] == x[:-1]))
    maxima = np.flatnonzero((x[1:-1] > x[:-2]) & (x[1:-1] > x[2:])) + 1
    peaks: list[int] = []
    last = 0
    for begin, end, length in zip(rising[:n].tolist(), falling[:n].tolist(), lengths.tolist()):
        if length < min_length:
            continue
        if flat_tops:  # scipy's plateau rule (the middle of a flat top), complex by complex
            local, props = find_peaks(x[begin:end], prominence=(None, None))
            prominence = props["prominences"]
        else:
            local = maxima[np.searchsorted(maxima, begin, "right"):np.searchsorted(maxima, end - 1, "left")] - begin
            prominence = peak_prominences(x[begin:end], local)[0] if local.size > 1 else local
        if local.size == 0:
            continue
        peak = begin + int(local[np.argmax(prominence)])
        if peak - last > min_delay:
            peaks.append(peak)
            last = peak
    return np.asarray(peaks, dtype=np.int64)
