"""The alarm system: conditions decided over windows, and each alarm's IEC 60601-1-8 state machine.

Two layers, both pure (no I/O, no clock: every call carries the signal time ``t_s``):

- :class:`AlarmMachine` holds one alarm's state, with the standard's names:

  ========================  ====================================================================
  from                      to
  ========================  ====================================================================
  CLEARED                   ACTIVE when the condition starts
  ACTIVE                    LATCHED (latching) or CLEARED when the condition ends;
                            AUDIO PAUSED on pause_audio; ACKNOWLEDGED (or CLEARED when the
                            condition is over) on acknowledge
  AUDIO PAUSED              ACTIVE when the pause (2 min by default) runs out and the condition
                            holds, else LATCHED or CLEARED; ACKNOWLEDGED / CLEARED on acknowledge;
                            CLEARED at once when a non-latching condition ends
  LATCHED                   ACTIVE when the condition returns; CLEARED on acknowledge;
                            AUDIO PAUSED on pause_audio
  ACKNOWLEDGED              CLEARED when the condition ends (the audible signal stays off)
  ========================  ====================================================================

  ACTIVE and LATCHED sound; the others are silent.

- :class:`AlarmSystem` turns analysed windows and link conditions into those state changes:
  physiological alarms (one per validated pathology label: N of M smoothed risks above the bundle's
  threshold to raise, all of the last K below threshold - margin to clear; a label the bundle does
  not validate has no alarm at all, its risk is only smoothed; heart rate above or below
  limits with hysteresis) and technical alarms (lead off, poor signal, gap, inference failed per
  window; disconnect, no data, stale inference, refused bundle, failing storage from the engine).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Collection
from dataclasses import dataclass, replace

from bedside.alarm_config import WINDOW_TECHNICAL, AlarmConfig, Persistence
from bedside.events import AlarmChange, AlarmKind, AlarmState, Priority, WindowResult

#: Why a window was not scored, in the order the engine checks, and the technical alarm of each.
REASON_ALARMS: tuple[tuple[str, str | None], ...] = (
    ("gap", "signal_gap"), ("lead off", "lead_off"), ("poor signal", "poor_signal"),
    ("no model", None), ("inference failed", "inference_failed"),
)
TECHNICAL_TITLES: dict[str, str] = {
    "lead_off": "Lead off", "poor_signal": "Poor signal", "signal_gap": "Signal gap",
    "device_disconnected": "Device disconnected", "no_data": "No data", "inference_stale": "Inference stale",
    "inference_failed": "Inference failed", "bundle_refused": "Model bundle refused",
    "settings_refused": "Alarm settings refused",
    "storage_failing": "Storage failing", "analysis_behind": "Analysis behind",
}
SOUNDING = (AlarmState.ACTIVE, AlarmState.LATCHED)
#: Last states of a latching alarm that a restart carries over (as LATCHED): not acknowledged by anyone.
CARRIED_STATES = (AlarmState.ACTIVE, AlarmState.LATCHED, AlarmState.AUDIO_PAUSED)


def window_conditions(window: WindowResult) -> tuple[dict[str, str], frozenset[str]]:
    """(present: alarm -> detail, unknown) window conditions of an analysed window.

    A window logged before conditions were recorded has only its ``reason``: the checks before it
    passed, its own failed, and those after it were not judged (the order of :data:`REASON_ALARMS`).
    """
    if window.conditions is not None:
        return window.conditions, frozenset(window.unknown)
    present: dict[str, str] = {}
    unknown: set[str] = set()
    hit = False
    for reason, name in REASON_ALARMS:
        if name is not None:
            if hit:
                unknown.add(name)
            elif window.reason == reason:
                present[name] = window.detail or reason
        hit = hit or window.reason == reason
    return present, frozenset(unknown)


def label_title(label: str) -> str:
    """'pleural_effusion' -> 'Pleural effusion'."""
    return label.replace("_", " ").capitalize()


class AlarmMachine:
    """One alarm condition's state (see the module docstring for the transitions)."""

    def __init__(self, name: str, kind: AlarmKind, priority: Priority, latching: bool, pause_s: float):
        self.name, self.kind, self.priority, self.latching, self.pause_s = name, kind, priority, latching, pause_s
        self.state = AlarmState.CLEARED
        self.condition = False
        self.paused_until_s: float | None = None
        self.message = ""
        self.score: float | None = None
        self.threshold: float | None = None

    @property
    def sounding(self) -> bool:
        return self.state in SOUNDING

    def _go(self, state: AlarmState, t_s: float, cause: str, who: str | None = None) -> AlarmChange:
        previous, self.state = self.state, state
        if state != AlarmState.AUDIO_PAUSED:
            self.paused_until_s = None
        return AlarmChange(t_s=t_s, wall_time=0.0, alarm=self.name, kind=self.kind, priority=self.priority,
                           state=state, previous=previous, message=self.message, score=self.score,
                           threshold=self.threshold, who=who, audio_paused_until_s=self.paused_until_s,
                           cause=cause)

    def _after_condition_ended(self) -> AlarmState:
        return AlarmState.LATCHED if self.latching else AlarmState.CLEARED

    def set_condition(self, present: bool, t_s: float, message: str, score: float | None = None,
                      threshold: float | None = None) -> AlarmChange | None:
        """The condition started or ended (a repeat of the current value changes nothing)."""
        if present == self.condition:
            return None
        self.condition = present
        self.message, self.score, self.threshold = message, score, threshold
        s = self.state
        if present:
            if s in (AlarmState.CLEARED, AlarmState.LATCHED):
                return self._go(AlarmState.ACTIVE, t_s, "condition")
            return None  # AUDIO PAUSED (latched, condition back): stays paused until the timer ends
        if s == AlarmState.ACTIVE:
            return self._go(self._after_condition_ended(), t_s, "condition")
        if s == AlarmState.ACKNOWLEDGED:
            return self._go(AlarmState.CLEARED, t_s, "condition")
        if s == AlarmState.AUDIO_PAUSED:
            if not self.latching:
                return self._go(AlarmState.CLEARED, t_s, "condition")
            return self._go(AlarmState.AUDIO_PAUSED, t_s, "condition")  # logged: condition over, latched
        return None

    def acknowledge(self, t_s: float, who: str) -> AlarmChange | None:
        """Someone acknowledged: silence until the condition ends (or clear a latched alarm)."""
        if self.state in (AlarmState.ACTIVE, AlarmState.AUDIO_PAUSED, AlarmState.LATCHED):
            target = AlarmState.ACKNOWLEDGED if self.condition else AlarmState.CLEARED
            return self._go(target, t_s, "acknowledge", who)
        return None

    def pause_audio(self, t_s: float, who: str) -> AlarmChange | None:
        """AUDIO PAUSED for ``pause_s`` seconds (from ACTIVE or LATCHED)."""
        if self.state in SOUNDING:
            self.paused_until_s = t_s + self.pause_s
            return self._go(AlarmState.AUDIO_PAUSED, t_s, "pause_audio", who)
        return None

    def restore(self, t_s: float, previous: AlarmChange, from_session: int) -> AlarmChange | None:
        """Carry a latching alarm over a restart (``previous``: its last transition in the session it was
        raised in): LATCHED, sounding, until acknowledged, or ACTIVE again when its condition returns."""
        if not self.latching or self.state != AlarmState.CLEARED:
            return None
        self.message, self.score, self.threshold = previous.message, previous.score, previous.threshold
        return replace(self._go(AlarmState.LATCHED, t_s, "carried_over"), carried_over_from=from_session)

    def tick(self, t_s: float) -> AlarmChange | None:
        """End an AUDIO PAUSED whose time is up."""
        if self.state == AlarmState.AUDIO_PAUSED and self.paused_until_s is not None and t_s >= self.paused_until_s:
            target = AlarmState.ACTIVE if self.condition else self._after_condition_ended()
            return self._go(target, t_s, "timer")
        return None


class PersistenceFilter:
    """N of the last M windows to raise, the last K all clean to clear; windows older than M hops drop."""

    def __init__(self, persistence: Persistence, hop_s: float):
        self.p = persistence
        self.max_age_s = (max(persistence.raise_m, persistence.clear_n) - 0.5) * hop_s
        self.history: deque[tuple[float, bool, bool]] = deque()
        self.active = False

    def update(self, t_s: float, exceeds: bool, clear_ok: bool) -> bool:
        """Add a window's verdicts (raise condition met; clear condition met); return whether active."""
        self.history.append((t_s, exceeds, clear_ok))
        while self.history and self.history[0][0] < t_s - self.max_age_s:
            self.history.popleft()
        recent = list(self.history)
        if not self.active:
            self.active = sum(e for _, e, _ in recent[-self.p.raise_m:]) >= self.p.raise_n
        elif len(recent) >= self.p.clear_n and all(c for _, _, c in recent[-self.p.clear_n:]):
            self.active = False
        return self.active


class Smoother:
    """Mean of the last ``windows`` scored values, ignoring values older than that many hops."""

    def __init__(self, windows: int, hop_s: float):
        self.windows = windows
        self.max_age_s = (windows - 0.5) * hop_s
        self.values: deque[tuple[float, dict[str, float]]] = deque(maxlen=windows)

    def update(self, t_s: float, scores: dict[str, float]) -> dict[str, float]:
        self.values.append((t_s, scores))
        kept = [s for t, s in self.values if t >= t_s - self.max_age_s]
        return {label: sum(s[label] for s in kept) / len(kept) for label in scores}


@dataclass(frozen=True)
class _Limit:
    name: str
    title: str
    above: bool  # True: alarm when the value exceeds the limit


class AlarmSystem:
    """Every alarm of a session: physiological (risks, heart rate) and technical, kept apart.

    ``labels`` are the bundle's outputs; ``validated`` those of them that may alarm (the bundle's
    ``label_validation``): every other label gets no alarm machine, so no risk of it ever alarms.
    """

    def __init__(self, config: AlarmConfig, labels: list[str], thresholds: dict[str, float], hop_s: float, *,
                 validated: Collection[str]):
        unknown = sorted(set(validated) - set(labels))
        if unknown:
            raise ValueError(f"validated labels {unknown} are not among the labels {list(labels)}")
        self.config, self.labels, self.thresholds = config, list(labels), dict(thresholds)
        self.alarmed = [label for label in self.labels if label in set(validated)]  # labels with an alarm
        pause_s = config.audio.pause_s
        self.machines: dict[str, AlarmMachine] = {}
        self.filters: dict[str, PersistenceFilter] = {}
        for label in self.alarmed:
            r = config.risk_for(label)
            self.machines[label] = AlarmMachine(label, AlarmKind.PHYSIOLOGICAL, r.priority, r.latching, pause_s)
            self.filters[label] = PersistenceFilter(r.persistence, hop_s)
        hr = config.heart_rate
        self.hr_limits = (_Limit("hr_high", "HR", True), _Limit("hr_low", "HR", False))
        for lim in self.hr_limits:
            self.machines[lim.name] = AlarmMachine(lim.name, AlarmKind.PHYSIOLOGICAL, hr.priority, hr.latching, pause_s)
            self.filters[lim.name] = PersistenceFilter(hr.persistence, hop_s)
        for name in config.technical:  # TECHNICAL_ALARMS, in that order
            t = config.technical[name]
            self.machines[name] = AlarmMachine(name, AlarmKind.TECHNICAL, t.priority, False, pause_s)
        for _, name in REASON_ALARMS:
            if name is not None:
                self.filters[name] = PersistenceFilter(config.technical[name].persistence, hop_s)
        self.smoother = Smoother(config.smoothing_windows, hop_s)

    # -- windows ---------------------------------------------------------------------------------

    def smooth(self, window: WindowResult) -> dict[str, float]:
        """Smoothed risks after this window (empty when it was not scored)."""
        return self.smoother.update(window.t_s, window.scores) if window.scored else {}

    def on_window(self, window: WindowResult) -> list[AlarmChange]:
        """Decide every window condition after an analysed window (smoothed already filled in)."""
        t = window.t_s
        out: list[AlarmChange] = []
        self._technical_from_window(window, out)
        for label in self.alarmed if window.scored else ():
            risk = window.smoothed[label]
            thr = self.thresholds[label]
            clear_at = thr - self.config.risk_for(label).clear_margin
            active = self.filters[label].update(t, risk > thr, risk < clear_at)
            digits = 2 if round(risk, 2) not in (round(thr, 2), round(clear_at, 2)) else 3
            if active:
                msg = f"{label_title(label)} risk {risk:.{digits}f} > {thr:.{digits}f}"
            else:
                msg = f"{label_title(label)} risk {risk:.{digits}f} back below {clear_at:.{digits}f}"
            self._add(out, self.machines[label].set_condition(active, t, msg, risk, thr))
        if window.hr_bpm is not None:
            hr = self.config.heart_rate
            for lim in self.hr_limits:
                limit = hr.high_bpm if lim.above else hr.low_bpm
                if lim.above:
                    exceeds, clear_ok = window.hr_bpm > limit, window.hr_bpm < limit - hr.clear_hysteresis_bpm
                else:
                    exceeds, clear_ok = window.hr_bpm < limit, window.hr_bpm > limit + hr.clear_hysteresis_bpm
                active = self.filters[lim.name].update(t, exceeds, clear_ok)
                sign = (">" if lim.above else "<") if active else "within"
                msg = f"HR {window.hr_bpm:.0f} bpm {sign} {limit:g}" if active else \
                    f"HR {window.hr_bpm:.0f} bpm back within the {limit:g} bpm limit"
                self._add(out, self.machines[lim.name].set_condition(active, t, msg, window.hr_bpm, limit))
        return out

    def _technical_from_window(self, window: WindowResult, out: list[AlarmChange]) -> None:
        """Each window condition on its own: present, absent, or not judged (``unknown``: left as it was)."""
        present, unknown = window_conditions(window)
        for name in WINDOW_TECHNICAL:
            if name in unknown:
                continue
            hit = name in present
            active = self.filters[name].update(window.t_s, hit, not hit)
            long_loss = window.conditions is None or window.gap_s >= self.config.technical[name].after_s  # None: older log
            if name == "signal_gap" and hit and long_loss:
                self.filters[name].active = active = True  # a long loss at once; short ones must persist
            title = TECHNICAL_TITLES[name]
            msg = (f"{title}: {present[name]}" if hit else title) if active else f"{title} resolved"
            self._add(out, self.machines[name].set_condition(active, window.t_s, msg))

    # -- conditions from the engine, commands, timers --------------------------------------------

    def set_condition(self, name: str, present: bool, t_s: float, detail: str = "") -> list[AlarmChange]:
        """A technical condition outside the windows (disconnect, no data, stale, bundle, storage)."""
        title = TECHNICAL_TITLES.get(name) or label_title(name)
        msg = f"{title}: {detail}" if present and detail else (title if present else f"{title} resolved")
        out: list[AlarmChange] = []
        self._add(out, self.machines[name].set_condition(present, t_s, msg))
        return out

    def restore(self, previous: list[AlarmChange], from_session: int, t_s: float) -> list[AlarmChange]:
        """After a restart: every latching alarm whose last transition in the previous session left it
        LATCHED, ACTIVE or AUDIO PAUSED comes back LATCHED (see docs/alarms.md); others are re-evaluated."""
        out: list[AlarmChange] = []
        for c in previous:
            machine = self.machines.get(c.alarm)
            if machine is not None and c.state in CARRIED_STATES:
                self._add(out, machine.restore(t_s, c, c.carried_over_from or from_session))
        return out

    def acknowledge(self, alarm: str | None, who: str, t_s: float) -> list[AlarmChange]:
        """Acknowledge one alarm by name, or every alarm that can be (``alarm=None``)."""
        if alarm is not None and alarm not in self.machines:
            raise KeyError(f"no alarm named {alarm!r}; alarms: {', '.join(self.machines)}")
        names = [alarm] if alarm is not None else list(self.machines)
        out: list[AlarmChange] = []
        for name in names:
            self._add(out, self.machines[name].acknowledge(t_s, who))
        return out

    def pause_audio(self, who: str, t_s: float) -> list[AlarmChange]:
        """AUDIO PAUSED for every sounding alarm."""
        out: list[AlarmChange] = []
        for machine in self.machines.values():
            self._add(out, machine.pause_audio(t_s, who))
        return out

    def command(self, kind: str, alarm: str | None, who: str, t_s: float) -> list[AlarmChange]:
        """``acknowledge`` (``alarm`` or all) or ``pause_audio``, by ``who``."""
        if kind == "acknowledge":
            return self.acknowledge(alarm, who, t_s)
        if kind == "pause_audio":
            return self.pause_audio(who, t_s)
        raise ValueError(f"unknown command {kind!r}; commands: acknowledge, pause_audio")

    def tick(self, t_s: float) -> list[AlarmChange]:
        """Timers: AUDIO PAUSED periods that ended by ``t_s``."""
        out: list[AlarmChange] = []
        for machine in self.machines.values():
            self._add(out, machine.tick(t_s))
        return out

    def is_present(self, name: str) -> bool:
        return self.machines[name].condition

    def sounding_priority(self) -> Priority | None:
        """Highest priority among sounding alarms (what the audio plays), None when silent."""
        order = {Priority.HIGH: 0, Priority.MEDIUM: 1, Priority.LOW: 2}
        sounding = [m.priority for m in self.machines.values() if m.sounding]
        return min(sounding, key=order.__getitem__) if sounding else None

    @staticmethod
    def _add(out: list[AlarmChange], change: AlarmChange | None) -> None:
        if change is not None:
            out.append(change)
