"""The list of current alarms with their times; its cursor picks the alarm to acknowledge."""

from __future__ import annotations

from datetime import tzinfo

from rich.text import Text
from textual.widgets import DataTable

from bedside.events import AlarmKind, AlarmState
from bedside.ui.alarm_format import alarm_name, clock, state_text
from bedside.ui.monitor_state import MonitorState

KIND_LETTER = {AlarmKind.PHYSIOLOGICAL: "P", AlarmKind.TECHNICAL: "T"}


class AlarmList(DataTable):
    """Current (not cleared) alarms, most urgent first: marker, alarm, kind, state, raised, changed, message."""

    COMPONENT_CLASSES = DataTable.COMPONENT_CLASSES | {"alarm-list--high", "alarm-list--medium", "alarm-list--low",
                                                      "alarm-list--ack"}

    def __init__(self, state: MonitorState, *, tz: tzinfo | None = None, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=False)
        self.state = state
        self.tz = tz

    def on_mount(self) -> None:
        for label, key in (("", "marker"), ("Alarm", "alarm"), ("", "kind"), ("State", "state"),
                           ("Raised", "raised"), ("Changed", "changed"), ("Message", "message")):
            self.add_column(label, key=key)

    def selected_alarm(self) -> str | None:
        """The alarm identifier under the cursor, or None when the list is empty."""
        if self.row_count == 0:
            return None
        key, _ = self.coordinate_to_cell_key(self.cursor_coordinate)
        return key.value

    def update_view(self) -> None:
        """Rebuild the rows from the state, keeping the cursor on the same alarm when it is still listed."""
        keep = self.selected_alarm()
        self.clear()
        entries = self.state.current()
        for e in entries:
            c = e.change
            style = self.get_component_rich_style(
                "alarm-list--ack" if c.state is AlarmState.ACKNOWLEDGED else f"alarm-list--{c.priority.value}")
            self.add_row(
                Text(c.priority.marker, style), Text(alarm_name(c.alarm), style), KIND_LETTER[c.kind],
                Text(state_text(c, self.state.audio_paused_left_s(e)), style),
                clock(e.raised_wall, self.tz), clock(c.wall_time, self.tz), c.message, key=c.alarm)
        names = [e.name for e in entries]
        if keep in names:
            self.move_cursor(row=names.index(keep), animate=False)

    def refresh_countdowns(self) -> None:
        """Update only the state cells of audio-paused alarms (called every frame while any is paused)."""
        for e in self.state.current():
            if e.change.state is AlarmState.AUDIO_PAUSED:
                text = state_text(e.change, self.state.audio_paused_left_s(e))
                if str(self.get_cell(e.name, "state")) != text:  # a new second: redraw that cell only
                    style = self.get_component_rich_style(f"alarm-list--{e.change.priority.value}")
                    self.update_cell(e.name, "state", Text(text, style))
