"""What the monitor screen shows, built from engine events on the UI thread (no widgets here).

The engine's thread never touches this object: its events are queued and applied here by the frame
timer, so every widget reads one consistent state. Memory is bounded: the risk trends keep one hour of
signal time and the alarm history a fixed number of transitions.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

from bedside.events import AlarmChange, AlarmKind, AlarmState, Priority, Samples, Status, WindowResult

#: Seconds of signal time a risk trend covers.
TREND_S = 3600.0
#: Alarm transitions kept in memory for the history screen (the database keeps all of them).
HISTORY_MAX = 5000

PRIORITY_ORDER = {Priority.HIGH: 0, Priority.MEDIUM: 1, Priority.LOW: 2}
STATE_ORDER = {AlarmState.ACTIVE: 0, AlarmState.LATCHED: 1, AlarmState.AUDIO_PAUSED: 2,
               AlarmState.ACKNOWLEDGED: 3, AlarmState.CLEARED: 4}


@dataclass(frozen=True)
class AlarmEntry:
    """A current (not cleared) alarm: its latest transition and when it was raised."""

    change: AlarmChange
    raised_wall: float  # UNIX time of the transition that raised it
    raised_t_s: float  # signal time of the same

    @property
    def name(self) -> str:
        return self.change.alarm

    def sort_key(self) -> tuple[int, int, float]:
        """Most urgent first: unacknowledged before acknowledged, then priority, then newest."""
        return (STATE_ORDER[self.change.state], PRIORITY_ORDER[self.change.priority], -self.raised_t_s)


class MonitorState:
    """The screen's model: status, the latest window, current alarms, history and risk trends."""

    def __init__(self, labels: Iterable[str] = (), thresholds: dict[str, float] | None = None,
                 trend_s: float = TREND_S, history_max: int = HISTORY_MAX, min_sqi: float | None = None,
                 not_validated: Iterable[str] = ()) -> None:
        self.labels: list[str] = list(labels)
        self.thresholds: dict[str, float] = dict(thresholds or {})
        self.not_validated: set[str] = set(not_validated)  # the bundle's labels that never alarm
        self.min_sqi = min_sqi  # the engine's signal-quality limit (alarm settings), None until known
        self.trend_s = trend_s
        self.status: Status | None = None
        self.window: WindowResult | None = None  # the latest window, scored or not
        self.scored: WindowResult | None = None  # the latest scored window
        self.alarms: dict[str, AlarmEntry] = {}
        self.history: deque[AlarmChange] = deque(maxlen=history_max)
        self.trends: dict[str, deque[tuple[float, float]]] = {label: deque() for label in self.labels}
        self.now_s = 0.0  # newest signal time seen (s)
        self.events = 0  # events applied

    # -- applying events -------------------------------------------------------------------------
    def apply(self, event: object) -> str:
        """Apply one engine event; returns which part changed ("samples", "window", "alarms", "status")."""
        self.events += 1
        if isinstance(event, Samples):
            n = event.data_mv.shape[1] if event.data_mv.ndim == 2 else 0
            self.now_s = max(self.now_s, event.t_s + n / event.fs_hz)
            return "samples"
        if isinstance(event, WindowResult):
            self._apply_window(event)
            return "window"
        if isinstance(event, AlarmChange):
            self._apply_alarm(event)
            return "alarms"
        if isinstance(event, Status):
            self.status = event
            return "status"
        raise TypeError(f"not an engine event: {type(event).__name__}")

    def _apply_window(self, w: WindowResult) -> None:
        self.window = w
        self.now_s = max(self.now_s, w.t_s)
        if w.scored:
            self.scored = w
        for label in list(w.smoothed) + list(w.scores):
            if label not in self.trends:
                self.labels.append(label)
                self.trends[label] = deque()
        for label, trend in self.trends.items():
            value = w.smoothed.get(label, w.scores.get(label)) if w.scored else None
            trend.append((w.t_s, math.nan if value is None else float(value)))
            while trend and trend[0][0] < w.t_s - self.trend_s:
                trend.popleft()

    def _apply_alarm(self, c: AlarmChange) -> None:
        self.history.append(c)
        self.now_s = max(self.now_s, c.t_s)
        if c.threshold is not None and c.kind is AlarmKind.PHYSIOLOGICAL and c.alarm in self.trends:
            self.thresholds.setdefault(c.alarm, c.threshold)
        if c.state is AlarmState.CLEARED:
            self.alarms.pop(c.alarm, None)
            return
        old = self.alarms.get(c.alarm)
        if old is None or c.previous in (None, AlarmState.CLEARED):
            self.alarms[c.alarm] = AlarmEntry(c, c.wall_time, c.t_s)
        else:
            self.alarms[c.alarm] = AlarmEntry(c, old.raised_wall, old.raised_t_s)

    # -- queries ---------------------------------------------------------------------------------
    def current(self, kind: AlarmKind | None = None) -> list[AlarmEntry]:
        """Current alarms (of one kind, or all), most urgent first."""
        items = [a for a in self.alarms.values() if kind is None or a.change.kind is kind]
        return sorted(items, key=AlarmEntry.sort_key)

    def audio_paused_left_s(self, entry: AlarmEntry) -> float | None:
        """Seconds of AUDIO PAUSED left (signal clock), or None when the alarm is not audio-paused."""
        c = entry.change
        if c.state is not AlarmState.AUDIO_PAUSED or c.audio_paused_until_s is None:
            return None
        return max(0.0, c.audio_paused_until_s - self.now_s)

    def any_audio_paused(self) -> bool:
        return any(a.change.state is AlarmState.AUDIO_PAUSED for a in self.alarms.values())

    def poor_quality(self, sqi: float) -> bool:
        """Whether a lead's SQI is below the engine's limit (never, while the limit is unknown)."""
        return self.min_sqi is not None and sqi < self.min_sqi

    def validated(self, label: str) -> bool:
        """Whether the bundle validated ``label`` (may alarm); a not-validated risk is shown greyed."""
        return label not in self.not_validated

    def risk(self, label: str) -> float | None:
        """The current (smoothed) risk of one label from the latest scored window."""
        if self.scored is None:
            return None
        value = self.scored.smoothed.get(label, self.scored.scores.get(label))
        return None if value is None else float(value)
