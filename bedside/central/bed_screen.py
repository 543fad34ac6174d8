"""One bed on the central: its tile on top, the alarms that are not cleared, and its alarm history."""

from __future__ import annotations

from datetime import tzinfo

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer

from bedside.central.bed_tile import BedTile
from bedside.central.overview_data import MARKERS, BedView, HistoryRow
from bedside.ui.alarm_format import alarm_name, clock

ALARM_COLUMNS = ("", "Alarm", "", "State", "Raised", "Changed", "Message")
HISTORY_COLUMNS = ("Time", "", "Alarm", "", "From", "To", "Cause", "Message")
KIND_LETTER = {"physiological": "P", "technical": "T"}


class BedScreen(Screen):
    """A bed's tile, its current alarms (most urgent first) and its history (newest first)."""

    CSS_PATH = "bed_screen.tcss"
    BINDINGS = [Binding("escape", "app.pop_screen", "Back", key_display="Esc"),
                Binding("tab", "focus_next", "Alarms/history", show=False)]

    def __init__(self, view: BedView, now: float, *, tz: tzinfo | None) -> None:
        super().__init__(id="bed-screen")
        self.bed_id = view.bed_id
        self.view = view
        self.now = now
        self.tz = tz
        self.history: list[HistoryRow] = []

    def compose(self) -> ComposeResult:
        yield BedTile(self.view, self.now, id="bed-tile")
        alarms: DataTable = DataTable(id="bed-alarms", cursor_type="row")
        alarms.border_title = f"Alarms of {self.bed_id} (not cleared)"
        alarms.add_columns(*ALARM_COLUMNS)
        yield alarms
        history: DataTable = DataTable(id="bed-history", cursor_type="row")
        history.border_title = f"Alarm history of {self.bed_id} (newest first; all of it in central.db)"
        history.add_columns(*HISTORY_COLUMNS)
        yield history
        yield Footer()

    def on_mount(self) -> None:
        self.show(self.view, self.now, self.history)
        self.query_one("#bed-alarms", DataTable).focus()

    def show(self, view: BedView, now: float, history: list[HistoryRow]) -> None:
        """Redraw with new data (called by the app after each read of central.db)."""
        self.view, self.now, self.history = view, now, history
        if not self.is_mounted:
            return
        tile = self.query_one(BedTile)
        tile.show(view, now)  # its component classes also colour the table cells
        alarms = self.query_one("#bed-alarms", DataTable)
        alarms.clear()
        for a in view.alarms:
            cls = f"tile--{a.priority}{'-ack' if a.state == 'ACKNOWLEDGED' else ''}"
            s = tile.get_component_rich_style(cls)
            source = " (central)" if a.source == "central" else ""
            alarms.add_row(Text(a.marker, s), Text(alarm_name(a.alarm), s), KIND_LETTER.get(a.kind, "?"),
                           Text(a.state.upper(), s), clock(a.raised_wall, self.tz), clock(a.wall_time, self.tz),
                           a.message + source)
        table = self.query_one("#bed-history", DataTable)
        table.clear()
        for h in history:
            table.add_row(clock(h.wall_time, self.tz), MARKERS.get(h.priority, "?"),
                          Text(alarm_name(h.alarm), style="bold"), KIND_LETTER.get(h.kind, "?"),
                          (h.previous or "").upper(), h.state.upper(), h.cause, h.message)
