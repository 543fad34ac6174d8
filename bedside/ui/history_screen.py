"""The alarm history: every alarm state transition of this session, newest first.

The banner and status bar stay on top so no alarm is hidden while the history is open. The screen
shows the transitions the UI has received (the last ``HISTORY_MAX``); the database holds them all
(``bedside alerts --db DB``).
"""

from __future__ import annotations

from datetime import tzinfo

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer

from bedside.events import AlarmState
from bedside.ui.alarm_banner import AlarmBanner
from bedside.ui.alarm_format import alarm_name, clock, mmss
from bedside.ui.alarm_list import KIND_LETTER
from bedside.ui.monitor_state import MonitorState
from bedside.ui.status_bar import StatusBar
from bedside.ui.waveform import format_clock

#: The table's columns: time, signal time, marker, alarm, kind (P/T), from, to, who, message.
COLUMNS = ("Time", "Signal", "", "Alarm", "", "From", "To", "Who", "Message")


class HistoryScreen(Screen):
    """A table of alarm transitions: time, signal time, marker, alarm, kind, from -> to, who, message."""

    CSS_PATH = "history_screen.tcss"
    BINDINGS = [
        Binding("escape,h", "app.pop_screen", "Back", key_display="Esc"),
        Binding("p", "app.pause_audio", "Pause audio"),
        Binding("question_mark,f1", "app.help", "Help", key_display="?"),
    ]

    def __init__(self, state: MonitorState, *, bed_id: str, user: str, tz: tzinfo | None) -> None:
        super().__init__(id="history")
        self.state = state
        self.bed_id = bed_id
        self.user = user
        self.tz = tz
        self.shown = 0  # transitions in the table

    def compose(self) -> ComposeResult:
        yield StatusBar(self.state, bed_id=self.bed_id, user=self.user, id="status")
        yield AlarmBanner(self.state, tz=self.tz, id="banner")
        table: DataTable = DataTable(id="history-table", cursor_type="row")
        table.border_title = "Alarm history (this session; all of it: bedside alerts --db DB)"
        table.add_columns(*COLUMNS)  # here, not in on_mount: the table never exists without its columns
        yield table
        yield Footer()

    def on_mount(self) -> None:
        self._fill_table()
        self.query_one(DataTable).focus()

    def update_view(self, changed: set[str]) -> None:
        """Rebuild the table when transitions arrived (newest on top); redraw banner and status bar."""
        if "alarms" in changed or self.shown != len(self.state.history):
            self._fill_table()
        self.query_one(AlarmBanner).update_view()
        self.query_one(StatusBar).update_view()

    def _fill_table(self) -> None:
        """One row per transition in ``state.history``, newest first, one cell per column."""
        table = self.query_one(DataTable)
        table.clear()
        for c in reversed(self.state.history):
            to = c.state.value.upper()
            if c.state is AlarmState.AUDIO_PAUSED and c.audio_paused_until_s is not None:
                to += f" {mmss(c.audio_paused_until_s - c.t_s)}"
            table.add_row(clock(c.wall_time, self.tz), format_clock(c.t_s), c.priority.marker,
                          Text(alarm_name(c.alarm), style="bold"), KIND_LETTER[c.kind],
                          c.previous.value.upper() if c.previous else "", to, c.who or "", c.message)
        self.shown = len(self.state.history)

    def show_frame(self, end_index: int) -> None:
        """No traces here; the banner's countdowns still move."""
        if self.state.any_audio_paused():
            self.query_one(AlarmBanner).update_view()
