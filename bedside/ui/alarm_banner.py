"""The alarm banner: the most urgent physiological and technical alarms, on separate lines.

Coloured by priority and marked ``***`` / ``**`` / ``*`` so it never relies on colour alone; each
line names the alarm, its message, its state (AUDIO PAUSED with the time left) and when it was raised,
and how many more alarms of that kind are current.
"""

from __future__ import annotations

from datetime import tzinfo

from rich.text import Text
from textual.widget import Widget

from bedside.events import AlarmKind, AlarmState
from bedside.ui.alarm_format import alarm_name, clock, state_text
from bedside.ui.monitor_state import AlarmEntry, MonitorState

KIND_TITLES = {AlarmKind.PHYSIOLOGICAL: "PATIENT", AlarmKind.TECHNICAL: "EQUIPMENT"}
QUIET_TEXT = {AlarmKind.PHYSIOLOGICAL: "PATIENT    no alarm", AlarmKind.TECHNICAL: "EQUIPMENT  no alarm"}


class AlarmBanner(Widget):
    """Two lines: physiological (patient) alarms, then technical (equipment) alarms."""

    COMPONENT_CLASSES = {"banner--high", "banner--medium", "banner--low", "banner--high-ack",
                         "banner--medium-ack", "banner--low-ack", "banner--quiet"}

    def __init__(self, state: MonitorState, *, tz: tzinfo | None = None, id: str | None = None) -> None:
        super().__init__(id=id)
        self.state = state
        self.tz = tz
        self._shown: tuple | None = None

    def update_view(self) -> None:
        """Redraw only when a line's text changed (an alarm, or an AUDIO PAUSED countdown second)."""
        lines = (self.line(AlarmKind.PHYSIOLOGICAL), self.line(AlarmKind.TECHNICAL))
        if lines != self._shown:
            self._shown = lines
            self.refresh()

    def line(self, kind: AlarmKind) -> tuple[str, str]:
        """(text, component class) of one kind's line."""
        current = self.state.current(kind)
        if not current:
            return QUIET_TEXT[kind], "banner--quiet"
        top: AlarmEntry = current[0]
        c = top.change
        more = f"  +{len(current) - 1} more" if len(current) > 1 else ""
        text = (f"{c.priority.marker:<3} {KIND_TITLES[kind]:<9} {alarm_name(c.alarm)}  "
                f"{state_text(c, self.state.audio_paused_left_s(top))}  {clock(top.raised_wall, self.tz)}"
                f"{more}  {c.message}")
        ack = "-ack" if c.state is AlarmState.ACKNOWLEDGED else ""  # still visible, but no longer shouting
        cls = f"banner--{c.priority.value}{ack}"
        return text, cls

    def render(self) -> Text:
        width = self.size.width
        out = Text(no_wrap=True, overflow="crop")
        for i, kind in enumerate((AlarmKind.PHYSIOLOGICAL, AlarmKind.TECHNICAL)):
            text, cls = self.line(kind)
            if i:
                out.append("\n")
            out.append(f" {text}".ljust(width)[:width], self.get_component_rich_style(cls))
        return out
