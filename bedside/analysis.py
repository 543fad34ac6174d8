"""One analysis window through the signal core: gap, lead-off, quality, heart rate, model score.

The checks run in a fixed order and the first that fails names why the window is not scored
(``bedside.alarms.REASON_ALARMS``): a gap (samples missing in every lead: never zero-filled), an
electrode off (the device said so, a lead is flat, or some leads have no samples), poor signal (a lead's SQI below ``min_sqi``), no model (the
bundle was refused), inference failed. Heart rate is measured whenever the detection lead is
usable, even in a window that is not scored for another lead's sake. Windows that pass are scored
together in one ``Bundle.predict`` call (the engine hands over every window that is due).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from bedside.alarm_config import AlarmConfig
from bedside.bundle import Bundle
from bedside.events import WindowResult
from bedside.heart_rate import BeatTracker, detect_qrs
from bedside.leads import CANONICAL_LEADS, LEAD_INDEX
from bedside.preprocess import Recipe, condition, find_gaps, input_samples_for_window, scale
from bedside.quality import window_quality


@dataclass
class Timings:
    """Seconds spent per stage (for the benchmarks' shares)."""

    read: float = 0.0
    preprocess: float = 0.0
    heart_rate: float = 0.0
    inference: float = 0.0
    alarms: float = 0.0
    logging: float = 0.0
    publish: float = 0.0

    def as_dict(self) -> dict[str, float]:
        return dict(self.__dict__)


@dataclass
class WindowInput:
    index: int  # window number in the session
    start_s: float  # signal time of the first sample
    x_mv: np.ndarray  # [12, n] mV at the source rate (NaN = missing)
    lead_off: dict[str, bool | None] = field(default_factory=dict)


def _missing_reason(x: np.ndarray, missing: np.ndarray, fs_hz: float) -> tuple[str, str]:
    """("gap", detail) when samples are missing in every lead (lost samples); ("lead off", detail) when
    only some leads have none (invalid samples of a lead, as WFDB records mark an electrode off)."""
    gaps = find_gaps(x)
    longest = max(n for _, _, n in gaps) / fs_hz
    if missing.all():
        return "gap", f"{longest:.2f} s of signal missing"
    leads = [CANONICAL_LEADS[i] for i in np.flatnonzero(missing)]
    return "lead off", f"lead{'s' if len(leads) > 1 else ''} {', '.join(leads[:4])} without signal for {longest:.2f} s"


class WindowAnalyser:
    """Signal core + model for windows of one session (holds the heart-rate beat train)."""

    def __init__(self, fs_hz: float, recipe: Recipe, config: AlarmConfig, bundle: Bundle | None,
                 bundle_error: str | None = None, timings: Timings | None = None):
        self.fs_hz, self.recipe, self.config = fs_hz, recipe, config
        self.bundle, self.bundle_error = bundle, bundle_error
        self.window_n = input_samples_for_window(fs_hz, recipe)
        self.window_s = self.window_n / fs_hz
        self.tracker = BeatTracker(config.heart_rate)
        self.hr_lead = LEAD_INDEX[config.heart_rate.lead]
        self.timings = timings or Timings()

    def _heart_rate(self, w: WindowInput, conditioned: np.ndarray, sqi: np.ndarray) -> float | None:
        min_sqi = self.config.quality.min_sqi
        lead = self.hr_lead if sqi[self.hr_lead] >= min_sqi else int(np.argmax(sqi))
        if sqi[lead] < min_sqi:
            self.tracker.reset()
            return None
        beats = detect_qrs(conditioned[lead], self.recipe.fs_hz, self.config.heart_rate.detector, clean=False)
        return self.tracker.add_window(w.start_s, self.recipe.window_s, beats / self.recipe.fs_hz)

    def analyse(self, windows: list[WindowInput], infer: bool = True) -> list[WindowResult]:
        """Results in the order given; ``infer=False`` only updates the heart-rate beat train."""
        results: list[WindowResult | None] = []
        to_score: list[tuple[int, np.ndarray, dict]] = []
        q = self.config.quality
        for w in windows:
            t_end = w.start_s + self.window_s
            t0 = time.perf_counter()
            missing = np.isnan(w.x_mv).any(axis=1)
            if missing.any():  # never zero-filled: a gap in every lead, or some leads without signal
                self.tracker.reset()
                reason, detail = _missing_reason(w.x_mv, missing, self.fs_hz)
                results.append(WindowResult(t_end, w.index, False, reason, detail=detail, lead_off=w.lead_off))
                self.timings.preprocess += time.perf_counter() - t0
                continue
            infinite = np.isinf(w.x_mv).any(axis=1)
            if infinite.any():  # a device value out of range: never scored, never written as a number
                self.tracker.reset()
                leads = [CANONICAL_LEADS[i] for i in np.flatnonzero(infinite)]
                detail = (f"lead{'s' if len(leads) > 1 else ''} {', '.join(leads[:4])} with infinite samples "
                          "(device values out of range)")
                results.append(WindowResult(t_end, w.index, False, "poor signal", detail=detail, lead_off=w.lead_off))
                self.timings.preprocess += time.perf_counter() - t0
                continue
            conditioned = condition(w.x_mv, self.fs_hz, self.recipe)
            wq = window_quality(w.x_mv, self.fs_hz, conditioned, q)
            np.nan_to_num(wq.sqi, copy=False, nan=0.0, posinf=0.0, neginf=0.0)  # an SQI that overflowed: unusable
            quality = {lead: round(float(s), 3) for lead, s in zip(CANONICAL_LEADS, wq.sqi)}
            t1 = time.perf_counter()
            self.timings.preprocess += t1 - t0
            hr = self._heart_rate(w, conditioned, wq.sqi)
            t2 = time.perf_counter()
            self.timings.heart_rate += t2 - t1
            base = dict(hr_bpm=hr, quality=quality, lead_off=w.lead_off)
            off = [e for e, v in w.lead_off.items() if v]
            flat = [CANONICAL_LEADS[i] for i in np.flatnonzero(wq.flat)]
            poor = [i for i in np.argsort(wq.sqi) if wq.sqi[i] < q.min_sqi]
            if off or flat:
                detail = ", ".join(([f"electrode {e} off" for e in off] + [f"lead {lead} flat" for lead in flat])[:4])
                results.append(WindowResult(t_end, w.index, False, "lead off", detail=detail, **base))
            elif poor:
                detail = ", ".join(f"{CANONICAL_LEADS[i]} {wq.worst_feature(i)} (SQI {wq.sqi[i]:.2f})" for i in poor[:3])
                results.append(WindowResult(t_end, w.index, False, "poor signal", detail=detail, **base))
            elif self.bundle is None:
                results.append(WindowResult(t_end, w.index, False, "no model", detail=self.bundle_error or "", **base))
            else:
                results.append(None)
                if infer:
                    to_score.append((len(results) - 1, scale(conditioned, self.bundle.recipe), base))
                self.timings.preprocess += time.perf_counter() - t2
        if to_score:
            self._score(windows, results, to_score)
        return [r for r in results if r is not None]

    def _score(self, windows: list[WindowInput], results: list, to_score: list[tuple[int, np.ndarray, dict]]) -> None:
        t0 = time.perf_counter()
        assert self.bundle is not None
        try:
            probs = self.bundle.predict(np.stack([x for _, x, _ in to_score]))
            if not np.all(np.isfinite(probs)):
                raise ValueError("the model returned NaN or infinite scores")
            failure = ""
        except Exception as exc:  # the runtime can fail in many ways; each is a technical alarm
            probs, failure = None, f"{type(exc).__name__}: {exc}"[:300]
        labels = self.bundle.labels
        for row, (pos, _, base) in enumerate(to_score):
            w = windows[pos]
            t_end = w.start_s + self.window_s
            if probs is None:
                results[pos] = WindowResult(t_end, w.index, False, "inference failed", detail=failure, **base)
            else:
                scores = {label: float(p) for label, p in zip(labels, probs[row])}
                results[pos] = WindowResult(t_end, w.index, True, "", scores=scores, **base)
        self.timings.inference += time.perf_counter() - t0
