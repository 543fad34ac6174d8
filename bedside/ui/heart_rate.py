"""Heart rate in large digits, with the signal-quality index and the per-electrode lead status."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widget import Widget
from textual.widgets import Digits, Static

from bedside.ui.monitor_state import MonitorState

#: Alarms about the heart rate (their state colours the digits).
HR_ALARMS = ("hr_high", "hr_low")
#: A heart rate older than this (s of signal time) is not shown: no number is better than an old one.
HR_STALE_S = 15.0


def hr_text(hr_bpm: float | None) -> str:
    """The digits shown: a whole number of beats per minute, or --- when there is none."""
    return "---" if hr_bpm is None else f"{round(hr_bpm):d}"


class ElectrodeStatus(Widget):
    """Per-electrode lead status: every electrode when the line has room, else the ones that are off."""

    COMPONENT_CLASSES = {"electrode--on", "electrode--off", "electrode--unknown"}

    def __init__(self, state: MonitorState, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.state = state

    def render(self) -> Text:
        w = self.state.window
        lead_off = w.lead_off if w is not None else {}
        on, off, unknown = (self.get_component_rich_style(f"electrode--{k}") for k in ("on", "off", "unknown"))
        if w is None:
            return Text("Electrodes: waiting for data", style=unknown)
        if not lead_off:
            return Text("Electrodes: not reported", style=unknown)
        full = Text("")
        for name, is_off in lead_off.items():
            if is_off is None:
                full.append(f"{name}? ", unknown)
            elif is_off:
                full.append(f"{name}✗", off)
                full.append(" ")
            else:
                full.append(f"{name} ", on)
        if full.cell_len <= self.size.width:
            return full
        offs = [n for n, v in lead_off.items() if v]
        unk = [n for n, v in lead_off.items() if v is None]
        if offs:
            return Text("OFF: " + " ".join(offs), style=off)
        if unk:
            return Text("Unknown: " + " ".join(unk), style=unknown)
        return Text(f"Electrodes on ({len(lead_off)})", style=on)


class HeartRate(Vertical):
    """HR (bpm) in Digits, coloured by its alarm; signal quality; electrodes."""

    COMPONENT_CLASSES = {"quality--poor"}

    def __init__(self, state: MonitorState, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.state = state
        self._shown: tuple | None = None  # what is on screen, to skip redraws that change nothing

    def compose(self) -> ComposeResult:
        yield Static("", id="hr-title")
        yield Digits("---", id="hr-digits")
        yield ElectrodeStatus(self.state, id="electrodes")

    def update_view(self) -> None:
        """Show the latest window's heart rate and quality (cheap when nothing changed: call every frame)."""
        w = self.state.window
        hr = w.hr_bpm if w is not None and self.state.now_s - w.t_s <= HR_STALE_S else None
        alarm = next((self.state.alarms[n] for n in HR_ALARMS if n in self.state.alarms), None)
        key = (hr_text(hr), alarm.change if alarm else None, w)
        if key == self._shown:
            return
        self._shown = key
        digits = self.query_one("#hr-digits", Digits)
        digits.update(hr_text(hr))
        for p in ("high", "medium", "low"):
            digits.set_class(alarm is not None and alarm.change.priority.value == p, f"-alarm-{p}")
        title = Text("HR bpm", style="bold")
        if w is not None and w.quality:
            worst_lead, worst = min(w.quality.items(), key=lambda kv: kv[1])
            poor = self.state.poor_quality(worst)
            style = self.get_component_rich_style("quality--poor") if poor else "dim"
            title.append(f"  SQI {worst:.2f}", style)
            if poor:
                title.append(f" {worst_lead}", style)
        if w is not None and not w.scored and w.reason:
            why = f"{w.reason}: {w.detail}" if getattr(w, "detail", "") else w.reason
            title.append(f"  {why}", self.get_component_rich_style("quality--poor"))
        if alarm is not None:
            title.append(f" {alarm.change.priority.marker}", "bold")
        self.query_one("#hr-title", Static).update(title)
        self.query_one(ElectrodeStatus).refresh()
