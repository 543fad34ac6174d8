"""The multi-bed overview (Textual): one tile per bed, most urgent first, read from central.db.

    run_overview(db, tz=None) -> int                      # the terminal app (``bedside central --ui``)
    python -m bedside.central.overview --db central.db    # what textual-serve runs per browser session

``OverviewApp(db, tz=None, clock=time.time, refresh_s=1.0)``: every ``refresh_s`` a thread worker reads
central.db (read-only; never on the UI thread) and the app redraws. ``refresh_s=0`` (tests, snapshots):
no timer; call ``apply(views, now)`` with data from ``overview_data.read_overview``.

Keys: arrows move between tiles, Enter (or a click) opens the bed (its current alarms and history),
Esc goes back, ``r`` reads the database now, Ctrl+Q quits.
"""

from __future__ import annotations

import argparse
import logging
import sqlite3
import sys
import time
from collections import deque
from collections.abc import Callable
from datetime import tzinfo
from pathlib import Path

from rich.text import Text
from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Grid, VerticalScroll
from textual.css.query import NoMatches
from textual.widgets import Footer, Static

from bedside.central.bed_screen import BedScreen
from bedside.central.bed_tile import TILE_WIDTH, BedTile
from bedside.central.overview_data import BedView, HistoryRow, read_history, read_overview
from bedside.central.store import CentralStoreError, connect_readonly

TITLE = "CroMoTEX central"


def columns_for(width: int) -> int:
    """Tile columns that fit ``width`` cells (at least one)."""
    return max(1, (width + 1) // (TILE_WIDTH + 1))


class OverviewApp(App):
    """All beds at once; a view on central.db."""

    CSS_PATH = "overview.tcss"
    TITLE = TITLE
    BINDINGS = [
        Binding("enter", "open_focused", "Open bed", show=False),
        Binding("r", "reload", "Reload"),
        Binding("ctrl+q", "quit", "Quit", priority=True),
    ]

    def __init__(self, db: str | Path, *, tz: tzinfo | None = None, clock: Callable[[], float] = time.time,
                 refresh_s: float = 1.0) -> None:
        super().__init__()
        self.db = Path(db)
        self.tz = tz
        self.clock = clock
        self.refresh_s = refresh_s
        self.views: list[BedView] = []
        self.now = clock()
        self.error = ""

    def compose(self) -> ComposeResult:
        yield Static(id="summary")
        with VerticalScroll(id="tiles-scroll", can_focus=False):
            yield Static("waiting for central.db ...", id="empty")
            yield Grid(id="tiles")
        yield Footer()

    def on_mount(self) -> None:
        self._summary()
        if self.refresh_s > 0:
            self.action_reload()
            self.set_interval(self.refresh_s, self.action_reload)

    def on_resize(self) -> None:
        self.query_one("#tiles", Grid).styles.grid_size_columns = columns_for(self.size.width)

    # -- data ------------------------------------------------------------------------------------------

    def action_reload(self) -> None:
        """Read central.db now (in a thread)."""
        screen = self.screen if isinstance(self.screen, BedScreen) else None
        self._read(screen.bed_id if screen else None)

    @work(thread=True, exclusive=True, group="db")
    def _read(self, bed_id: str | None) -> None:
        now = self.clock()
        try:
            conn = connect_readonly(self.db)
        except CentralStoreError as exc:
            self.call_from_thread(self._fail, str(exc))
            return
        try:
            views = read_overview(conn)
            history = read_history(conn, bed_id) if bed_id else []
        except sqlite3.Error as exc:
            self.call_from_thread(self._fail, f"{self.db}: cannot read ({exc})")
            return
        finally:
            conn.close()
        self.call_from_thread(self.apply, views, now, history, bed_id)

    def _fail(self, message: str) -> None:
        self.error = message
        if self.query("#summary"):  # not while the app is closing
            self._summary()

    def apply(self, views: list[BedView], now: float, history: list[HistoryRow] | None = None,
              bed_id: str | None = None) -> None:
        """Show new data: the tiles keep their places and show the beds in the new order; the focus follows
        its bed."""
        try:
            grid = self.query_one("#tiles", Grid)
        except NoMatches:  # a read that finished while the app was closing (its widgets already removed)
            return
        focused = self.focused.view.bed_id if isinstance(self.focused, BedTile) else None
        self.views, self.now, self.error = views, now, ""
        tiles = list(grid.query(BedTile))
        for tile, view in zip(tiles, views):
            tile.show(view, now)
        if len(views) > len(tiles):
            new = [BedTile(v, now) for v in views[len(tiles):]]
            grid.mount(*new)
            if not tiles and not isinstance(self.screen, BedScreen):
                self.call_after_refresh(new[0].focus)  # the most urgent bed
        for tile in tiles[len(views):]:
            tile.remove()
        self.query_one("#empty").display = not views
        if focused is not None:
            for tile in grid.query(BedTile):
                if tile.view.bed_id == focused and tile is not self.focused:
                    tile.focus(scroll_visible=False)
        self._summary()
        screen = self.screen
        if isinstance(screen, BedScreen):
            view = next((v for v in views if v.bed_id == screen.bed_id), None)
            if view is not None and (bed_id == screen.bed_id or history is None):
                screen.show(view, now, history if history is not None else screen.history)

    def _summary(self) -> None:
        alarms = [v.top for v in self.views if v.top is not None]
        counts = {p: sum(a.priority == p for a in alarms) for p in ("high", "medium", "low")}
        text = Text(f" {TITLE} ", style="bold")
        text.append(f" {len(self.views)} beds ")
        for p, marker, colour in (("high", "***", "bold white on #c0392b"), ("medium", "**", "bold black on #f1c40f"),
                                  ("low", "*", "black on #00a8b5")):
            if counts[p]:
                text.append(f" {marker} {counts[p]} ", style=colour)
                text.append(" ")
        silent = sum(v.link != "connected" for v in self.views)
        if silent:
            text.append(f" {silent} not linked ", style="bold white on #c0392b")
        text.append(f"  {self.db.name}", style="#7f8c9d")
        if self.error:
            text = Text(f" {TITLE}  {self.error}", style="bold white on #c0392b")
        self.query_one("#summary", Static).update(text)

    # -- keys --------------------------------------------------------------------------------------------

    def action_move(self, dx: int, dy: int) -> None:
        """Move the focus between tiles (arrows): by one, or by a row of tiles."""
        tiles = list(self.query_one("#tiles", Grid).query(BedTile))
        if not tiles:
            return
        i = tiles.index(self.focused) if self.focused in tiles else -1
        step = dx + dy * columns_for(self.size.width)
        tiles[min(max(i + step, 0), len(tiles) - 1) if i >= 0 else 0].focus()

    def action_open_focused(self) -> None:
        """Open the focused bed (Enter)."""
        if isinstance(self.focused, BedTile):
            self.open_bed(self.focused.view.bed_id)

    def on_bed_tile_open(self, message: BedTile.Open) -> None:
        self.open_bed(message.bed_id)

    def open_bed(self, bed_id: str) -> None:
        """Push the bed's screen and read its history."""
        view = next((v for v in self.views if v.bed_id == bed_id), None)
        if view is None or isinstance(self.screen, BedScreen):
            return
        self.push_screen(BedScreen(view, self.now, tz=self.tz))
        if self.refresh_s > 0:
            self._read(bed_id)


class _NotifyHandler(logging.Handler):
    """While the overview owns the terminal, log warnings (the MLLP server's refusals, a bed's errors) become
    notifications instead of text written under the screen; the last few are kept for stderr at exit."""

    def __init__(self, app: App, keep: int = 20) -> None:
        super().__init__(logging.WARNING)
        self.app = app
        self.kept: deque[str] = deque(maxlen=keep)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            first = (record.getMessage().splitlines() or [""])[0][:300]
            self.kept.append(f"{record.levelname} {record.name}: {first}")
            severity = "error" if record.levelno >= logging.ERROR else "warning"
            self.app.notify(first, title=record.name, severity=severity, markup=False)  # thread-safe
        except Exception:  # noqa: BLE001 - logging must never fail the caller
            self.handleError(record)


def run_overview(db: str | Path, tz: tzinfo | None = None) -> int:
    """Run the overview in this terminal until Ctrl+Q; 0, or 1 when the app stopped on an error.

    Log handlers writing to this terminal are set aside while the screen is up (their text would scramble
    it); warnings are shown as notifications and the last ones are printed to stderr once the screen closed.
    """
    app = OverviewApp(db, tz=tz)
    root = logging.getLogger()
    on_terminal = [h for h in root.handlers if isinstance(h, logging.StreamHandler)
                   and getattr(getattr(h, "stream", None), "isatty", lambda: False)()]
    handler = _NotifyHandler(app)
    for h in on_terminal:
        root.removeHandler(h)
    root.addHandler(handler)
    try:
        app.run()
    finally:
        root.removeHandler(handler)
        for h in on_terminal:
            root.addHandler(h)
    for line in handler.kept:
        print(f"bedside central: {line}", file=sys.stderr)
    return app.return_code or 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bedside.central.overview", description=__doc__.splitlines()[0])
    parser.add_argument("--db", required=True, help="central.db written by `bedside central`")
    args = parser.parse_args(argv)
    return run_overview(args.db)


if __name__ == "__main__":
    raise SystemExit(main())
