"""The audible alarm signal: a distinct pulse pattern per priority, through the terminal bell or a command.

:class:`Annunciator` listens to the engine's :class:`~bedside.events.AlarmChange` events, keeps which
alarms sound (ACTIVE or LATCHED; AUDIO PAUSED, ACKNOWLEDGED and cleared ones are silent) and plays the
pattern of the highest sounding priority on its own thread, on the wall clock: bursts of pulses at
the offsets in ``[audio.<priority>]`` of the alarm settings, repeated every ``repeat_s``. A higher
priority interrupts a lower one's burst at once; silence stops it at once.

Outputs: ``bell`` writes BEL to the controlling terminal (a console tty under systemd), ``command``
runs the configured command per pulse with ``{priority}`` replaced (e.g. ``aplay /opt/sounds/{priority}.wav``),
``off`` plays nothing.
"""

from __future__ import annotations

import logging
import os
import shlex
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from bedside.alarm_config import AudioSettings
from bedside.alarms import SOUNDING
from bedside.events import AlarmChange, Priority

log = logging.getLogger(__name__)
ORDER = {Priority.HIGH: 0, Priority.MEDIUM: 1, Priority.LOW: 2}


def bell_output() -> Callable[[Priority], None]:
    """Write BEL to /dev/tty, or to stderr when that is a terminal; silent (logged once) otherwise."""
    try:
        fd = os.open("/dev/tty", os.O_WRONLY | os.O_NOCTTY)
    except OSError:
        fd = sys.stderr.fileno() if sys.stderr.isatty() else None
    if fd is None:
        log.warning("audio output 'bell': no terminal to ring; set [audio] output = \"command\" in the alarm settings")
        return lambda priority: None
    return lambda priority: os.write(fd, b"\a") and None


def command_output(template: str) -> Callable[[Priority], None]:
    """Run ``template`` (``{priority}`` replaced) once per pulse, without waiting for it."""
    def play(priority: Priority) -> None:
        try:
            subprocess.Popen(shlex.split(template.replace("{priority}", priority.value)), stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        except OSError as exc:
            log.error("audio command %r failed: %s", template, exc)
    return play


def make_output(settings: AudioSettings) -> Callable[[Priority], None]:
    if settings.output == "bell":
        return bell_output()
    if settings.output == "command":
        return command_output(settings.command)
    return lambda priority: None


class Annunciator:
    """Plays the highest sounding priority's pattern; subscribe it to the engine and :meth:`start` it."""

    def __init__(self, settings: AudioSettings, output: Callable[[Priority], None] | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.settings = settings
        self.output = output or make_output(settings)
        self.clock = clock
        self.pulses: Counter[Priority] = Counter()  # pulses played, per priority
        self._sounding: dict[str, Priority] = {}
        self._current: Priority | None = None
        self._changed = threading.Condition()
        self._stopped = False
        self._thread: threading.Thread | None = None

    @property
    def current(self) -> Priority | None:
        """The priority sounding now, None when silent."""
        return self._current

    def __call__(self, event: Any) -> None:
        """Engine listener: follow the alarm states."""
        if not isinstance(event, AlarmChange):
            return
        with self._changed:
            if event.state in SOUNDING:
                self._sounding[event.alarm] = event.priority
            else:
                self._sounding.pop(event.alarm, None)
            top = min(self._sounding.values(), key=ORDER.__getitem__) if self._sounding else None
            if top != self._current:
                self._current = top
                self._changed.notify_all()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="bedside-audio", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        with self._changed:
            self._stopped = True
            self._changed.notify_all()
        if self._thread is not None:
            self._thread.join(2.0)

    def _wait_until(self, deadline: float, priority: Priority | None) -> bool:
        """Sleep until ``deadline``; False early when the sounding priority changes or on stop."""
        with self._changed:
            while not self._stopped and self._current == priority:
                left = deadline - self.clock()
                if left <= 0:
                    return True
                self._changed.wait(left)
            return False

    def _run(self) -> None:
        while True:
            with self._changed:
                while not self._stopped and self._current is None:
                    self._changed.wait()
                if self._stopped:
                    return
                priority = self._current
            assert priority is not None
            pattern = self.settings.patterns[priority]
            start = self.clock()
            interrupted = False
            for offset in pattern.pulses_s:
                if not self._wait_until(start + offset, priority):
                    interrupted = True
                    break
                self.output(priority)
                self.pulses[priority] += 1
            if not interrupted:
                self._wait_until(start + pattern.repeat_s, priority)
