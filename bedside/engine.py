"""The bedside engine: source -> ring buffer -> windows -> signal core + model -> alarms -> log -> listeners.

A library with one loop, the same for replay and live (only the :mod:`bedside.sources` object
differs). Every hop (5 s by default, from the model bundle) the last 10 s window goes through the
signal core (gap, lead-off, quality, heart rate) and the bundle; risks are smoothed; the alarm
system decides; what the iteration produced is committed to SQLite in one transaction and only
then announced to listeners. All windows that are due are scored in one inference call, so a fast
replay batches and a live run scores each window as it completes, through the same lines.

API (what ``bedside.cli`` and the terminal UI use)::

    engine = Engine(source, store, config, EngineSettings(bed_id="bed-7"), bundle=bundle)
    unsubscribe = engine.subscribe(callback)   # callback(event) from the engine's thread, for every
                                               # Samples, WindowResult, AlarmChange, Status (bedside.events)
    summary = engine.run()                     # blocks until the source ends or stop(); a RunSummary
    engine.start() / engine.stop()             # or run it in its own thread ("bedside-engine")
    engine.acknowledge("edema", who="rn.lee")  # or alarm=None for all; applied on the engine's thread,
    engine.pause_audio(who="rn.lee")           # committed, then announced as AlarmChange
    engine.active_alarms()                     # latest AlarmChange of every alarm not cleared
    engine.bundle                              # the model bundle (labels, thresholds) or None

Listeners must return quickly (the UI hops to its own thread); an exception in one is logged and
counted, never allowed to stop the engine. When the database cannot be written the engine keeps
monitoring, raises the technical alarm ``storage_failing``, announces what it could not commit (an
alarm must sound even when its log fails) and writes the backlog once the disk takes it again.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from bedside import __version__
from bedside.alarm_config import AlarmConfig
from bedside.analysis import Timings, WindowAnalyser, WindowInput
from bedside.bundle import Bundle
from bedside.bundle_alarms import alarm_system_for
from bedside.events import AlarmChange, AlarmState, Samples, Status, WindowResult
from bedside.leads import CANONICAL_LEADS
from bedside.preprocess import DEFAULT_RECIPE, Recipe
from bedside.resume import rebuild, resume_key
from bedside.ring import ContactLog, SampleRing
from bedside.sources import Block, LinkEvent, Source
from bedside.store import Store, StoreError, TechnicalEvent
from bedside.watchdog import Notifier

log = logging.getLogger(__name__)

#: Windows re-analysed (heart rate only) before a resumed replay continues, to rebuild the beat train.
RESUME_WARMUP_WINDOWS = 6
#: Windows kept in memory when the database fails, before the oldest are dropped (and counted).
BACKLOG_WINDOWS = 20_000


@dataclass(frozen=True)
class EngineSettings:
    bed_id: str
    encounter_id: str | None = None
    hop_s: float | None = None  # None: the bundle's hop_s (5 s without a bundle)
    max_batch: int = 16  # windows scored in one inference call at most (larger batches gain nothing on CPU)
    poll_s: float = 0.2  # longest wait for the source before timers and link checks run
    resume: bool = True  # replay: continue an unfinished session of the same record, bundle and settings


@dataclass
class RunSummary:
    session_id: int | None
    db_path: str
    end_reason: str = ""
    resumed_at_window: int | None = None  # a resumed replay: the first window this run analysed
    windows: int = 0
    scored: int = 0
    not_scored: Counter = field(default_factory=Counter)  # reason -> windows
    transitions: list[AlarmChange] = field(default_factory=list)
    technical_events: Counter = field(default_factory=Counter)  # kind -> count
    samples: int = 0
    gap_samples: int = 0
    signal_s: float = 0.0
    wall_s: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)
    listener_errors: int = 0
    storage_failures: int = 0
    dropped_windows: int = 0
    unsaved_windows: int = 0  # analysed but never written to the log (dropped ones included)
    unsaved_transitions: int = 0  # announced but never written to the log

    @property
    def log_complete(self) -> bool:
        """Everything analysed and announced is in the log."""
        return not (self.unsaved_windows or self.unsaved_transitions)


@dataclass
class _Pending:
    windows: list[WindowResult] = field(default_factory=list)
    changes: list[tuple[int, AlarmChange]] = field(default_factory=list)  # (window index, change)
    events: list[tuple[int, TechnicalEvent]] = field(default_factory=list)  # (seq, event)

    def __bool__(self) -> bool:
        return bool(self.windows or self.changes or self.events)


class Engine:
    """The processing loop (see the module docstring)."""

    def __init__(self, source: Source, store: Store, config: AlarmConfig, settings: EngineSettings, *,
                 bundle: Bundle | None = None, bundle_error: str | None = None, recipe: Recipe | None = None,
                 notifier: Notifier | None = None, clock: Callable[[], float] = time.time,
                 settings_error: str | None = None):
        self.source, self.store, self.config, self.settings = source, store, config, settings
        self.bundle, self.bundle_error = bundle, bundle_error
        self.settings_error = settings_error  # why the configured alarm settings were refused (defaults in force)
        self.recipe = bundle.recipe if bundle is not None else (recipe or DEFAULT_RECIPE)
        meta_hop = float(bundle.metadata.get("hop_s", 5.0)) if bundle is not None else 5.0
        self.hop_s = settings.hop_s or meta_hop
        if self.hop_s <= 0:
            raise ValueError(f"hop_s={self.hop_s} must be positive")
        self.notifier = notifier or Notifier(None)
        self.clock = clock
        self.alarms = alarm_system_for(config, bundle, self.hop_s)  # none for labels the bundle does not validate
        self.timings = Timings()
        self._subscribers: list[Callable[[Any], None]] = []
        self._lock = threading.Lock()
        self._commands: queue.SimpleQueue[tuple[str, str | None, str]] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._active: dict[str, AlarmChange] = {}
        self.summary = RunSummary(None, str(store.path))
        self.error: BaseException | None = None
        # set when the first samples arrive (the rate may only be known then)
        self.fs_hz: float | None = None
        self.ring: SampleRing | None = None
        self.contact: ContactLog | None = None
        self.analyser: WindowAnalyser | None = None
        self.origin = 0  # sample index of signal time 0
        self.next_window = 0
        self.session_id: int | None = None
        self._seq = {"alarm_transitions": 0, "technical_events": 0}
        self._backlog = _Pending()
        self._db_state = "ok"
        self._link = "replay" if source.kind == "replay" else "connecting"
        self._last_block_mono: float | None = None
        self._disconnected_since: float | None = time.monotonic() if source.realtime else None
        self._started_mono = time.monotonic()
        self.hop_n = 0
        self._warmup_until = 0  # windows below this index are re-read for the beat train only (resume)
        self.already_complete = False  # a replay whose session is already complete in the log

    # -- public API --------------------------------------------------------------------------------

    def subscribe(self, callback: Callable[[Any], None]) -> Callable[[], None]:
        """Call ``callback(event)`` for every event; returns a function that unsubscribes."""
        with self._lock:
            self._subscribers = [*self._subscribers, callback]

        def unsubscribe() -> None:
            with self._lock:
                self._subscribers = [s for s in self._subscribers if s is not callback]
        return unsubscribe

    def acknowledge(self, alarm: str | None, who: str) -> None:
        """Acknowledge ``alarm`` (None: every alarm); applied, logged and announced by the engine."""
        if alarm is not None and alarm not in self.alarms.machines:
            raise KeyError(f"no alarm named {alarm!r}; alarms: {', '.join(self.alarms.machines)}")
        self._commands.put(("acknowledge", alarm, who))

    def pause_audio(self, who: str) -> None:
        """AUDIO PAUSED for every sounding alarm (``audio.pause_s``, 2 min by default)."""
        self._commands.put(("pause_audio", None, who))

    def active_alarms(self) -> list[AlarmChange]:
        with self._lock:
            return list(self._active.values())

    def start(self) -> threading.Thread:
        """Run the engine in its own thread; its result lands in ``summary`` (or ``error``)."""
        def target() -> None:
            try:
                self.run()
            except BaseException as exc:  # kept for the caller; logged here
                self.error = exc
                log.exception("engine stopped with an error")
        self._thread = threading.Thread(target=target, name="bedside-engine", daemon=True)
        self._thread.start()
        return self._thread

    def stop(self, timeout_s: float | None = 10.0) -> None:
        """Ask the loop to finish (it commits what it has) and wait for the thread, if any."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout_s)

    def close(self) -> None:
        """Close the log (after :meth:`run` returned)."""
        self.store.close()

    def run(self) -> RunSummary:
        """Process until the source ends or :meth:`stop`; returns the summary."""
        t0 = time.perf_counter()
        reason = "stopped"
        try:
            self._open_session()
            if self.already_complete:
                reason = "already complete"
                return self.summary
            if self.next_window > 0:  # a resumed replay: re-read a few windows before the first new one
                self._warmup_until = self.next_window
                self.next_window = max(0, self.next_window - RESUME_WARMUP_WINDOWS)
                hop_n = max(1, int(round(self.hop_s * self.source.fs_hz)))
                self.source.seek(self.next_window * hop_n)  # type: ignore[attr-defined]
            self.source.open()
            self.notifier.ready(f"monitoring bed {self.settings.bed_id}")
            while not self._stop.is_set():
                t = time.perf_counter()
                items = self.source.poll(self.settings.poll_s)
                self.timings.read += time.perf_counter() - t
                if items is None:
                    reason = "complete"
                    break
                self._step(items)
            self._step([])
        except BaseException as exc:
            reason = self._without_path(f"error: {type(exc).__name__}: {exc}")[:300]
            raise
        finally:
            self.notifier.stopping()
            self.source.close()
            self._close_session(reason)
            self.summary.wall_s = time.perf_counter() - t0
            self.summary.timings = self.timings.as_dict()
        return self.summary

    # -- session -----------------------------------------------------------------------------------

    def _resume_key(self) -> str | None:
        record = getattr(self.source, "record", None)
        if record is None or not self.settings.resume:
            return None
        return resume_key(record, self.bundle.sha256 if self.bundle else None, self.hop_s, self.config.sha256,
                          self.settings.bed_id, self.settings.encounter_id)

    def _open_session(self) -> None:
        key = self._resume_key()
        now = self.clock()
        previous = self.store.latest_session(key) if key else None
        if previous is not None and previous["end_reason"] == "complete":
            self.session_id = self.summary.session_id = previous["id"]  # replayed before: nothing to add
            self.already_complete = True
            return
        if previous is not None and self._resume(previous["id"]):
            self.session_id = previous["id"]
        else:
            if self.source.kind == "live":
                closed = self.store.close_interrupted(self.settings.bed_id, now)
                if closed:
                    log.warning("sessions %s of bed %s ended without closing (process killed?): marked interrupted",
                                closed, self.settings.bed_id)
            self.session_id = self.store.open_session(
                bed_id=self.settings.bed_id, encounter_id=self.settings.encounter_id, source_kind=self.source.kind,
                device=self.source.description, fs_hz=self.source.fs_hz,
                bundle_sha256=self.bundle.sha256 if self.bundle else None,
                bundle_version=self.bundle.version if self.bundle else None,
                provider=self.bundle.provider if self.bundle else None, hop_s=self.hop_s,
                config_sha256=self.config.sha256, resume_key=key, engine_version=__version__, wall_time=now)
        self.summary.session_id = self.session_id
        pending = _Pending()
        if self.bundle is None and not self.alarms.is_present("bundle_refused"):
            self._changes(pending, -1, self.alarms.set_condition(
                "bundle_refused", True, 0.0, self.bundle_error or "no model bundle given"))
        if self.settings_error and not self.alarms.is_present("settings_refused"):
            self._changes(pending, -1, self.alarms.set_condition("settings_refused", True, 0.0, self.settings_error))
        self._flush(pending)
        self._publish(self._status())

    def _resume(self, session_id: int) -> bool:
        """Continue an unfinished replay: rebuild its alarm state from the log (False: start anew)."""
        logged = self.store.transitions(session_id)
        windows = self.store.windows(session_id)
        if not rebuild(self.alarms, windows, logged, self.bundle_error if self.bundle is None else None):
            log.warning("session %s does not replay to its logged transitions: starting a new session", session_id)
            self.alarms = alarm_system_for(self.config, self.bundle, self.hop_s)
            return False
        for _, c in logged:
            self._note_active(c)
        self._seq["alarm_transitions"] = self.store.max_seq("alarm_transitions", session_id)
        self._seq["technical_events"] = self.store.max_seq("technical_events", session_id)
        self.next_window = len(windows)
        self.summary.resumed_at_window = self.next_window
        return True

    def _without_path(self, text: str) -> str:
        """``text`` with the replayed record's folder removed: the log names a record, never a path."""
        record = getattr(self.source, "record", None)
        path = getattr(record, "path", None)
        return text.replace(str(path), self.source.description) if path else text

    def _close_session(self, reason: str) -> None:
        self.summary.end_reason = reason
        if self.session_id is None or self.already_complete:
            return
        try:
            if self._backlog:
                self.store.commit(self.session_id, self._backlog.windows, self.clock(), self._backlog.changes,
                                  self._backlog.events)
                self._backlog = _Pending()
            self.store.end_session(self.session_id, reason, self.clock())
        except StoreError as exc:
            log.error("could not close session %s in the log: %s", self.session_id, exc)
        self.summary.unsaved_windows = len(self._backlog.windows) + self.summary.dropped_windows
        self.summary.unsaved_transitions = len(self._backlog.changes)
        self._link = "ended"
        self._publish(self._status())

    # -- one iteration -----------------------------------------------------------------------------

    def _step(self, items: list[Block | LinkEvent]) -> None:
        pending = _Pending()
        for item in items:
            if isinstance(item, LinkEvent):
                self._link_event(item, pending)
            else:
                self._ingest(item, pending)
        self._apply_commands(pending)
        while self._analyse_due(pending):
            pass
        if self.source.realtime:
            self._link_conditions(pending)
            self._changes(pending, self.next_window - 1, self.alarms.tick(self._now_s()))
        self._flush(pending)
        self.notifier.ping()

    def _setup(self, fs_hz: float, first_index: int) -> None:
        """Size the ring and the analyser once the first samples (and so the rate) are known."""
        self.fs_hz = fs_hz
        self.analyser = WindowAnalyser(fs_hz, self.recipe, self.config, self.bundle, self.bundle_error, self.timings)
        self.hop_n = max(1, int(round(self.hop_s * fs_hz)))
        chunk = getattr(self.source, "chunk_n", 0)
        capacity = self.analyser.window_n + max(chunk, int(60 * fs_hz)) + self.hop_n
        # replay: signal time is the record's sample number; live: time 0 is the first sample received
        self.origin = 0 if self.source.kind == "replay" else first_index - self.next_window * self.hop_n
        self.ring = SampleRing(len(CANONICAL_LEADS), capacity, start_index=first_index)
        self.contact = ContactLog(capacity)

    def _window_start(self, k: int) -> int:
        return self.origin + k * self.hop_n

    def _ingest(self, block: Block, pending: _Pending) -> None:
        if self.ring is None:
            self._setup(block.fs_hz, block.first_index)
        assert self.ring is not None and self.analyser is not None and self.contact is not None
        if block.fs_hz != self.fs_hz:
            self._event(pending, TechnicalEvent(self._now_s(), self.clock(), "rate_change",
                                                f"{block.fs_hz:g} Hz block in a {self.fs_hz:g} Hz session dropped",
                                                block.first_index, block.data_mv.shape[1]))
            return
        first, n = block.first_index, block.data_mv.shape[1]
        self.summary.samples += n
        self._last_block_mono = time.monotonic()
        if self._link in ("connecting", "disconnected"):
            self._link = "connected"
            self._publish(self._status())
        ring = self.ring
        if first > ring.end:  # missing samples: NaN, analysed as a gap, never zero-filled
            self.summary.gap_samples += first - ring.end
        while ring.end < first:
            fill = min(first - ring.end, self._room(pending))
            ring.append(ring.end, np.full((ring.buf.shape[0], fill), np.nan, dtype=np.float32))
        pos = max(0, ring.end - first)  # samples already held (a repeat) are not written twice
        ring.overlap_samples += min(pos, n)
        while pos < n:
            piece = block.data_mv[:, pos:pos + self._room(pending)]
            ring.append(first + pos, piece)
            pos += piece.shape[1]
        self.contact.add(first, first + n, block.lead_off)
        if self._subscribers:
            t = time.perf_counter()
            self._publish(Samples((block.first_index - self.origin) / self.fs_hz, self.fs_hz,
                                  block.first_index - self.origin, block.data_mv))
            self.timings.publish += time.perf_counter() - t

    def _room(self, pending: _Pending) -> int:
        """Samples the ring can take without overwriting the next window; analyses due windows to make room."""
        assert self.ring is not None
        while True:
            room = self.ring.capacity - (self.ring.end - self._window_start(self.next_window))
            if room > 0:
                return room
            if not self._analyse_due(pending):  # cannot happen: the ring holds more than a window
                raise RuntimeError("ring buffer full with no window due")

    def _analyse_due(self, pending: _Pending) -> bool:
        """Analyse every complete window (up to max_batch); False when none was due."""
        if self.ring is None or self.analyser is None or self.contact is None:
            return False
        inputs: list[WindowInput] = []
        n = self.analyser.window_n
        while len(inputs) < self.settings.max_batch:
            k = self.next_window
            start = self._window_start(k)
            if start + n > self.ring.end:
                break
            if start < self.ring.start:  # fell out of the ring (cannot happen with the room check)
                raise RuntimeError(f"window {k} at sample {start} was overwritten before analysis")
            inputs.append(WindowInput(k, (start - self.origin) / self.fs_hz, self.ring.read(start, start + n),
                                      self.contact.query(start, start + n)))
            self.next_window += 1
        if not inputs:
            return False
        warm = [w for w in inputs if w.index < self._warmup_until]
        if warm:
            self.analyser.analyse(warm, infer=False)
        results = self.analyser.analyse([w for w in inputs if w.index >= self._warmup_until])
        t = time.perf_counter()
        for w in results:
            self._changes(pending, w.index, self.alarms.tick(w.t_s))
            w = replace(w, smoothed=self.alarms.smooth(w))
            pending.windows.append(w)
            self._changes(pending, w.index, self.alarms.on_window(w))
            self.summary.windows += 1
            if w.scored:
                self.summary.scored += 1
            else:
                self.summary.not_scored[w.reason] += 1
        self.summary.signal_s = max(self.summary.signal_s, inputs[-1].start_s + self.analyser.window_s)
        self.timings.alarms += time.perf_counter() - t
        return True

    # -- link, commands, timers --------------------------------------------------------------------

    def _now_s(self) -> float:
        """Signal time now: the newest sample's time, running on the wall clock while none arrive (live)."""
        if self.ring is None or self.fs_hz is None:
            return 0.0
        t = (self.ring.end - self.origin) / self.fs_hz
        if self.source.realtime and self._last_block_mono is not None:
            t += time.monotonic() - self._last_block_mono
        return t

    def _link_event(self, ev: LinkEvent, pending: _Pending) -> None:
        t_s = (ev.sample_index - self.origin) / self.fs_hz if ev.sample_index is not None and self.fs_hz else self._now_s()
        self._event(pending, TechnicalEvent(t_s, ev.host_time, ev.kind, ev.detail, ev.sample_index, ev.length))
        if ev.kind == "disconnect" and self._link != "disconnected":
            self._link = "disconnected"
            self._publish(self._status())

    def _link_conditions(self, pending: _Pending) -> None:
        """Live only: device disconnected, no data, inference stale (each after its after_s)."""
        now, t_s, tech = time.monotonic(), self._now_s(), self.config.technical
        idx = self.next_window - 1
        connected = self.source.connected
        if connected:
            self._disconnected_since = None
        elif self._disconnected_since is None:
            self._disconnected_since = now
            self._link = "disconnected"
            self._publish(self._status())
        down = self._disconnected_since is not None and now - self._disconnected_since >= tech["device_disconnected"].after_s
        if down != self.alarms.is_present("device_disconnected"):
            self._changes(pending, idx, self.alarms.set_condition("device_disconnected", down, t_s, self.source.description))
        silent_since = self._last_block_mono if self._last_block_mono is not None else self._started_mono
        no_data = connected and now - silent_since >= tech["no_data"].after_s
        if no_data != self.alarms.is_present("no_data"):
            self._changes(pending, idx, self.alarms.set_condition("no_data", no_data, t_s, f"for {now - silent_since:.0f} s"))
        if self.ring is not None and self.analyser is not None:
            lag_s = (self.ring.end - self._window_start(self.next_window - 1) - self.analyser.window_n) / self.fs_hz
            stale = self.next_window > 0 and lag_s > self.hop_s + tech["inference_stale"].after_s
            if stale != self.alarms.is_present("inference_stale"):
                self._changes(pending, idx, self.alarms.set_condition("inference_stale", stale, t_s,
                                                                      f"analysis {lag_s:.0f} s behind the signal"))

    def _command_time(self) -> float:
        """Signal time of a command: now (live), or the end of the last analysed window (replay)."""
        if self.source.realtime or self.analyser is None or self.next_window == 0:
            return self._now_s()
        return (self._window_start(self.next_window - 1) - self.origin) / self.fs_hz + self.analyser.window_s

    def _apply_commands(self, pending: _Pending) -> None:
        while True:
            try:
                kind, alarm, who = self._commands.get_nowait()
            except queue.Empty:
                return
            self._changes(pending, self.next_window - 1, self.alarms.command(kind, alarm, who, self._command_time()))

    # -- commit, then announce ---------------------------------------------------------------------

    def _changes(self, pending: _Pending, window_index: int, changes: list[AlarmChange]) -> None:
        for c in changes:
            self._seq["alarm_transitions"] += 1
            pending.changes.append((window_index, replace(c, seq=self._seq["alarm_transitions"])))

    def _event(self, pending: _Pending, event: TechnicalEvent) -> None:
        self._seq["technical_events"] += 1
        pending.events.append((self._seq["technical_events"], event))
        self.summary.technical_events[event.kind] += 1

    def _flush(self, pending: _Pending) -> None:
        """Commit the backlog and this iteration in one transaction, then announce them."""
        if not pending and not self._backlog:
            return
        wall = self.clock()
        pending.changes = [(i, replace(c, wall_time=wall)) for i, c in pending.changes]
        batch = _Pending(self._backlog.windows + pending.windows, self._backlog.changes + pending.changes,
                         self._backlog.events + pending.events)
        t = time.perf_counter()
        try:
            assert self.session_id is not None
            self.store.commit(self.session_id, batch.windows, wall, batch.changes, batch.events)
            self._backlog = _Pending()
            failed = None
        except StoreError as exc:
            self.summary.storage_failures += 1
            failed = str(exc)
            self._backlog = batch
            if len(batch.windows) > BACKLOG_WINDOWS:
                drop = len(batch.windows) - BACKLOG_WINDOWS
                self.summary.dropped_windows += drop
                del batch.windows[:drop]
                log.error("alarm log unwritable: %d analysed windows dropped from memory", drop)
        self.timings.logging += time.perf_counter() - t
        if (failed is not None) != self.alarms.is_present("storage_failing"):
            extra = _Pending()
            self._changes(extra, self.next_window - 1,
                          self.alarms.set_condition("storage_failing", failed is not None, self._now_s(), failed or ""))
            extra.changes = [(i, replace(c, wall_time=wall)) for i, c in extra.changes]
            if failed is None:  # recovered: log the all-clear too before announcing it
                try:
                    self.store.commit(self.session_id, [], wall, extra.changes, [])
                except StoreError:
                    self._backlog.changes += extra.changes
            else:
                self._backlog.changes += extra.changes
            pending.changes += extra.changes
            self._db_state = "ok" if failed is None else f"failing: {failed}"
            self._publish(self._status())
        t = time.perf_counter()
        for w in pending.windows:
            self._publish(w)
        for _, c in pending.changes:
            self._note_active(c)
            self.summary.transitions.append(c)
            self._publish(c)
        self.timings.publish += time.perf_counter() - t

    def _note_active(self, c: AlarmChange) -> None:
        with self._lock:
            if c.state == AlarmState.CLEARED:
                self._active.pop(c.alarm, None)
            else:
                self._active[c.alarm] = c

    def _status(self) -> Status:
        return Status(bed_id=self.settings.bed_id, device=self.source.description, link=self._link,
                      frames_lost=self.source.frames_lost,
                      bundle=self.bundle.version if self.bundle else f"none ({self.bundle_error or 'not given'})",
                      bundle_sha256=self.bundle.sha256 if self.bundle else "", provider=self.bundle.provider if self.bundle else "",
                      db=self._db_state, session_id=self.session_id)

    def _publish(self, event: Any) -> None:
        for callback in self._subscribers:
            try:
                callback(event)
            except Exception:
                self.summary.listener_errors += 1
                if self.summary.listener_errors in (1, 10, 100, 1000):
                    log.exception("an engine listener failed (%d times); the engine carries on",
                                  self.summary.listener_errors)
