"""Conditions outside the analysis windows: the live link (disconnect, no data, stale analysis, inference
behind: windows skipped), the signal clock while no samples arrive, commands from other threads, and
condition sources that live outside the engine (``Engine.add_condition_source``, e.g. the HL7 link's ``central_unreachable``).

:class:`LinkMixin` is part of :class:`bedside.engine.Engine`.
"""

from __future__ import annotations

import logging
import queue
import time
from collections.abc import Callable

from bedside.engine_commit import Pending
from bedside.sources import LinkEvent
from bedside.store import TechnicalEvent

log = logging.getLogger("bedside.engine")

#: Technical alarms the engine decides itself: a condition source may not drive them.
ENGINE_CONDITIONS: frozenset[str] = frozenset({
    "lead_off", "poor_signal", "signal_gap", "inference_failed", "device_disconnected", "no_data",
    "inference_stale", "bundle_refused", "settings_refused", "storage_failing", "analysis_behind"})

#: ``analysis_behind`` clears once this many hops of signal time passed without a skipped window.
ANALYSIS_BEHIND_HOLD_HOPS = 2

#: A technical condition that lives outside the engine: alarm name -> (present, detail).
ConditionSource = Callable[[], dict[str, tuple[bool, str]]]


class SignalClock:
    """Signal time (s): the newest sample's time; live, it runs on with the monotonic clock while no
    samples arrive (so AUDIO PAUSED ends and link alarms carry a time). It never goes back: samples
    that arrive late after a stall (their time behind what the clock already showed) leave it where
    it is until they catch up."""

    def __init__(self, realtime: bool):
        self.realtime = realtime
        self._sample_s: float | None = None  # signal time of the end of the newest sample
        self._at_mono = 0.0  # monotonic time it arrived
        self._shown_s = 0.0  # the latest time returned

    def samples(self, end_s: float, mono: float) -> None:
        """Samples up to signal time ``end_s`` arrived at monotonic time ``mono``."""
        self._sample_s, self._at_mono = end_s, mono

    def now(self, mono: float) -> float:
        if self._sample_s is not None:
            t = self._sample_s + (mono - self._at_mono if self.realtime else 0.0)
            self._shown_s = max(self._shown_s, t)
        return self._shown_s


class LinkMixin:
    """Link conditions, signal time, commands and external condition sources of the engine."""

    def add_condition_source(self, fn: ConditionSource) -> None:
        """Poll ``fn()`` once per loop iteration for technical conditions that live outside the engine.

        ``fn`` returns {alarm name: (present, detail)} (e.g. the HL7 link's ``central_unreachable``); it
        runs on the engine's thread and must return quickly. Its transitions go through the alarm system
        and are committed and announced like every other. ``fn`` is called once here: a name that is not
        a technical alarm of the alarm settings, or one the engine decides itself, raises ValueError.
        """
        self._check_conditions(fn())
        with self._lock:
            self._condition_sources = [*self._condition_sources, fn]

    def _check_conditions(self, reported: dict[str, tuple[bool, str]]) -> None:
        known = [n for n in self.config.technical if n not in ENGINE_CONDITIONS]
        unknown = sorted(n for n in reported if n not in known)
        if unknown:
            raise ValueError(f"condition source reports {unknown}: not a technical alarm it may drive; "
                             f"add it to TECHNICAL_ALARMS (bedside/alarm_config.py) and bedside/alarms.toml, "
                             f"or use one of {known}")
        for name, value in reported.items():
            if not (isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], bool)):
                raise ValueError(f"condition source: {name!r} must map to (present: bool, detail: str), got {value!r}")

    def _poll_condition_sources(self, pending: Pending) -> None:
        """Every registered condition source, once; one that fails is logged and counted, never fatal."""
        for fn in self._condition_sources:
            try:
                reported = fn()
                self._check_conditions(reported)
            except Exception:
                self.summary.condition_source_errors += 1
                if self.summary.condition_source_errors in (1, 10, 100, 1000):
                    log.exception("a condition source failed (%d times); its conditions keep their last value",
                                  self.summary.condition_source_errors)
                continue
            for name, (present, detail) in reported.items():
                if present != self.alarms.is_present(name):
                    self._changes(pending, self._last_window(),
                                  self.alarms.set_condition(name, present, self._now_s(), str(detail)))

    def _now_s(self) -> float:
        """Signal time now (:class:`SignalClock`): never goes back."""
        return self.signal_clock.now(time.monotonic())

    def _link_event(self, ev: LinkEvent, pending: Pending) -> None:
        t_s = (ev.sample_index - self.origin) / self.fs_hz if ev.sample_index is not None and self.fs_hz else self._now_s()
        self._event(pending, TechnicalEvent(t_s, ev.host_time, ev.kind, ev.detail, ev.sample_index, ev.length))
        if ev.kind == "disconnect" and self._link != "disconnected":
            self._link = "disconnected"
            self._publish(self._status())
        if ev.kind == "reconnect":  # silence is measured from here, not from the last block before the loss
            self._connected_since = time.monotonic()

    def _link_conditions(self, pending: Pending) -> None:
        """Live only: device disconnected, no data, inference stale (each after its after_s)."""
        now, t_s, tech = time.monotonic(), self._now_s(), self.config.technical
        idx = self.next_window - 1
        connected = self.source.connected
        if connected:
            self._disconnected_since = None
            if self._connected_since is None:
                self._connected_since = now
        elif self._disconnected_since is None:
            self._disconnected_since = now
            self._connected_since = None
            self._link = "disconnected"
            self._publish(self._status())
        down = self._disconnected_since is not None and now - self._disconnected_since >= tech["device_disconnected"].after_s
        if down != self.alarms.is_present("device_disconnected"):
            self._changes(pending, idx, self.alarms.set_condition("device_disconnected", down, t_s, self.source.description))
        # silent since the last block or the (re)connection, whichever came later: the instant between a
        # reconnect and its first block is not "no data" (it would be raised and cleared ms apart)
        silent_since = max(self._last_block_mono or self._started_mono, self._connected_since or now)
        no_data = connected and now - silent_since >= tech["no_data"].after_s
        if no_data != self.alarms.is_present("no_data"):
            self._changes(pending, idx, self.alarms.set_condition("no_data", no_data, t_s, f"for {now - silent_since:.0f} s"))
        if self.alarms.is_present("analysis_behind") and t_s >= self._behind_until_s:
            self._changes(pending, idx, self.alarms.set_condition("analysis_behind", False, t_s))
        if self.ring is not None and self.analyser is not None:
            lag_s = (self.ring.end - self._window_start(self.next_window - 1) - self.analyser.window_n) / self.fs_hz
            stale = self.next_window > 0 and lag_s > self.hop_s + tech["inference_stale"].after_s
            if stale != self.alarms.is_present("inference_stale"):
                self._changes(pending, idx, self.alarms.set_condition("inference_stale", stale, t_s,
                                                                      f"analysis {lag_s:.0f} s behind the signal"))

    def _due_windows(self) -> int:
        """Complete windows not analysed yet."""
        assert self.ring is not None and self.analyser is not None
        over = self.ring.end - self._window_start(self.next_window) - self.analyser.window_n
        return 0 if over < 0 else over // self.hop_n + 1

    def _forget_arrivals(self) -> None:
        """Drop the block arrivals that end before the oldest window not analysed yet (amortised O(1))."""
        assert self.analyser is not None
        first = self._window_start(self.next_window)
        while self._arrivals and self._arrivals[0][0] < first:
            self._arrivals.popleft()

    def _waiting_s(self, now: float) -> float:
        """How long (s) the oldest due window has waited since its last sample arrived from the device
        (``Block.host_time``, wall clock: the time it spent in the source's queue counts)."""
        assert self.analyser is not None
        end = self._window_start(self.next_window) + self.analyser.window_n
        self._forget_arrivals()
        for stop, arrived in self._arrivals:
            if stop >= end:
                return now - arrived
        return 0.0

    def _skip_behind(self, pending: Pending) -> None:
        """Live: inference fell behind; skip every due window but the newest (never samples: the ring,
        the waveform and the log's technical events keep them), count it and raise analysis_behind."""
        due = self._due_windows()
        if due < 2:  # the usual case, checked first: _waiting_s scans the block arrivals (1.4 % of a core live)
            self._forget_arrivals()  # but they are still trimmed, or they would pile up for the whole session
            return
        waited = self._waiting_s(time.time())
        if waited <= self.settings.max_lag_s:
            return
        first, count = self.next_window, due - 1
        self.next_window += count
        self.summary.skipped_windows += count
        t_s = self._now_s()
        detail = f"windows {first}-{first + count - 1} not analysed: the oldest waited {waited:.1f} s (> {self.settings.max_lag_s:g} s)"
        log.warning("analysis behind the signal: %s", detail)
        self._event(pending, TechnicalEvent(t_s, self.clock(), "windows_skipped", detail,
                                            self._window_start(first), count * self.hop_n))
        self._behind_until_s = t_s + ANALYSIS_BEHIND_HOLD_HOPS * self.hop_s
        if not self.alarms.is_present("analysis_behind"):
            self._changes(pending, first - 1, self.alarms.set_condition(
                "analysis_behind", True, t_s, f"{count} analysis windows skipped, inference too slow"))

    def _command_time(self) -> float:
        """Signal time of a command: now (live), or the end of the last analysed window (replay)."""
        if self.source.realtime or self.analyser is None or self._last_window() < 0:
            return self._now_s()
        return (self._window_start(self._last_window()) - self.origin) / self.fs_hz + self.analyser.window_s

    def _apply_commands(self, pending: Pending) -> None:
        while True:
            try:
                kind, alarm, who = self._commands.get_nowait()
            except queue.Empty:
                return
            self._changes(pending, self._last_window(), self.alarms.command(kind, alarm, who, self._command_time()))
