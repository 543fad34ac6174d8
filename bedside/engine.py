"""The bedside engine: source -> ring buffer -> windows -> signal core + model -> alarms -> log -> listeners.

A library with one loop, the same for replay and live (only the :mod:`bedside.sources` object
differs). Every hop (5 s by default, from the model bundle) the last 10 s window goes through the
signal core (gap, lead-off, quality, heart rate) and the bundle; risks are smoothed; the alarm
system decides; what the iteration produced is committed to SQLite in one transaction and only
then announced to listeners. All windows that are due are scored in one inference call, so a fast
replay batches and a live run scores each window as it completes, through the same lines. A replay read
as fast as it is taken scores each batch on a worker thread while the next is conditioned, results in
window order; samples are conditioned once as they arrive where the rate allows (``EngineSettings``).

API (what ``bedside.cli`` and the terminal UI use)::

    engine = Engine(source, store, config, EngineSettings(bed_id="bed-7"), bundle=bundle)
    unsubscribe = engine.subscribe(callback)   # callback(event) from the engine's thread, for every
                                               # Samples, WindowResult, AlarmChange, Status (bedside.events)
    summary = engine.run()                     # blocks until the source ends or stop(); a RunSummary
    engine.start() / engine.stop()             # or run it in its own thread ("bedside-engine")
    engine.acknowledge("edema", who="rn.lee")  # or alarm=None for all; applied on the engine's thread,
    engine.pause_audio(who="rn.lee")           # committed, then announced as AlarmChange
    engine.active_alarms()                     # latest AlarmChange of every alarm not cleared
    engine.add_condition_source(fn)            # fn() -> {technical alarm: (present, detail)}, every iteration
    engine.bundle                              # the model bundle (labels, thresholds) or None

Listeners must return quickly (the UI hops to its own thread); an exception in one is logged and
counted, never allowed to stop the engine. When the database cannot be written the engine keeps
monitoring, raises the technical alarm ``storage_failing``, announces what it could not commit (an
alarm must sound even when its log fails) and writes the backlog once the disk takes it again.
Live, when inference falls behind, analysis windows are skipped (counted, ``analysis_behind``), never
samples. The session, link and commit parts live in ``engine_session``, ``engine_link`` and
``engine_commit`` (mixins of :class:`Engine`); docs/engine.md describes them all.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from bedside.alarm_config import AlarmConfig
from bedside.analysis import Inference, PreparedBatch, Timings, WindowAnalyser, WindowInput
from bedside.bundle import Bundle
from bedside.bundle_alarms import alarm_system_for
from bedside.engine_commit import BACKLOG_WINDOWS, CommitMixin, Pending
from bedside.engine_link import ENGINE_CONDITIONS, ConditionSource, LinkMixin, SignalClock
from bedside.engine_session import SessionMixin
from bedside.events import AlarmChange, Samples
from bedside.leads import CANONICAL_LEADS
from bedside.preprocess import DEFAULT_RECIPE, Recipe
from bedside.ring import ContactLog, GapLog, SampleRing
from bedside.sources import Block, LinkEvent, Source
from bedside.store import Store, TechnicalEvent
from bedside.stream_condition import StreamConditioner
from bedside.watchdog import Notifier

__all__ = ["BACKLOG_WINDOWS", "ENGINE_CONDITIONS", "ConditionSource", "Engine", "EngineSettings", "RunSummary"]

log = logging.getLogger(__name__)

#: Windows re-analysed (heart rate only) before a resumed replay continues, to rebuild the beat train.
RESUME_WARMUP_WINDOWS = 6


@dataclass(frozen=True)
class EngineSettings:
    bed_id: str
    encounter_id: str | None = None
    hop_s: float | None = None  # None: the bundle's hop_s (5 s without a bundle)
    max_batch: int = 16  # windows scored in one inference call at most (larger batches gain nothing on CPU)
    poll_s: float = 0.2  # longest wait for the source before timers and link checks run
    resume: bool = True  # replay: continue an unfinished session of the same record, bundle and settings
    # live: a due window that has waited longer than this (s, wall clock) for analysis is skipped, with every
    # other waiting window but the newest (inference fell behind; counted, logged, alarm analysis_behind)
    max_lag_s: float = 15.0
    # live: a latched, unacknowledged alarm of the bed's previous session is restored when this session
    # starts within this many seconds (wall clock) of that session's last activity; 0 turns it off
    carry_over_s: float = 300.0
    # replay read as fast as taken: a batch is scored on a worker thread (onnxruntime releases the GIL)
    # while the engine conditions the next one; results still go through the alarms in window order.
    # Live and paced replays score each batch on the engine's thread (a window's result is never held back).
    overlap_inference: bool = True
    # batches scored at once on that many worker threads (overlap_inference only; results still in window
    # order). 1 with 2 onnxruntime threads per call, or 2 with 1 each: BENCHMARKS.md "Replay scheduling"
    inference_workers: int = 1
    # condition each sample once as it arrives (bedside.stream_condition, bit-identical to condition() per
    # window) where the rate and hop allow; False: condition() on every window
    stream_condition: bool = True

    def __post_init__(self) -> None:
        if self.inference_workers < 1 or self.max_batch < 1:
            raise ValueError(f"inference_workers={self.inference_workers} and max_batch={self.max_batch} must be >= 1")


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
    condition_source_errors: int = 0  # calls of a condition source that raised or returned a bad value
    storage_failures: int = 0
    dropped_windows: int = 0
    skipped_windows: int = 0  # live: windows never analysed because inference fell behind (samples all kept)
    unsaved_windows: int = 0  # analysed but never written to the log (dropped ones included)
    unsaved_transitions: int = 0  # announced but never written to the log

    @property
    def log_complete(self) -> bool:
        """Everything analysed and announced is in the log."""
        return not (self.unsaved_windows or self.unsaved_transitions)


class Engine(SessionMixin, LinkMixin, CommitMixin):
    """The processing loop (see the module docstring); the session, link and commit parts are mixins
    from ``bedside.engine_session``, ``bedside.engine_link`` and ``bedside.engine_commit``."""

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
        self._backlog = Pending()
        self._db_state = "ok"
        self._link = "replay" if source.kind == "replay" else "connecting"
        self._last_block_mono: float | None = None
        self._connected_since: float | None = None  # monotonic time the link last came up (live)
        self.signal_clock = SignalClock(source.realtime)
        self._arrivals: deque[tuple[int, float]] = deque()  # (sample index one past a block, its host_time)
        self._behind_until_s = 0.0  # analysis_behind holds until this signal time
        self.gaps: GapLog | None = None
        self._disconnected_since: float | None = time.monotonic() if source.realtime else None
        self._started_mono = time.monotonic()
        self.hop_n = 0
        self._warmup_until = 0  # windows below this index are re-read for the beat train only (resume)
        self.already_complete = False  # a replay whose session is already complete in the log
        self._condition_sources: list[ConditionSource] = []
        self.stream: StreamConditioner | None = None  # set with the ring (settings.stream_condition)
        self._executor: ThreadPoolExecutor | None = None  # the inference worker (overlap_inference, fast replay)
        self._inflight: deque[tuple[PreparedBatch, Future[Inference | None]]] = deque()  # in window order

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
            if self._overlaps():
                self._executor = ThreadPoolExecutor(self.settings.inference_workers,
                                                    thread_name_prefix="bedside-inference")
            self.notifier.ready(f"monitoring bed {self.settings.bed_id}")
            while not self._stop.is_set():
                t = time.perf_counter()
                items = self.source.poll(self.settings.poll_s)
                self.timings.read += time.perf_counter() - t
                if items is None:
                    reason = "complete"
                    break
                self._step(items)
            self._step([], final=not self._stop.is_set())  # stopped: a batch in flight is dropped (never announced)
        except BaseException as exc:
            reason = self._without_path(f"error: {type(exc).__name__}: {exc}")[:300]
            raise
        finally:
            if self._executor is not None:  # after an error: batches in flight are neither logged nor announced
                self._executor.shutdown(wait=True, cancel_futures=True)
                self._executor = None
                self._inflight.clear()
            self.notifier.stopping()
            self.source.close()
            self._close_session(reason)
            self.summary.wall_s = time.perf_counter() - t0
            self.summary.timings = self.timings.as_dict()
        return self.summary

    # -- one iteration -----------------------------------------------------------------------------

    def _overlaps(self) -> bool:
        """Inference on a worker thread: only a replay read as fast as it is taken (see EngineSettings)."""
        return (self.settings.overlap_inference and self.bundle is not None and not self.source.realtime
                and getattr(self.source, "speed", None) is None)

    def _step(self, items: list[Block | LinkEvent], final: bool = False) -> None:
        pending = Pending()
        for item in items:
            if isinstance(item, LinkEvent):
                self._link_event(item, pending)
            else:
                self._ingest(item, pending)
        self._apply_commands(pending)  # after the windows announced so far (not a batch in flight): as without overlap
        self._poll_condition_sources(pending)
        while self._analyse_due(pending):
            pass
        if final:
            self._drain(pending)
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
        self.stream = (StreamConditioner(fs_hz, self.recipe, capacity=capacity, origin=self.origin)
                       if self.settings.stream_condition and StreamConditioner.supports(fs_hz, self.hop_n, self.recipe)
                       else None)
        self.contact = ContactLog(capacity)
        self.gaps = GapLog()

    def _window_start(self, k: int) -> int:
        return self.origin + k * self.hop_n

    def _ingest(self, block: Block, pending: Pending) -> None:
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
        self._arrivals.append((first + n, block.host_time))
        if self._link in ("connecting", "disconnected"):
            self._link = "connected"
            self._publish(self._status())
        ring = self.ring
        if first > ring.end:  # missing samples: NaN, analysed as a gap, never zero-filled
            self.summary.gap_samples += first - ring.end
            self.gaps.add(ring.end, first)
        while ring.end < first:
            fill = min(first - ring.end, self._room(pending))
            ring.append(ring.end, np.full((ring.buf.shape[0], fill), np.nan, dtype=np.float32))
        pos = max(0, ring.end - first)  # samples already held (a repeat) are not written twice
        ring.overlap_samples += min(pos, n)
        while pos < n:
            piece = block.data_mv[:, pos:pos + self._room(pending)]
            ring.append(first + pos, piece)
            if self.stream is not None:  # conditions the stream (in batches of a quarter of the ring)
                t = time.perf_counter()
                self.stream.push(first + pos, piece)
                self.timings.preprocess += time.perf_counter() - t
            pos += piece.shape[1]
        self.contact.add(first, first + n, block.lead_off)
        self.signal_clock.samples((ring.end - self.origin) / self.fs_hz, self._last_block_mono)
        if self._subscribers:
            t = time.perf_counter()
            self._publish(Samples((block.first_index - self.origin) / self.fs_hz, self.fs_hz,
                                  block.first_index - self.origin, block.data_mv))
            self.timings.publish += time.perf_counter() - t

    def _room(self, pending: Pending) -> int:
        """Samples the ring can take without overwriting the next window; analyses due windows to make room."""
        assert self.ring is not None
        while True:
            room = self.ring.capacity - (self.ring.end - self._window_start(self.next_window))
            if room > 0:
                return room
            if not self._analyse_due(pending):  # cannot happen: the ring holds more than a window
                raise RuntimeError("ring buffer full with no window due")

    def _analyse_due(self, pending: Pending) -> bool:
        """Analyse every complete window (up to max_batch); False when none was due."""
        if self.ring is None or self.analyser is None or self.contact is None:
            return False
        if self.source.realtime:
            self._skip_behind(pending)
        inputs = self._due_inputs()
        if not inputs:
            return False
        warm = [w for w in inputs if w.index < self._warmup_until]
        if warm:
            self.analyser.analyse(warm, infer=False)
        batch = self.analyser.prepare([w for w in inputs if w.index >= self._warmup_until])
        if self._executor is None:
            self._commit_results(pending, self.analyser.finish(batch, self.analyser.infer(batch)))
        else:  # scored on a worker while the engine conditions the next batch; a batch per worker at most
            self._inflight.append((batch, self._executor.submit(self.analyser.infer, batch)))
            self._drain(pending, keep=self.settings.inference_workers)
        if warm:
            self.summary.signal_s = max(self.summary.signal_s, warm[-1].start_s + self.analyser.window_s)
        return True

    def _due_inputs(self) -> list[WindowInput]:
        """The complete windows from ``next_window`` on (up to max_batch), read from the ring."""
        assert self.ring is not None and self.analyser is not None and self.contact is not None
        inputs: list[WindowInput] = []
        n = self.analyser.window_n
        while len(inputs) < self.settings.max_batch:
            k = self.next_window
            start = self._window_start(k)
            if start + n > self.ring.end:
                break
            if start < self.ring.start:  # fell out of the ring (cannot happen with the room check)
                raise RuntimeError(f"window {k} at sample {start} was overwritten before analysis")
            x = self.ring.read(start, start + n)
            received = n - int(np.isnan(x).all(axis=0).sum())  # contact is reported with the samples received
            conditioned = None
            if self.stream is not None and received == n:  # only a whole window is conditioned (None: batch)
                t = time.perf_counter()
                conditioned = self.stream.window(start)
                self.timings.preprocess += time.perf_counter() - t
            inputs.append(WindowInput(k, (start - self.origin) / self.fs_hz, x,
                                      self.contact.query(start, start + n, received),
                                      lost_s=self.gaps.lost(start, start + n) / self.fs_hz if self.gaps else 0.0,
                                      conditioned=conditioned))
            self.next_window += 1
        return inputs

    def _drain(self, pending: Pending, keep: int = 0) -> None:
        """Finish the batches scored on the worker, oldest first, until ``keep`` remain in flight."""
        assert self.analyser is not None or not self._inflight
        while len(self._inflight) > keep:
            batch, future = self._inflight.popleft()
            t = time.perf_counter()
            inference = future.result()
            self.timings.inference_wait += time.perf_counter() - t
            self._commit_results(pending, self.analyser.finish(batch, inference))

    def _last_window(self) -> int:
        """Index of the last window whose result has gone through the alarm system (-1: none yet)."""
        return self.next_window - 1 - sum(len(b.windows) for b, _ in self._inflight)

    def _commit_results(self, pending: Pending, results: list) -> None:
        """Windows' results through smoothing and the alarm system, in window order, into ``pending``."""
        t = time.perf_counter()
        for w in results:
            self._changes(pending, w.index, self.alarms.tick(w.t_s))
            w = replace(w, smoothed=self.alarms.smooth(w))
            pending.windows.append(w)
            self._changes(pending, w.index, self.alarms.on_window(w))
            self.summary.windows += 1
            self.summary.signal_s = max(self.summary.signal_s, w.t_s)
            if w.scored:
                self.summary.scored += 1
            else:
                self.summary.not_scored[w.reason] += 1
        self.timings.alarms += time.perf_counter() - t

