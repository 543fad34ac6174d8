"""One analysis window through the signal core: gap, lead-off, quality, heart rate, model score.

Each technical condition of a window is decided on its own (``WindowResult.conditions``): samples
lost in every lead (``signal_gap``), an electrode off (the board said so, a lead is flat for 2 s, or
some leads have no samples: ``lead_off``), a lead of poor quality (``poor_signal``), a failed model
(``inference_failed``). Several can hold in one window; one that cannot be judged (the SQI of a
window with a gap) is listed in ``WindowResult.unknown`` and leaves its alarm as it was.

Scoring is stricter: a window is scored only when it is whole (no sample missing or infinite: never
zero-filled, never interpolated into the model) and passes every check; ``reason`` names the first
that failed, in the order gap, lead off, poor signal, no model, inference failed. Heart rate is
measured whenever the detection lead allows, even in a window that is not scored: on the whole
window, or, when samples are missing, on the longest stretch of the detection lead without a gap if
that stretch is at least :data:`HR_MIN_STRETCH_S` long. Windows that pass are scored together in one
``Bundle.predict`` call (the engine hands over every window that is due).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from bedside.alarm_config import AlarmConfig
from bedside.bundle import Bundle
from bedside.events import WindowResult
from bedside.heart_rate import BeatTracker, detect_qrs, warm_up_detector
from bedside.leads import CANONICAL_LEADS, LEAD_INDEX
from bedside.preprocess import Recipe, condition, input_samples_for_window, remove_baseline, resample, scale
from bedside.quality import window_quality

#: Shortest intact stretch of the detection lead (s) on which a window with missing samples still
#: gets a heart rate: 4 s hold 3 beats (2 RR intervals, the least the rate needs) down to 53 bpm once
#: the tracker's 0.3 s edge margins are taken off; a shorter stretch gives no rate (None).
HR_MIN_STRETCH_S = 4.0
#: Holes (lost samples) up to this long (s) do not end an intact stretch FOR THE QRS DETECTOR ONLY:
#: they are bridged by a straight line between their neighbours on the heart-rate lead, never in the
#: model's input or on the display. 20 ms is shorter than any QRS complex (40-120 ms), so a hole this
#: short cannot hide a beat, and it moves a detected R peak by 10 ms at most. Without it, packet loss
#: of one frame a second (``drop=0.002`` at 500 Hz) leaves no 4 s stretch and hides the heart rate.
HR_BRIDGE_S = 0.02


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
    inference_wait: float = 0.0  # engine thread waiting for an overlapped inference (inference runs on a worker)

    def as_dict(self) -> dict[str, float]:
        return dict(self.__dict__)


@dataclass
class WindowInput:
    """One window as the engine hands it over (extensible: new fields get defaults)."""

    index: int  # window number in the session
    start_s: float  # signal time of the first sample
    x_mv: np.ndarray  # [12, n] mV at the source rate (NaN = missing)
    lead_off: dict[str, bool | None] = field(default_factory=dict)
    lost_s: float = 0.0  # full length (s) of the link gaps (samples never received) that touch this window
    conditioned: np.ndarray | None = None  # [12, recipe samples] already conditioned (a streaming
    # conditioner); None: conditioned here. Only used for a whole window (no sample missing).


@dataclass
class PreparedBatch:
    """Windows through the signal core, waiting for the model: ``results`` in window order, ``None`` where
    a window waits for its score; ``to_score``: (position, scaled [12, n] input, result fields)."""

    windows: list[WindowInput]
    results: list[WindowResult | None]
    to_score: list[tuple[int, np.ndarray, dict]]


@dataclass(frozen=True)
class Inference:
    """What the model said for a batch: probabilities [windows, labels], or why it failed."""

    probs: np.ndarray | None
    failure: str = ""
    seconds: float = 0.0  # wall time of the call (added to the timings by whoever takes the result)


def _duration(s: float) -> str:
    return f"{s:.2f} s" if s >= 1.0 else f"{s * 1000:.0f} ms"


def _runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Starts and stops of the runs of True in a 1-D bool array."""
    edges = np.diff(np.concatenate(([0], mask.astype(np.int8), [0])))
    return np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)


def bridgeable(finite: np.ndarray, max_hole_n: int) -> np.ndarray:
    """``finite`` with holes of at most ``max_hole_n`` samples counted as usable (1-D bool)."""
    out = finite.copy()
    for a, b in zip(*_runs(~finite)):
        if b - a <= max_hole_n and a > 0 and b < finite.size:  # a hole with signal on both sides
            out[a:b] = True
    return out


def _longest_run(good: np.ndarray) -> tuple[int, int]:
    """[start, stop) of the longest run of True in a 1-D bool array ((0, 0) when none)."""
    starts, stops = _runs(good)
    if starts.size == 0:
        return 0, 0
    k = int(np.argmax(stops - starts))
    return int(starts[k]), int(stops[k])


class WindowAnalyser:
    """Signal core + model for windows of one session (holds the heart-rate beat train)."""

    def __init__(self, fs_hz: float, recipe: Recipe, config: AlarmConfig, bundle: Bundle | None,
                 bundle_error: str | None = None, timings: Timings | None = None):
        self.fs_hz, self.recipe, self.config = fs_hz, recipe, config
        self.bundle, self.bundle_error = bundle, bundle_error
        self.window_n = input_samples_for_window(fs_hz, recipe)
        self.window_s = self.window_n / fs_hz
        self.tracker = BeatTracker(config.heart_rate)
        warm_up_detector(config.heart_rate.detector)  # its imports now, not in the first window
        self.hr_lead = LEAD_INDEX[config.heart_rate.lead]
        self.timings = timings or Timings()

    # -- heart rate ------------------------------------------------------------------------------

    def _heart_rate(self, w: WindowInput, conditioned: np.ndarray, sqi: np.ndarray) -> float | None:
        min_sqi = self.config.quality.min_sqi
        lead = self.hr_lead if sqi[self.hr_lead] >= min_sqi else int(np.argmax(sqi))
        if sqi[lead] < min_sqi:
            self.tracker.reset()
            return None
        beats = detect_qrs(conditioned[lead], self.recipe.fs_hz, self.config.heart_rate.detector, clean=False)
        return self.tracker.add_window(w.start_s, self.recipe.window_s, beats / self.recipe.fs_hz)

    def _heart_rate_on_stretch(self, w: WindowInput, finite: np.ndarray) -> float | None:
        """Heart rate on the longest gap-free stretch of the detection lead (or, if that lead has too
        little, of the lead with the longest one); None, and a new beat train, when it is too short."""
        need = int(np.ceil(HR_MIN_STRETCH_S * self.fs_hz))
        hole_n = int(HR_BRIDGE_S * self.fs_hz)
        usable = [bridgeable(finite[i], hole_n) for i in range(finite.shape[0])]
        a, b = _longest_run(usable[self.hr_lead])
        lead = self.hr_lead
        if b - a < need:
            runs = [(_longest_run(u), i) for i, u in enumerate(usable)]
            (a, b), lead = max(runs, key=lambda r: r[0][1] - r[0][0])
        if b - a < need:
            self.tracker.reset()
            return None
        seg = w.x_mv[lead, a:b].astype(np.float64)
        ok = finite[lead, a:b]
        if not ok.all():  # short holes: a straight line for the detector (this copy only)
            idx = np.arange(seg.size)
            seg[~ok] = np.interp(idx[~ok], idx[ok], seg[ok])
        y = resample(seg[None, :].astype(np.float32), self.fs_hz, self.recipe.fs_hz)
        c = remove_baseline(y, self.recipe.fs_hz, self.recipe.baseline_filters_s, self.recipe.median_mode)[0]
        beats = detect_qrs(c, self.recipe.fs_hz, self.config.heart_rate.detector, clean=False)
        return self.tracker.add_window(w.start_s + a / self.fs_hz, (b - a) / self.fs_hz, beats / self.recipe.fs_hz)

    # -- one window ------------------------------------------------------------------------------

    def _incomplete(self, w: WindowInput, t_end: float, off: list[str]) -> WindowResult:
        """A window with samples missing or infinite: not scored; each condition judged on its own."""
        finite = np.isfinite(w.x_mv)
        nan = np.isnan(w.x_mv)
        lost = nan.all(axis=0)  # samples missing in every lead: never received
        conditions: dict[str, str] = {}
        unknown = ["poor_signal", "inference_failed"]  # no SQI, no score without the whole window
        gap_s = 0.0
        if lost.any():
            inside_s = float(lost.sum()) / self.fs_hz
            gap_s = max(inside_s, w.lost_s)
            conditions["signal_gap"] = (f"{_duration(gap_s)} of signal missing"
                                        + (f" ({_duration(inside_s)} in this window)" if gap_s > inside_s + 1e-6 else ""))
        silent = [CANONICAL_LEADS[i] for i in np.flatnonzero((nan & ~lost).any(axis=1))]
        infinite = [CANONICAL_LEADS[i] for i in np.flatnonzero(np.isinf(w.x_mv).any(axis=1))]
        lead_off = [f"electrode {e} off" for e in off]
        if silent:
            runs = [_longest_run(nan[LEAD_INDEX[n]] & ~lost) for n in silent]
            longest = max(b - a for a, b in runs) / self.fs_hz
            lead_off.append(f"lead{'s' if len(silent) > 1 else ''} {', '.join(silent[:4])} without signal "
                            f"for {_duration(longest)}")
        if lead_off:
            conditions["lead_off"] = ", ".join(lead_off[:4])
        elif not (w.lead_off and all(v is False for v in w.lead_off.values())):
            unknown.append("lead_off")  # a flat lead cannot be judged; only a board reporting contact can
        if infinite:  # a device value out of range: never scored, never written as a number
            conditions["poor_signal"] = (f"lead{'s' if len(infinite) > 1 else ''} {', '.join(infinite[:4])} "
                                         "with infinite samples (device values out of range)")
            unknown.remove("poor_signal")
        if "signal_gap" in conditions:
            reason, detail = "gap", conditions["signal_gap"]
        elif silent:
            reason, detail = "lead off", conditions["lead_off"]
        else:
            reason, detail = "poor signal", conditions["poor_signal"]
        t1 = time.perf_counter()
        hr = self._heart_rate_on_stretch(w, finite)
        self.timings.heart_rate += time.perf_counter() - t1
        return WindowResult(t_end, w.index, False, reason, detail=detail, hr_bpm=hr, lead_off=w.lead_off,
                            conditions=conditions, unknown=tuple(unknown), gap_s=round(gap_s, 3))

    def analyse(self, windows: list[WindowInput], infer: bool = True) -> list[WindowResult]:
        """Results in the order given; ``infer=False`` only updates the heart-rate beat train."""
        batch = self.prepare(windows, infer)
        return self.finish(batch, self.infer(batch))

    def prepare(self, windows: list[WindowInput], infer: bool = True) -> PreparedBatch:
        """Every window through the signal core (in order: the heart-rate beat train); the model not yet run.
        Then :meth:`infer` (thread-safe: may run on another thread) and :meth:`finish`, batches in order."""
        results: list[WindowResult | None] = []
        to_score: list[tuple[int, np.ndarray, dict]] = []
        q = self.config.quality
        for w in windows:
            t_end = w.start_s + self.window_s
            t0 = time.perf_counter()
            off = [e for e, v in w.lead_off.items() if v]
            if not np.isfinite(w.x_mv).all():
                self.timings.preprocess += time.perf_counter() - t0
                results.append(self._incomplete(w, t_end, off))
                continue
            conditioned = w.conditioned if w.conditioned is not None else condition(w.x_mv, self.fs_hz, self.recipe)
            wq = window_quality(w.x_mv, self.fs_hz, conditioned, q)
            np.nan_to_num(wq.sqi, copy=False, nan=0.0, posinf=0.0, neginf=0.0)  # an SQI that overflowed: unusable
            quality = {lead: round(float(s), 3) for lead, s in zip(CANONICAL_LEADS, wq.sqi)}
            t1 = time.perf_counter()
            self.timings.preprocess += t1 - t0
            hr = self._heart_rate(w, conditioned, wq.sqi)
            t2 = time.perf_counter()
            self.timings.heart_rate += t2 - t1
            flat = [CANONICAL_LEADS[i] for i in np.flatnonzero(wq.flat)]
            # a flat lead is lead off, not also poor signal; with an electrode off the rest is not judged
            poor = [i for i in np.argsort(wq.sqi) if wq.sqi[i] < q.min_sqi and not wq.flat[i]]
            conditions: dict[str, str] = {}
            unknown: list[str] = []
            if off or flat:
                conditions["lead_off"] = ", ".join(([f"electrode {e} off" for e in off]
                                                    + [f"lead {lead} flat" for lead in flat])[:4])
            if off:
                unknown.append("poor_signal")
            elif poor:
                conditions["poor_signal"] = ", ".join(f"{CANONICAL_LEADS[i]} {wq.worst_feature(i)} (SQI {wq.sqi[i]:.2f})"
                                                      for i in poor[:3])
            base = dict(hr_bpm=hr, quality=quality, lead_off=w.lead_off, conditions=conditions)
            if conditions or self.bundle is None:
                if "lead_off" in conditions:
                    reason, detail = "lead off", conditions["lead_off"]
                elif conditions:
                    reason, detail = "poor signal", conditions["poor_signal"]
                else:
                    reason, detail = "no model", self.bundle_error or ""
                results.append(WindowResult(t_end, w.index, False, reason, detail=detail,
                                            unknown=(*unknown, "inference_failed"), **base))
            else:
                results.append(None)
                if infer:
                    to_score.append((len(results) - 1, scale(conditioned, self.bundle.recipe), base))
                self.timings.preprocess += time.perf_counter() - t2
        return PreparedBatch(windows, results, to_score)

    def infer(self, batch: PreparedBatch) -> Inference | None:
        """One ``Bundle.predict`` call for every window of ``batch`` that waits for a score (None: none waits).
        Touches nothing but the bundle: safe on worker threads (the caller adds ``seconds`` to the timings)."""
        if not batch.to_score:
            return None
        t0 = time.perf_counter()
        assert self.bundle is not None
        try:
            probs = self.bundle.predict(np.stack([x for _, x, _ in batch.to_score]))
            if not np.all(np.isfinite(probs)):
                raise ValueError("the model returned NaN or infinite scores")
            return Inference(probs, seconds=time.perf_counter() - t0)
        except Exception as exc:  # the runtime can fail in many ways; each is a technical alarm
            return Inference(None, f"{type(exc).__name__}: {exc}"[:300], time.perf_counter() - t0)

    def finish(self, batch: PreparedBatch, inference: Inference | None) -> list[WindowResult]:
        """The batch's results in window order, scores (or the inference failure) filled in."""
        if batch.to_score:
            assert inference is not None
            self.timings.inference += inference.seconds
            self._score(batch.windows, batch.results, batch.to_score, inference)
        return [r for r in batch.results if r is not None]

    def _score(self, windows: list[WindowInput], results: list, to_score: list[tuple[int, np.ndarray, dict]],
               inference: Inference) -> None:
        assert self.bundle is not None
        probs, failure = inference.probs, inference.failure
        labels = self.bundle.labels
        for row, (pos, _, base) in enumerate(to_score):
            w = windows[pos]
            t_end = w.start_s + self.window_s
            if probs is None:
                base = {**base, "conditions": {**base["conditions"], "inference_failed": failure}}
                results[pos] = WindowResult(t_end, w.index, False, "inference failed", detail=failure, **base)
            else:
                scores = {label: float(p) for label, p in zip(labels, probs[row])}
                results[pos] = WindowResult(t_end, w.index, True, "", scores=scores, **base)
