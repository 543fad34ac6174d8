"""The alarm history screen under a live stream, and a screen that fails (Pilot, fixed events, no engine).

Issue 12: opening the history (``h``) once an alarm was logged could crash the monitor with
``ValueError: More values provided than there are columns``: the frame timer redrew the history screen
after it was pushed but before it was mounted (its columns were added in ``on_mount``).
"""

from __future__ import annotations

import asyncio
import logging
import re

from textual.app import ComposeResult
from textual.screen import Screen
from textual.widgets import DataTable, Static

import ui_scenes as scenes
from bedside.events import AlarmKind, AlarmState, Priority
from bedside.ui.alarm_banner import AlarmBanner
from bedside.ui.alarm_format import alarm_name
from bedside.ui.alarm_list import AlarmList
from bedside.ui.app import MonitorApp
from bedside.ui.history_screen import COLUMNS, HistoryScreen
from bedside.ui.monitor_screen import MonitorScreen
from test_ui_app import pytestmark  # noqa: F401 - needs the record
from ui_pilot import feed, make_app, sync

ALARMS = ("edema", "pleural_effusion", "cardiomegaly", "poor_signal")


def alarm_events(start: int, n: int) -> list[object]:
    """``n`` alarm transitions from the ``start``-th on: each alarm raised, then cleared, in turn."""
    out = []
    for i in range(start, start + n):
        alarm = ALARMS[i % len(ALARMS)]
        raised = (i // len(ALARMS)) % 2 == 0
        kind = AlarmKind.TECHNICAL if alarm == "poor_signal" else AlarmKind.PHYSIOLOGICAL
        out.append(scenes.change(scenes.END_S + i, alarm, AlarmState.ACTIVE if raised else AlarmState.CLEARED,
                                 None if raised else AlarmState.ACTIVE, f"transition {i}", kind=kind,
                                 priority=Priority.LOW if kind is AlarmKind.TECHNICAL else Priority.MEDIUM))
    return out


def table_rows(app: MonitorApp) -> list[tuple[str, str, str]]:
    """(alarm, to, message) of each row of the history table, top to bottom (without AUDIO PAUSED's m:ss)."""
    table = app.screen.query_one("#history-table", DataTable)
    assert len(table.columns) == len(COLUMNS)
    rows = [table.get_row_at(i) for i in range(table.row_count)]
    assert all(len(r) == len(COLUMNS) for r in rows)
    return [(str(r[3]), re.sub(r" \d+:\d\d$", "", str(r[6])), str(r[8])) for r in rows]


def logged_rows(app: MonitorApp) -> list[tuple[str, str, str]]:
    """What the history table must show: every transition the UI received, newest first."""
    return [(alarm_name(c.alarm), c.state.value.upper(), c.message) for c in reversed(app.state.history)]


async def tick_through_mount(app: MonitorApp, frames: int = 8) -> None:
    """Frames at every step of the event loop, as the frame timer may fire while a screen mounts."""
    for _ in range(frames):
        app.tick()
        await asyncio.sleep(0)


@sync
async def test_a_frame_while_the_history_screen_mounts_does_not_fail(caplog) -> None:
    app, _ = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        await feed(app, pilot, scenes.alarm_scene())
        app.action_history()
        await asyncio.sleep(0)  # composed (the table is there), not mounted yet
        await tick_through_mount(app, 20)  # was: ValueError: More values provided than there are columns
        await pilot.pause()
        assert isinstance(app.screen, HistoryScreen)
        assert table_rows(app) == logged_rows(app) and len(logged_rows(app)) == 4
        assert "ui_error" not in app.state.alarms and app.is_running
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


@sync
async def test_history_follows_the_alarms_while_open_closed_and_reopened(caplog) -> None:
    app, _ = make_app()
    async with app.run_test(size=(120, 36)) as pilot:
        await feed(app, pilot, scenes.alarm_scene())
        await pilot.press("h")
        assert isinstance(app.screen, HistoryScreen)
        n = 0
        for _ in range(5):  # alarms arrive while the history is open, a frame for each batch
            await feed(app, pilot, alarm_events(n, 3))
            n += 3
            assert table_rows(app) == logged_rows(app)
        await pilot.press("escape")
        assert isinstance(app.screen, MonitorScreen)
        for opening in range(9):
            await feed(app, pilot, alarm_events(n, 2))  # more alarms while the monitor is up
            n += 2
            alarm_list = app.screen.query_one(AlarmList)
            assert [str(k.value) for k in alarm_list.rows] == [e.name for e in app.state.current()]
            if opening % 2:
                await pilot.press("h")
            else:  # the frame timer fires between the push and the mount
                app.action_history()
                for e in alarm_events(n, 2):
                    app.post_event(e)
                n += 2
                await tick_through_mount(app)
                await pilot.pause()
            assert isinstance(app.screen, HistoryScreen)
            await feed(app, pilot, alarm_events(n, 3))
            n += 3
            assert table_rows(app) == logged_rows(app)
            assert "EQUIPMENT" in app.screen.query_one(AlarmBanner).line(AlarmKind.TECHNICAL)[0]
            await pilot.press("h")  # h closes the history again
            assert isinstance(app.screen, MonitorScreen)
        assert len(app.state.history) == 4 + n
        assert "ui_error" not in app.state.alarms and app.is_running
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


class BrokenScreen(Screen):
    """A screen whose every redraw raises."""

    def __init__(self) -> None:
        super().__init__()
        self.attempts = 0

    def compose(self) -> ComposeResult:
        yield Static("broken")

    def update_view(self, changed: set[str]) -> None:
        self.attempts += 1
        raise RuntimeError("boom in update_view")

    def show_frame(self, end_index: int) -> None:
        pass


@sync
async def test_a_failing_screen_is_an_alarm_and_monitoring_goes_on(caplog) -> None:
    app, _ = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        await feed(app, pilot, scenes.alarm_scene())
        broken = BrokenScreen()
        await app.push_screen(broken)
        frames = app.frames
        for _ in range(3):
            await feed(app, pilot, alarm_events(0, 1))
        assert app.frames == frames + 3 and app.is_running  # the timer keeps ticking
        assert broken.attempts == 1  # it failed once, then the monitor came back
        assert isinstance(app.screen, MonitorScreen)
        entry = app.state.alarms["ui_error"]
        assert entry.change.kind is AlarmKind.TECHNICAL and entry.change.state is AlarmState.ACTIVE
        assert "BrokenScreen" in entry.change.message and "boom in update_view" in entry.change.message
        assert "ui_error" in [str(k.value) for k in app.screen.query_one(AlarmList).rows]
        assert "UI ERROR" in app.screen.query_one(AlarmBanner).line(AlarmKind.TECHNICAL)[0]
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "BrokenScreen could not be drawn" in errors[0].getMessage()
    assert errors[0].exc_info and "boom in update_view" in str(errors[0].exc_info[1])


@sync
async def test_a_failing_monitor_screen_keeps_ticking_and_reports_once(caplog) -> None:
    app, _ = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        await feed(app, pilot, scenes.normal_scene())
        monitor = app.screen
        calls = []

        def broken(changed: set[str]) -> None:
            calls.append(changed)
            raise ValueError("bad frame")

        monitor.update_view = broken  # type: ignore[method-assign]
        for _ in range(5):
            await feed(app, pilot, [])
        assert len(calls) == 5 and app.is_running and app.screen is monitor
        assert "ValueError: bad frame" in app.state.alarms["ui_error"].change.message
        assert len(app.state.history) == 1  # raised once, not once a frame
        del monitor.update_view  # the screen recovers: the next frame redraws all of it
        await feed(app, pilot, [])
        assert "UI ERROR" in monitor.query_one(AlarmBanner).line(AlarmKind.TECHNICAL)[0]
        assert [str(k.value) for k in monitor.query_one(AlarmList).rows] == ["ui_error"]
    assert len([r for r in caplog.records if r.levelno >= logging.ERROR]) == 1
