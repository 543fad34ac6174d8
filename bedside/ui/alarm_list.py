"""The list of current alarms with their times; its cursor picks the alarm to acknowledge (``a``) or
to show in full (Enter: the alarm detail)."""

from __future__ import annotations

from datetime import tzinfo

from rich.text import Text
from textual.widgets import DataTable

from bedside.events import AlarmKind, AlarmState
from bedside.ui.alarm_format import CARRIED_OVER, alarm_name, carried_over, clock, one_line, state_text
from bedside.ui.monitor_state import MonitorState

KIND_LETTER = {AlarmKind.PHYSIOLOGICAL: "P", AlarmKind.TECHNICAL: "T"}


class AlarmList(DataTable):
    """Current (not cleared) alarms, most urgent first: marker, alarm, kind, state, action, raised, changed,
    message (one line; the detail shows all of it)."""

    COMPONENT_CLASSES = DataTable.COMPONENT_CLASSES | {"alarm-list--high", "alarm-list--medium", "alarm-list--low",
                                                      "alarm-list--ack"}

    def __init__(self, state: MonitorState, *, tz: tzinfo | None = None, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=False)
        self.state = state
        self.tz = tz

    def on_mount(self) -> None:
        for label, key in (("", "marker"), ("Alarm", "alarm"), ("", "kind"), ("State", "state"),
                           ("Action", "action"), ("Raised", "raised"), ("Changed", "changed"), ("Message", "message")):
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
        rows = []
        for e in entries:
            c = e.change
            style = self.get_component_rich_style(
                "alarm-list--ack" if c.state is AlarmState.ACKNOWLEDGED else f"alarm-list--{c.priority.value}")
            name = Text(alarm_name(c.alarm), style)
            if carried_over(c):
                name.append(f" ({CARRIED_OVER})", "italic")
            rows.append((c.alarm, [
                Text(c.priority.marker, style), name, Text(KIND_LETTER[c.kind]),
                Text(state_text(c, self.state.audio_paused_left_s(e)), style), Text(self.state.action(c), style),
                Text(clock(e.raised_wall, self.tz)), Text(clock(c.wall_time, self.tz)), Text(one_line(c.message))]))
        # Column widths are set from the content before the rows go in: DataTable measures them later (when
        # idle) but keeps cells it rendered before that at the old width, which squashed the rows.
        for i, column in enumerate(self.ordered_columns):
            column.auto_width = False
            column.width = max([column.label.cell_len, *(cells[i].cell_len for _, cells in rows)])
        for key, cells in rows:
            self.add_row(*cells, key=key)
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
