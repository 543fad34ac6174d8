"""Heart rate in large digits with its alarm limits, the audio state, signal quality and electrodes.

Six rows in the side panel (24 cells wide at 80 columns)::

    HR bpm **          ♪ on          title, HR alarm marker, audio: on / OFF / paused m:ss
     ╶┐ ┌─┐  hi 120                   digits and the hr_high / hr_low limits beside them
      │ │ │  lo  45
     ╶┴╴└─┘  (12 s)                  the age of stale values
    SQI 0.93                         worst lead's quality, or why the last window was not scored
    Electrodes: all 9 on             or OFF: V3 (not drawn)

When the values are stale (the link is down, or the analysis stopped more than ``STALE_S`` ago) the
digits, the quality and the electrodes say ``---`` with the age of the last values instead of
showing them: an old number must never pass for a current one.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widget import Widget
from textual.widgets import Digits, Static

from bedside.events import AlarmState
from bedside.ui.alarm_format import age_text, mmss
from bedside.ui.monitor_state import MonitorState

#: Alarms about the heart rate (their state colours the digits).
HR_ALARMS = ("hr_high", "hr_low")
#: Limb electrodes: each one feeds every lead (the chest leads through Wilson's central terminal).
LIMB_ELECTRODES = ("RA", "LA", "LL", "RL")
#: Short reasons for a window that was not scored (the full detail is in the alarm list and the log).
SHORT_REASONS = {"lead off": "lead off", "poor signal": "poor signal", "inference failed": "model failed",
                 "no model": "no model", "gap": "signal gap"}


def hr_text(hr_bpm: float | None) -> str:
    """The digits shown: a whole number of beats per minute, or --- when there is none."""
    return "---" if hr_bpm is None else f"{round(hr_bpm):d}"


def electrodes_of(lead: str) -> tuple[str, ...]:
    """The electrodes a lead is measured from (a chest lead: its electrode and the limb electrodes)."""
    if lead.startswith("V"):
        return (lead, "RA", "LA", "LL")
    return {"I": ("RA", "LA"), "II": ("RA", "LL"), "III": ("LA", "LL")}.get(lead, ("RA", "LA", "LL"))


def undrawn_off(lead_off: dict[str, bool | None], drawn: Sequence[str]) -> list[str]:
    """Electrodes that are off and feed none of the drawn leads (a chest electrode whose lead is not shown)."""
    used = {e for lead in drawn for e in electrodes_of(lead)}
    return [e for e, off in lead_off.items() if off and e not in used and e not in LIMB_ELECTRODES]


def audio_text(state: MonitorState) -> tuple[str, str]:
    """(text, style) of the audio indicator: paused with countdown, OFF, on, or nothing when unknown."""
    left = state.audio_paused_max_s()
    if left is not None:
        return f"♪ paused {mmss(left)}", "bold #f1c40f"
    if state.audio == "off":
        return "♪ OFF", "bold reverse #f1c40f"
    if state.audio == "on":
        return "♪ on", "#50fa7b"
    return "", ""


class ElectrodeStatus(Widget):
    """Per-electrode status: every electrode when the line has room, else the ones that are off; an off
    electrode whose lead is not drawn says so ("not drawn": press ``l``)."""

    COMPONENT_CLASSES = {"electrode--on", "electrode--off", "electrode--unknown"}

    def __init__(self, state: MonitorState, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.state = state
        self.drawn: tuple[str, ...] = ()  # the leads on screen (set by the monitor screen)

    def render(self) -> Text:
        w = self.state.window
        lead_off = w.lead_off if w is not None else {}
        on, off, unknown = (self.get_component_rich_style(f"electrode--{k}") for k in ("on", "off", "unknown"))
        if w is None:
            return Text("Electrodes: waiting", style=unknown)
        stale = self.state.stale_s()
        if stale is not None:
            return Text(f"Electrodes: --- {age_text(stale)}", style=unknown)
        if not lead_off:
            return Text("Electrodes: not reported", style=unknown)
        offs = [n for n, v in lead_off.items() if v]
        unk = [n for n, v in lead_off.items() if v is None]
        hidden = undrawn_off(lead_off, self.drawn)
        if offs:
            out = Text("OFF: ", style=off)
            out.append(" ".join(f"{n}✗" for n in offs), off)
            if hidden:
                note = " (not drawn)" if len(hidden) == len(offs) else f" ({' '.join(hidden)} not drawn)"
                if out.cell_len + len(note) <= self.size.width:
                    out.append(note, off)
            return out
        if unk:
            return Text("Electrodes ?: " + " ".join(unk), style=unknown)
        return Text(f"Electrodes: all {len(lead_off)} on", style=on)


class HeartRate(Vertical):
    """HR (bpm) in Digits, coloured by its alarm, with its limits; audio state; quality; electrodes."""

    COMPONENT_CLASSES = {"quality--poor"}

    def __init__(self, state: MonitorState, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.state = state
        self._shown: tuple | None = None  # what is on screen, to skip redraws that change nothing

    def compose(self) -> ComposeResult:
        with Horizontal(id="hr-head"):
            yield Static("", id="hr-title")
            yield Static("", id="audio")
        with Horizontal(id="hr-row"):
            yield Digits("---", id="hr-digits")
            yield Static("", id="hr-limits")
        yield Static("", id="hr-quality")
        yield ElectrodeStatus(self.state, id="electrodes")

    def set_drawn(self, leads: Sequence[str]) -> None:
        """The leads on screen (an off electrode of a lead not drawn is marked)."""
        electrodes = self.query_one(ElectrodeStatus)
        electrodes.drawn = tuple(leads)
        electrodes.refresh()

    def update_view(self) -> None:
        """Show the latest heart rate and quality (cheap when nothing changed: call every frame)."""
        w = self.state.window
        stale = self.state.stale_s()
        hr = self.state.heart_rate()
        alarm = next((self.state.alarms[n] for n in HR_ALARMS if n in self.state.alarms), None)
        audio = audio_text(self.state)
        key = (hr_text(hr), alarm.change if alarm else None, w, None if stale is None else int(stale), audio,
               self.state.hr_limits)
        if key == self._shown:
            return
        self._shown = key
        digits = self.query_one("#hr-digits", Digits)
        digits.update(hr_text(hr))
        for p in ("high", "medium", "low"):
            digits.set_class(alarm is not None and alarm.change.priority.value == p, f"-alarm-{p}")
        digits.set_class(stale is not None, "-stale")
        title = Text("HR bpm", style="bold")
        if alarm is not None:
            title.append(f" {alarm.change.priority.marker}", "bold")
        self.query_one("#hr-title", Static).update(title)
        self.query_one("#audio", Static).update(Text(audio[0], style=audio[1]))
        self.query_one("#hr-limits", Static).update(self._limits(alarm.name if alarm else None, stale))
        self.query_one("#hr-quality", Static).update(self._quality(stale))
        self.query_one(ElectrodeStatus).refresh()

    def _limits(self, alarm: str | None, stale: float | None) -> Text:
        """The hr_high / hr_low limits beside the digits (the one in alarm reversed), and a stale age."""
        out = Text(no_wrap=True)
        limits = self.state.hr_limits
        if limits is not None:
            low, high = limits
            sounding = alarm is not None and self.state.alarms[alarm].change.state in (AlarmState.ACTIVE, AlarmState.LATCHED)
            out.append(f" hi {high:3.0f}", "bold reverse" if alarm == "hr_high" and sounding else "dim")
            out.append("\n")
            out.append(f" lo {low:3.0f}", "bold reverse" if alarm == "hr_low" and sounding else "dim")
        else:
            out.append("\n")
        out.append("\n")
        if stale is not None:
            out.append(f" {age_text(stale)}", "bold #f1c40f")
        return out

    def _quality(self, stale: float | None) -> Text:
        """Worst lead's SQI (reversed red below the limit) and why the last window was not scored."""
        w = self.state.window
        poor_style = self.get_component_rich_style("quality--poor")
        if w is None:
            return Text("SQI --", style="dim")
        if stale is not None:
            return Text(f"SQI --- {age_text(stale)}", style="dim")
        out = Text(no_wrap=True)
        if w.quality:
            worst_lead, worst = min(w.quality.items(), key=lambda kv: kv[1])
            poor = self.state.poor_quality(worst)
            out.append(f"SQI {worst:.2f}", poor_style if poor else "dim")
            if poor:
                out.append(f" {worst_lead}", poor_style)
        if not w.scored and w.reason:
            out.append(f"  {SHORT_REASONS.get(w.reason, w.reason)}", poor_style)
        return out
