"""QRS detection and heart rate from RR intervals, on a single lead (any lead, any sampling rate).

Detection (``method``, set in the alarm settings): "gradient", the default, is NeuroKit2's slope method
computed by :mod:`bedside.qrs` with numpy and scipy only (the same peaks, sample for sample, without
NeuroKit2's imports: scikit-learn, matplotlib, pywt, about 74 MB resident and 0.6-1 s, since its package
``__init__`` imports every submodule); "neurokit" calls NeuroKit2's ``ecg_findpeaks`` itself (the
``neurokit`` extra); "xqrs" is wfdb's XQRS. On MIT-BIH record 100 scored the EC57 way they find 99.8-100 %
of beats with at most one false detection, on the engine's path as well as bare
(``scripts/bench_qrs.py``). On the engine's 100 Hz conditioned lead XQRS double-counts T waves of other
morphologies (synthetic and PTB 12-lead ECGs) and costs about 5 ms per window against 0.3 ms.
:func:`warm_up_detector` pays a detector's imports when the engine is built, not inside the first
analysed window.

The engine runs the detector on the recipe's conditioned lead (100 Hz, baseline removed by the
median filters), so it needs no filtering of its own, and stitches the beats of overlapping windows
with :class:`BeatTracker`. Heart rate follows the common monitor rule (IEC 60601-2-27 practice):
60 / mean of the last 12 RR intervals, or of the last 4 when those are slow.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass

import numpy as np

from bedside.alarm_config import QRS_DETECTORS, HeartRateSettings
from bedside.errors import BedsideError
from bedside.preprocess import DEFAULT_RECIPE, Recipe, input_samples_for_window, remove_baseline, resample, window_starts

#: A second beat within this time of a stitched beat is the same beat seen from the next window.
REFRACTORY_S = 0.25
#: Beats this close to a window's edge are left to the neighbouring window, which sees them whole.
EDGE_S = 0.3


def warm_up_detector(method: str = "gradient", fs_hz: float = 100.0) -> None:
    """Import the detector's library and run it once on 4 s of a synthetic beat train (about 1 s for
    NeuroKit2, once per process), so that the first analysed window does not pay for it; a detector
    whose library is not installed fails here, at start-up, with the fix named."""
    t = np.arange(int(4 * fs_hz)) / fs_hz
    x = np.exp(-(((t % 0.8) - 0.4) ** 2) / (2 * 0.01 ** 2))  # narrow 1 mV spikes at 75 bpm
    detect_qrs(x, fs_hz, method, clean=False)


def detect_qrs(x_mv: np.ndarray, fs_hz: float, method: str = "gradient", clean: bool = True) -> np.ndarray:
    """R-peak sample indices of a single-lead signal ``x_mv`` (1-D, mV) sampled at ``fs_hz``.

    ``clean=False`` skips the detector's filtering (for a signal whose baseline is already removed, such
    as the conditioned lead): NeuroKit2's ``ecg_clean`` for "neurokit", the recipe's baseline median
    filters for "gradient"; XQRS always filters internally.
    """
    x = np.asarray(x_mv, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"detect_qrs takes one lead (a 1-D array), got shape {x.shape}")
    if method == "neurokit":
        try:
            import neurokit2 as nk  # imported on first use: it is slow to import
        except ImportError as e:
            raise BedsideError('QRS detector "neurokit" needs NeuroKit2, which is not installed: install the '
                               '`neurokit` extra (pip install "cromotex-bedside[neurokit]") or set detector = '
                               '"gradient" in the alarm settings (the same peaks)') from e

        if clean:
            x = nk.ecg_clean(x, sampling_rate=fs_hz, method="neurokit")
        peaks = nk.ecg_findpeaks(x, sampling_rate=fs_hz, method="neurokit")["ECG_R_Peaks"]
        return np.asarray(peaks, dtype=np.int64)
    if method == "gradient":
        from bedside.qrs import gradient_r_peaks

        if clean and x.size:  # the recipe's baseline filters, as on the engine's conditioned lead
            x = remove_baseline(x, fs_hz, DEFAULT_RECIPE.baseline_filters_s, DEFAULT_RECIPE.median_mode)
        return gradient_r_peaks(x, fs_hz)
    if method == "xqrs":
        from wfdb import processing

        logging.getLogger("wfdb").setLevel(logging.ERROR)
        detector = processing.XQRS(sig=x, fs=fs_hz)
        detector.detect(verbose=False)
        return np.asarray(detector.qrs_inds, dtype=np.int64)
    raise ValueError(f"QRS detector {method!r} unknown; choices: {list(QRS_DETECTORS)}")


def heart_rate_bpm(beat_times_s: np.ndarray, rr_count: int = 12, rr_count_slow: int = 4,
                   slow_bpm: float = 50.0, max_rr_s: float = 3.0) -> float | None:
    """60 / mean of the last ``rr_count`` RR intervals (or ``rr_count_slow`` when slow); None if < 2 RR.

    RR intervals longer than ``max_rr_s`` (a missed beat, a pause, a gap) are not averaged.
    """
    rr = np.diff(np.asarray(beat_times_s, dtype=np.float64))
    rr = rr[(rr > 0) & (rr <= max_rr_s)]
    if len(rr) < 2:
        return None
    recent = rr[-rr_count:]
    slow = rr[-rr_count_slow:]
    if slow.mean() > 60.0 / slow_bpm:
        recent = slow
    return float(60.0 / recent.mean())


class BeatTracker:
    """Beats of consecutive overlapping windows stitched into one beat train (times in s)."""

    def __init__(self, settings: HeartRateSettings, keep: int = 32):
        self.settings = settings
        self.beats: deque[float] = deque(maxlen=keep)
        self.covered_until_s: float | None = None  # beats are complete up to this time
        self.added: list[float] = []  # beats the last window added

    def reset(self) -> None:
        """Forget the beat train (after a gap or an unusable stretch: RR across it would be wrong)."""
        self.beats.clear()
        self.covered_until_s = None

    def add_window(self, start_s: float, duration_s: float, beat_offsets_s: np.ndarray,
                   last: bool = False) -> float | None:
        """Add the beats found in a window starting at ``start_s``; return the heart rate after it.

        ``last``: no window follows (the end of a record), so the beats near its end are kept too
        instead of being left to a next window that never comes.
        """
        end_s = start_s + duration_s
        if self.covered_until_s is None or start_s + EDGE_S > self.covered_until_s:
            self.reset()  # not contiguous with what we have: start a new train
            accept_from = start_s
        else:
            accept_from = self.covered_until_s
        accept_to = end_s if last else end_s - EDGE_S
        self.added = []
        for t in np.sort(np.asarray(beat_offsets_s, dtype=np.float64)) + start_s:
            if accept_from <= t < accept_to and (not self.beats or t - self.beats[-1] >= REFRACTORY_S):
                self.beats.append(float(t))
                self.added.append(float(t))
        self.covered_until_s = accept_to
        s = self.settings
        return heart_rate_bpm(np.asarray(self.beats), s.rr_count, s.rr_count_slow, s.slow_bpm, s.max_rr_s)


#: MIT-BIH beat annotation codes (EC57 scores beats only; rhythm, noise and other marks are not beats).
BEAT_SYMBOLS = frozenset("NLRBAaJSVrFejnE/fQ?")


@dataclass(frozen=True)
class BeatScore:
    """EC57-style beat-by-beat comparison (the ``bxb`` rules)."""

    tp: int
    fp: int
    fn: int

    @property
    def sensitivity(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else float("nan")

    @property
    def positive_predictivity(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else float("nan")


def score_beats(reference: np.ndarray, detected: np.ndarray, fs_hz: float, window_s: float = 0.150,
                skip_s: float = 300.0) -> BeatScore:
    """Match detections to reference beats one-to-one within ``window_s``, ignoring the first ``skip_s``.

    ANSI/AAMI EC57: 150 ms match window, the first 5 minutes excluded (a detector's learning time),
    reference beats only (filter annotations with :data:`BEAT_SYMBOLS` first). A detection in the
    excluded period matched to nothing is not a false positive; near the boundary a detection may
    match a reference beat just after it.
    """
    w = window_s * fs_hz
    start = skip_s * fs_hz
    ref = np.sort(np.asarray(reference, dtype=np.float64))
    ref = ref[ref >= start]
    det = np.sort(np.asarray(detected, dtype=np.float64))
    det = det[det >= start - w]
    used = np.zeros(len(det), dtype=bool)
    tp = 0
    for r in ref:
        lo, hi = np.searchsorted(det, r - w), np.searchsorted(det, r + w, side="right")
        free = [k for k in range(lo, hi) if not used[k]]
        if free:
            used[min(free, key=lambda k: abs(det[k] - r))] = True
            tp += 1
    fp = int(np.sum(~used & (det >= start)))
    return BeatScore(tp=tp, fp=fp, fn=len(ref) - tp)


def windowed_beats(x_mv: np.ndarray, fs_hz: float, settings: HeartRateSettings, hop_s: float = 5.0,
                   recipe: Recipe = DEFAULT_RECIPE) -> tuple[np.ndarray, list[tuple[float, float | None]]]:
    """The engine's heart-rate path on one lead: windows every ``hop_s``, conditioned like the model's
    input (resampled, baseline removed), detected, stitched. Returns (beat times in s, [(t_end, bpm)]).
    """
    x = np.asarray(x_mv, dtype=np.float32)[None, :]
    need = input_samples_for_window(fs_hz, recipe)
    tracker = BeatTracker(settings)
    rates: list[tuple[float, float | None]] = []
    beats: list[float] = []
    starts = list(window_starts(x.shape[1], fs_hz, hop_s, recipe))
    for k, start in enumerate(starts):
        y = resample(x[:, start:start + need], fs_hz, recipe.fs_hz)[:, : recipe.window_samples]
        c = remove_baseline(y, recipe.fs_hz, recipe.baseline_filters_s, recipe.median_mode)[0]
        found = detect_qrs(c, recipe.fs_hz, settings.detector, clean=False) / recipe.fs_hz
        bpm = tracker.add_window(start / fs_hz, recipe.window_s, found, last=k == len(starts) - 1)
        beats.extend(tracker.added)
        rates.append((start / fs_hz + recipe.window_s, bpm))
    return np.asarray(beats), rates
