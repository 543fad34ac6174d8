"""The alarm banner: the most urgent physiological and technical alarms, on separate lines.

Coloured by priority and marked ``***`` / ``**`` / ``*`` so it never relies on colour alone; each
line names the alarm, its state (AUDIO PAUSED with the time left), what to do (the alarm's action
text), how many more alarms of that kind are current, when it was raised and its message. The parts
come in that order of importance and a part that does not fit whole is left out, never cut: at 80
columns the message usually gives way (it is in full in the alarm list and its detail, Enter).
"""

from __future__ import annotations

from datetime import tzinfo

from rich.text import Text
from textual.widget import Widget

from bedside.events import AlarmKind, AlarmState
from bedside.ui.alarm_format import alarm_name, carried_over, clock, one_line, state_text
from bedside.ui.monitor_state import AlarmEntry, MonitorState

KIND_TITLES = {AlarmKind.PHYSIOLOGICAL: "PATIENT", AlarmKind.TECHNICAL: "EQUIPMENT"}
CARRIED_OVER_TAG = "(carried over)"
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

    def parts(self, kind: AlarmKind) -> tuple[tuple[str, ...], str]:
        """(parts in order of importance, component class) of one kind's line; the first part is required."""
        current = self.state.current(kind)
        if not current:
            return (QUIET_TEXT[kind],), "banner--quiet"
        top: AlarmEntry = current[0]
        c = top.change
        head = (f"{c.priority.marker:<3} {KIND_TITLES[kind]:<9} {alarm_name(c.alarm)}  "
                f"{state_text(c, self.state.audio_paused_left_s(top))}")
        parts = [head, self.state.action(c), f"+{len(current) - 1} more" if len(current) > 1 else "",
                 CARRIED_OVER_TAG if carried_over(c) else "", clock(top.raised_wall, self.tz), one_line(c.message)]
        ack = "-ack" if c.state is AlarmState.ACKNOWLEDGED else ""  # still visible, but no longer shouting
        return tuple(p for p in parts if p), f"banner--{c.priority.value}{ack}"

    def line(self, kind: AlarmKind, width: int = 10_000) -> tuple[str, str]:
        """(text, component class) of one kind's line in ``width`` cells: whole parts only, by importance."""
        parts, cls = self.parts(kind)
        text = parts[0]
        for part in parts[1:]:
            if 1 + len(text) + 2 + len(part) <= width:  # 1: the margin render() puts in front
                text += f"  {part}"
        return text, cls

    def update_view(self) -> None:
        """Redraw only when a line's text changed (an alarm, or an AUDIO PAUSED countdown second)."""
        lines = (self.parts(AlarmKind.PHYSIOLOGICAL), self.parts(AlarmKind.TECHNICAL))
        if lines != self._shown:
            self._shown = lines
            self.refresh()

    def render(self) -> Text:
        width = self.size.width
        out = Text(no_wrap=True, overflow="crop")
        for i, kind in enumerate((AlarmKind.PHYSIOLOGICAL, AlarmKind.TECHNICAL)):
            text, cls = self.line(kind, width)
            if i:
                out.append("\n")
            out.append(f" {text}".ljust(width)[:width], self.get_component_rich_style(cls))
        return out
