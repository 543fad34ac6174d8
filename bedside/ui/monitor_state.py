"""What the monitor screen shows, built from engine events on the UI thread (no widgets here).

The engine's thread never touches this object: its events are queued and applied here by the frame
timer, so every widget reads one consistent state. Memory is bounded: the risk trends keep one hour of
signal time and the alarm history a fixed number of transitions.
"""

from __future__ import annotations

import math
import re
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

from bedside.events import AlarmChange, AlarmKind, AlarmState, Priority, Samples, Status, WindowResult

#: Seconds of signal time a risk trend covers.
TREND_S = 3600.0
#: Alarm transitions kept in memory for the history screen (the database keeps all of them).
HISTORY_MAX = 5000
#: Link states in which nothing new arrives: every derived value on screen is stale.
LINK_DOWN = ("disconnected", "reconnecting", "stopped")
#: Values (HR, SQI, electrodes, risks) older than this (s of signal time) are shown stale even on a live
#: link (the analysis stopped or fell behind): no number is better than an old one.
STALE_S = 15.0
#: Electrode names in an alarm message (chest electrodes and the limb ones).
ELECTRODE_RE = re.compile(r"\b(V[1-6]|RA|LA|LL|RL)\b")
#: The alarm whose transitions (the ones the log shows) decide the link state on the status bar.
LINK_ALARM = "device_disconnected"

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
        self.hr_window: WindowResult | None = None  # the latest window that carried a heart rate
        self.link: str | None = None  # link state: the latest Status, overruled by a later LINK_ALARM change
        self.lost_at_s: float | None = None  # signal time the link went down; cleared by a newer window
        self.actions: dict[str, str] = {}  # short action text per alarm ("Check cable/device")
        self.hr_limits: tuple[float, float] | None = None  # (low, high) bpm of the hr_low/hr_high alarms
        self.audio: str | None = None  # "on", "off", or None when unknown

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
            self.set_link(event.link)
            return "status"
        raise TypeError(f"not an engine event: {type(event).__name__}")

    def _apply_window(self, w: WindowResult) -> None:
        self.window = w
        self.now_s = max(self.now_s, w.t_s)
        if w.scored:
            self.scored = w
        if w.hr_bpm is not None:
            self.hr_window = w
        if self.lost_at_s is not None and w.t_s > self.lost_at_s and self.link not in LINK_DOWN:
            self.lost_at_s = None  # the first window analysed after the link came back
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
        if c.alarm == LINK_ALARM:  # the log's word on the link beats an older Status
            if c.state is AlarmState.CLEARED and self.link in ("disconnected", "reconnecting"):
                self.set_link("connected")
            elif c.state is not AlarmState.CLEARED and self.link != "reconnecting":
                self.set_link("disconnected")
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

    def set_link(self, link: str) -> None:
        """A new link state; going down marks every value shown so far as stale until a newer window."""
        if link in LINK_DOWN and self.lost_at_s is None:
            self.lost_at_s = self.now_s
        self.link = link

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

    def stale_s(self) -> float | None:
        """Age (s) of the derived values on screen when they are stale, else None.

        Stale: the link is down (device lost, engine stopped) or came back without a window analysed
        since, or the latest window is older than ``STALE_S`` of signal time (on a live link the signal
        time keeps running with the wall clock).
        """
        w = self.window
        if w is None:  # nothing shown yet, so nothing stale
            return None
        age = max(0.0, self.now_s - w.t_s)
        if self.link in LINK_DOWN or self.lost_at_s is not None or age > STALE_S:
            return age
        return None

    def heart_rate(self) -> float | None:
        """The latest heart rate, or None when there is none, it is stale or older than ``STALE_S``."""
        w = self.hr_window
        if w is None or self.stale_s() is not None or self.now_s - w.t_s > STALE_S:
            return None
        return w.hr_bpm

    def action(self, change: AlarmChange) -> str:
        """The short action text of an alarm ("Check electrode V3"), or "" when none is configured."""
        text = self.actions.get(change.alarm, "")
        if "{electrodes}" in text:
            w = self.window
            off = [e for e, v in (w.lead_off if w is not None else {}).items() if v]
            if not off:  # e.g. a flat lead the engine names only in its message ("lead V3 flat")
                off = list(dict.fromkeys(ELECTRODE_RE.findall(change.message)))
            text = text.replace("{electrodes}", " ".join(off[:3])).rstrip()
        return text

    def sounding(self) -> list[AlarmEntry]:
        """Alarms whose audio is on (ACTIVE or LATCHED)."""
        return [a for a in self.alarms.values() if a.change.state in (AlarmState.ACTIVE, AlarmState.LATCHED)]

    def audio_paused_max_s(self) -> float | None:
        """The longest AUDIO PAUSED time left (s), or None when no alarm is audio-paused."""
        left = [x for a in self.alarms.values() if (x := self.audio_paused_left_s(a)) is not None]
        return max(left) if left else None

    def risk(self, label: str) -> float | None:
        """The current (smoothed) risk of one label from the latest scored window."""
        if self.scored is None:
            return None
        value = self.scored.smoothed.get(label, self.scored.scores.get(label))
        return None if value is None else float(value)
