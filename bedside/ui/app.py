"""The bedside terminal app (Textual): a view on the engine, attached in the same process.

Public API (used by ``bedside.cli`` for ``bedside replay RECORD --ui`` and ``bedside monitor ... --ui``)::

    from bedside.ui.app import run_ui, MonitorApp, resolve_user

    run_ui(engine_factory: Callable[[], Engine], *, bed_id: str,
           leads: tuple[str, ...] = ("II", "V1", "V5"), user: str | None = None, fps: float = 12.5,
           audio: bool | None = None, gain_mm_per_mv: float | None = None) -> int
        Build the engine in its own thread (so loading a bundle or opening a port never blocks the
        screen), run it there, show the monitor screen until the user quits (Ctrl+Q); return 0, or 1
        when the engine failed or refused to start (its full reason is shown in a dialog, kept in the
        help, and written to stderr once the screen has closed) or the app itself crashed.

    MonitorApp(engine_factory=None, *, bed_id, leads=..., user=None, tz=None, fps=FPS (12.5),
               labels=(), thresholds=None, min_sqi=None, not_validated=(), clock=time.time,
               alarm_config=None, audio=None, gain_mm_per_mv=None)
        The App itself. Without a factory it is a pure view: tests and screenshots feed it events with
        ``app.post_event(event)`` and draw with ``app.tick()``.

Who acknowledges: ``user`` if given, else ``$BEDSIDE_USER``, else the login name (``resolve_user``).

Threads: the engine calls ``post_event`` from its own thread. Sample blocks go straight into a
locked ring buffer (``WaveBuffer``); every other event is queued on a deque that the frame timer
(``fps`` a second, on the UI thread) drains into ``MonitorState`` before redrawing: the UI is never
flooded and never blocks. Acknowledge and pause-audio run ``engine.acknowledge`` / ``engine.pause_audio``
in thread workers; the engine commits them (who and when) to its database and announces the
resulting ``AlarmChange``, which is what changes the screen.
"""

from __future__ import annotations

import getpass
import logging
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import tzinfo
from typing import Any

from textual.app import App
from textual.binding import Binding
from textual.worker import Worker, WorkerState

from bedside.events import AlarmChange, AlarmKind, AlarmState, Priority, Samples
from bedside.leads import LEAD_INDEX
from bedside.ui.alarm_format import SCREEN_ACTIONS
from bedside.ui.dialogs import FailureDialog
from bedside.ui.engine_link import EngineExit as _EngineExit
from bedside.ui.engine_link import EngineLike, engine_display, engine_settings, failure_text
from bedside.ui.engine_link import EngineReady as _EngineReady
from bedside.ui.help_screen import HelpScreen
from bedside.ui.history_screen import HistoryScreen
from bedside.ui.monitor_screen import MonitorScreen
from bedside.ui.monitor_state import MonitorState
from bedside.ui.wave_buffer import WaveBuffer

log = logging.getLogger(__name__)

DEFAULT_LEADS: tuple[str, ...] = ("II", "V1", "V5")
USER_ENV = "BEDSIDE_USER"
#: Seconds of signal the waveform buffer holds (the widest terminal shows at most this much).
WAVE_SECONDS = 30.0
#: Frames a second: 25 dots/s of trace over 12.5 frames/s moves the traces exactly one cell a frame.
FPS = 12.5
#: Log warnings kept for the help screen.
LOG_NOTES = 20
#: Links whose signal time follows the wall clock (a replay's does not).
LIVE_LINKS = ("connected", "disconnected", "reconnecting")
#: Seconds without samples on a connected live link before the traces scroll on into blank.
STALL_S = 1.0
#: Seconds before the same screen failure is logged and raised again (a screen may fail every frame).
SCREEN_ERROR_REPEAT_S = 60.0
#: What a screen redraws when it comes on top (it did not see the frames while another screen was up).
ALL_CHANGED = frozenset({"window", "alarms", "status"})


def resolve_user(user: str | None = None) -> str:
    """Who is at the keyboard: ``user``, else ``$BEDSIDE_USER``, else the login name."""
    if user:
        return user
    if os.environ.get(USER_ENV):
        return os.environ[USER_ENV]
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name (a container without a passwd entry)
        return "unknown"


class _LogNote:
    """A warning or error logged while the screen runs, queued to be shown as a notification."""

    def __init__(self, text: str, severity: str) -> None:
        self.text, self.severity = text, severity


class UiLogHandler(logging.Handler):
    """While the screen owns the terminal, log warnings become notifications instead of stray text.

    Thread-safe and non-blocking (the record is queued for the frame timer); the same message is
    shown at most once per ``repeat_s``.
    """

    def __init__(self, app: MonitorApp, repeat_s: float = 30.0) -> None:
        super().__init__(logging.WARNING)
        self.app, self.repeat_s = app, repeat_s
        self._last: dict[tuple[str, str], float] = {}

    def emit(self, record: logging.LogRecord) -> None:
        try:
            first = record.getMessage().splitlines()[0][:300] if record.getMessage() else ""
            key, now = (record.name, first), time.monotonic()
            if now - self._last.get(key, -1e9) < self.repeat_s:
                return
            if len(self._last) > 500:
                self._last.clear()
            self._last[key] = now
            severity = "error" if record.levelno >= logging.ERROR else "warning"
            self.app._inbox.append(_LogNote(f"{record.name}: {first}", severity))
        except Exception:  # noqa: BLE001 - logging must never fail the caller
            self.handleError(record)


class MonitorApp(App[int]):
    """The bedside monitor. Attributes go down to the widgets, engine events come up as a queue."""

    TITLE = "bedside monitor"
    CSS_PATH = "app.tcss"
    ENABLE_COMMAND_PALETTE = False
    BINDINGS = [Binding("ctrl+q", "quit", "Quit", show=False)]  # the screens show it first; their other keys

    def __init__(self, engine_factory: Callable[[], EngineLike] | None = None, *, bed_id: str,
                 leads: Sequence[str] = DEFAULT_LEADS, user: str | None = None, tz: tzinfo | None = None,
                 fps: float = FPS, labels: Sequence[str] = (), thresholds: dict[str, float] | None = None,
                 min_sqi: float | None = None, not_validated: Sequence[str] = (),
                 clock: Callable[[], float] = time.time, alarm_config: Any = None, audio: bool | None = None,
                 gain_mm_per_mv: float | None = None) -> None:
        super().__init__()
        unknown = [lead for lead in leads if lead not in LEAD_INDEX]
        if unknown:
            raise ValueError(f"unknown lead(s) {', '.join(unknown)}; choose from {', '.join(LEAD_INDEX)}")
        self.engine_factory = engine_factory
        self.engine: EngineLike | None = None
        self.bed_id = bed_id
        self.user = resolve_user(user)
        self.tz = tz
        self.fps = fps
        self.clock = clock
        self.initial_leads = tuple(leads)
        self.state = MonitorState(labels, thresholds, min_sqi=min_sqi, not_validated=not_validated)
        self.audio = audio
        self.gain_mm_per_mv = gain_mm_per_mv
        self._show_settings(engine_display(alarm_config, audio, labels))
        self.failure: str | None = None  # why the engine stopped or refused to start (full text)
        self.buffer = WaveBuffer(WAVE_SECONDS, clock=clock)
        self._inbox: deque[object] = deque()
        self._engine_thread: threading.Thread | None = None
        self._stopping = False
        self.engine_failed = False
        self.dropped_events = 0  # events the callback could not take (counted, shown in the log)
        self.ui_alarms: set[str] = set()  # alarms raised by the UI itself (not in the engine's log)
        self.log_notes: deque[str] = deque(maxlen=LOG_NOTES)  # recent log warnings (help screen)
        self.frames = 0
        self.tick_total_s = 0.0  # time spent in tick() (UI thread), for the soak benchmark
        self.tick_max_s = 0.0
        self._drawn_screen: object | None = None  # the screen the last frame was drawn on
        self._screen_error: tuple[str, str] | None = None  # the last screen failure reported
        self._screen_error_at = -1e9  # and when (time.monotonic)

    # -- lifecycle --------------------------------------------------------------------------------
    def on_mount(self) -> None:
        # Pushed (not the default screen) so that Textual loads the screen's own .tcss.
        self.push_screen(MonitorScreen(self.state, self.buffer, bed_id=self.bed_id, user=self.user,
                                       leads=self.initial_leads, tz=self.tz, gain_mm_per_mv=self.gain_mm_per_mv))
        if self.fps > 0:
            self.set_interval(1 / self.fps, self.tick, name="frame")
        if self.engine_factory is not None:
            self._engine_thread = threading.Thread(target=self._engine_main, name="bedside-engine", daemon=True)
            self._engine_thread.start()

    def _engine_main(self) -> None:
        """The engine's thread: build it, subscribe, run; any exception is queued for the screen."""
        try:
            assert self.engine_factory is not None
            engine = self.engine_factory()
            engine.subscribe(self.post_event)
            self.engine = engine
            settings = engine_settings(engine)
            display = engine_display(getattr(engine, "config", None), self.audio, settings[0])
            self._inbox.append(_EngineReady(*settings, display=display))
            try:
                if not self._stopping:
                    engine.run()
            finally:
                close = getattr(engine, "close", None)  # the engine's log, opened on this thread
                if close is not None:
                    close()
        except BaseException as exc:  # noqa: BLE001 - any failure must become a visible alarm
            log.exception("bedside engine failed: %s", failure_text(exc))
            self._inbox.append(_EngineExit(exc))
        else:
            self._inbox.append(_EngineExit(None))

    def stop_engine(self, timeout_s: float = 5.0) -> None:
        """Ask the engine to stop and wait (at most ``timeout_s``) for its thread."""
        self._stopping = True
        if self.engine is not None:
            try:
                self.engine.stop()
            except Exception:  # noqa: BLE001 - stopping must not crash the exit
                log.exception("engine.stop failed")
        if self._engine_thread is not None and self._engine_thread is not threading.current_thread():
            self._engine_thread.join(timeout_s)

    async def action_quit(self) -> None:
        """Stop the engine and leave."""
        self.stop_engine()
        self.exit(1 if self.engine_failed else 0)

    # -- events in ---------------------------------------------------------------------------------
    def post_event(self, event: object) -> None:
        """Take one engine event (any thread). Samples go to the wave buffer, the rest to the queue."""
        try:
            if isinstance(event, Samples):
                self.buffer.write(event)
            else:
                self._inbox.append(event)
        except Exception:  # noqa: BLE001 - never raise into the engine's loop
            self.dropped_events += 1
            log.exception("UI could not take an engine event (%d so far)", self.dropped_events)

    def tick(self) -> None:
        """One frame: apply the queued events, then redraw what changed and scroll the traces."""
        t0 = time.perf_counter()
        changed: set[str] = set()
        for _ in range(len(self._inbox)):
            changed.add(self._apply(self._inbox.popleft()))
        end = self.frame_end()
        fs = self.buffer.fs_hz
        if fs:
            self.state.now_s = max(self.state.now_s, end / fs)
        self.refresh_screen(changed, end)
        self.frames += 1
        spent = time.perf_counter() - t0
        self.tick_total_s += spent
        self.tick_max_s = max(self.tick_max_s, spent)

    def refresh_screen(self, changed: set[str], end_index: int | None = None) -> None:
        """Redraw the current screen, never letting it fail the frame timer.

        A screen pushed but not mounted yet is skipped (its ``on_mount`` draws it); a screen that has
        just come on top redraws everything. A screen that raises is logged, raised as the technical
        alarm ``ui_error`` and, unless it is the monitor itself, replaced by the monitor screen.
        """
        # A dialog on top has no view of its own: draw the screen under it (its banner stays visible).
        screen = next((s for s in reversed(self.screen_stack) if hasattr(s, "update_view")), None)
        if screen is None or not screen.is_mounted or not screen.children:  # not composed yet
            return
        if screen is not self._drawn_screen:
            changed = changed | ALL_CHANGED
        try:
            screen.update_view(changed)
            if end_index is not None:
                screen.show_frame(end_index)
        except Exception as exc:  # noqa: BLE001 - a broken screen must not end monitoring
            self._screen_failed(screen, exc)
        else:
            self._drawn_screen = screen

    def _screen_failed(self, screen: Any, exc: Exception) -> None:
        """Log and raise ``ui_error`` (once a minute for the same error); called in an ``except`` block."""
        self._drawn_screen = None  # the next frame redraws all of it (and shows the alarm)
        name = type(screen).__name__
        key, now = (name, f"{type(exc).__name__}: {exc}"), time.monotonic()
        if key != self._screen_error or now - self._screen_error_at >= SCREEN_ERROR_REPEAT_S:
            self._screen_error, self._screen_error_at = key, now
            log.exception("%s could not be drawn", name)
            self.raise_ui_alarm("ui_error", f"Display error in {name}: {key[1]}", Priority.MEDIUM)
        if not isinstance(screen, MonitorScreen) and screen is self.screen and len(self.screen_stack) > 1:
            self.pop_screen()  # back to the monitor, which shows the alarm

    def frame_end(self) -> int:
        """Sample index at the traces' right edge.

        The newest sample, except on a live link that has stopped delivering: then time goes on
        (by the wall clock) and the traces scroll into blank, so a lost signal never looks like a
        frozen one.
        """
        end, fs, last = self.buffer.end_index, self.buffer.fs_hz, self.buffer.last_write_wall
        link = self.state.link  # the status, corrected by the link alarm's transitions
        if fs is None or last is None or link not in LIVE_LINKS:
            return end
        stalled_s = self.clock() - last
        if link == "connected" and stalled_s < STALL_S:
            return end
        return end + int(max(0.0, stalled_s) * fs)

    def _apply(self, event: object) -> str:
        if isinstance(event, _EngineReady):
            for label in event.labels:
                if label not in self.state.trends:
                    self.state.labels.append(label)
                    self.state.trends[label] = deque()
            self.state.thresholds.update(event.thresholds)
            self.state.not_validated = set(event.not_validated)
            if event.min_sqi is not None:
                self.state.min_sqi = event.min_sqi
            self._show_settings(event.display)
            return "window"
        if isinstance(event, _EngineExit):
            return self._engine_exited(event.error)
        if isinstance(event, _LogNote):
            self.log_notes.append(event.text)
            if event.severity == "error":  # warnings wait in the help screen; errors show at once
                self.notify(event.text, severity="error", timeout=10)
            return "log"
        try:
            return self.state.apply(event)
        except Exception as exc:  # noqa: BLE001 - a bad event must not take the monitor down
            log.exception("UI could not show an engine event")
            return self.raise_ui_alarm("ui_error", f"Display error: {exc}", Priority.MEDIUM)

    def _engine_exited(self, error: BaseException | None) -> str:
        if error is None:
            if self.state.status is not None and self.state.status.link != "ended":
                self.state.status = replace(self.state.status, link="ended")
            if not self._stopping:
                self.notify("The engine finished.", timeout=10)
            return "status"
        self.engine_failed = True
        self.failure = failure_text(error)
        if self.state.status is not None:
            self.state.status = replace(self.state.status, link="stopped")
        self.state.set_link("stopped")
        self.push_screen(FailureDialog(self.failure))
        return self.raise_ui_alarm("engine_failed", f"Engine stopped: {self.failure}", Priority.HIGH)

    def _show_settings(self, display: dict[str, Any]) -> None:
        """Action texts, HR limits and audio state from the alarm settings (the screen's own actions kept)."""
        self.state.actions = {**display.get("actions", {}), **SCREEN_ACTIONS}
        if display.get("hr_limits") is not None:
            self.state.hr_limits = display["hr_limits"]
        if display.get("audio") is not None:
            self.state.audio = display["audio"]

    def raise_ui_alarm(self, alarm: str, message: str, priority: Priority) -> str:
        """A technical alarm raised by the UI itself (the engine is gone or refused a command)."""
        previous = self.state.alarms.get(alarm)
        self.ui_alarms.add(alarm)
        self.state.apply(AlarmChange(
            t_s=self.state.now_s, wall_time=self.clock(), alarm=alarm, kind=AlarmKind.TECHNICAL,
            priority=priority, state=AlarmState.ACTIVE, previous=previous.change.state if previous else None,
            message=f"{message} (raised by the screen, not in the log)"))
        self.bell()
        return "alarms"

    # -- commands out -----------------------------------------------------------------------------
    def acknowledge(self, alarm: str) -> None:
        """Acknowledge ``alarm``: the engine logs it and announces the change (a UI alarm: here)."""
        if alarm in self.ui_alarms:
            entry = self.state.alarms.get(alarm)
            if entry is not None:
                self.state.apply(replace(entry.change, state=AlarmState.ACKNOWLEDGED, previous=entry.change.state,
                                         who=self.user, wall_time=self.clock(), t_s=self.state.now_s))
                self.refresh_screen({"alarms"})
            return
        self._command(f"acknowledge {alarm}", "acknowledge", alarm, self.user)

    def action_pause_audio(self) -> None:
        """Pause the audio of the sounding alarms (AUDIO PAUSED, timed by the engine); say so when none sounds."""
        if not self.state.sounding():
            left = self.state.audio_paused_max_s()
            why = f"audio already paused ({left:.0f} s left)" if left is not None else "no alarm to pause"
            self.notify(f"Nothing is sounding: {why}.", title="Pause audio", timeout=5)
            return
        self._command("pause audio", "pause_audio", self.user)

    def _command(self, title: str, method: str, *args: str) -> None:
        engine = self.engine
        if engine is None:
            self.notify(f"Cannot {title}: no engine is running", severity="error")
            return
        self.run_worker(lambda: getattr(engine, method)(*args), name=title, group="commands",
                        thread=True, exit_on_error=False)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        """A command the engine refused becomes a technical alarm and a notification."""
        worker = event.worker
        if worker.group == "commands" and event.state is WorkerState.ERROR:
            self.notify(f"{worker.name} failed: {worker.error}", severity="error", timeout=15)
            self.raise_ui_alarm("command_failed", f"{worker.name} failed: {worker.error}", Priority.MEDIUM)
            self.refresh_screen({"alarms"})

    # -- screens ----------------------------------------------------------------------------------
    def action_history(self) -> None:
        """Show the alarm history."""
        if isinstance(self.screen, HelpScreen):
            self.pop_screen()
        if not isinstance(self.screen, HistoryScreen):
            self.push_screen(HistoryScreen(self.state, bed_id=self.bed_id, user=self.user, tz=self.tz))

    def action_help(self) -> None:
        """Show the help."""
        if isinstance(self.screen, HistoryScreen):
            self.pop_screen()
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen(self.state, bed_id=self.bed_id, user=self.user, tz=self.tz,
                                        log_notes=list(self.log_notes), failure=self.failure))


def run_ui(engine_factory: Callable[[], EngineLike], *, bed_id: str, leads: tuple[str, ...] = DEFAULT_LEADS,
           user: str | None = None, fps: float = FPS, audio: bool | None = None,
           gain_mm_per_mv: float | None = None) -> int:
    """Run the monitor on this terminal with the engine from ``engine_factory``; return the exit code.

    When the engine failed or refused to start, its reason is written to stderr after the screen has
    closed (the dialog and the help showed it while the screen was up) and the code is 1.
    """
    app = MonitorApp(engine_factory, bed_id=bed_id, leads=leads, user=user, fps=fps, audio=audio,
                     gain_mm_per_mv=gain_mm_per_mv)
    root = logging.getLogger()
    on_terminal = [h for h in root.handlers if isinstance(h, logging.StreamHandler)
                   and getattr(getattr(h, "stream", None), "isatty", lambda: False)()]
    ui_handler = UiLogHandler(app)
    for h in on_terminal:  # text written under the screen would scramble it
        root.removeHandler(h)
    root.addHandler(ui_handler)
    logging.captureWarnings(True)  # BedsideWarning and friends go through logging, hence to the screen
    try:
        code = app.run()
    finally:
        app.stop_engine()
        logging.captureWarnings(False)
        root.removeHandler(ui_handler)
        for h in on_terminal:
            root.addHandler(h)
    if app.failure is not None:
        print(f"bedside: monitoring stopped: the engine failed: {app.failure}", file=sys.stderr)
    return 1 if app.engine_failed or app.return_code else int(code or 0)  # return_code 1: the app crashed
