"""The central overview (Textual): tiles sorted by alarm priority, 8 beds at 80x24, keys, live reload, snapshots.

Snapshots are of a fixed ward (tests/central_helpers.ward_scene) drawn at a frozen time in UTC. After a
deliberate change of the screen: ``pytest tests/test_central_overview.py --snapshot-update`` and
``python scripts/central_screenshots.py`` for the docs.
"""

from __future__ import annotations

from datetime import timezone

import pytest

from bedside.central.bed_screen import BedScreen
from bedside.central.bed_tile import BedTile, age_text
from bedside.central.overview import OverviewApp, columns_for
from bedside.central.overview_data import read_history, read_overview
from bedside.central.store import CentralStore, Received, connect_readonly
from central_helpers import alarm, envelope, observation, ward_scene


@pytest.fixture
def ward(tmp_path):
    db = tmp_path / "central.db"
    now = ward_scene(db)
    return db, now


def _app(db, now, refresh_s: float = 0) -> OverviewApp:
    return OverviewApp(db, tz=timezone.utc, clock=lambda: now, refresh_s=refresh_s)


def _load(app: OverviewApp, db, now, bed: str | None = None) -> None:
    conn = connect_readonly(db)
    try:
        app.apply(read_overview(conn), now, read_history(conn, bed) if bed else None, bed)
    finally:
        conn.close()


def test_sorted_by_priority_then_state_then_bed(ward) -> None:
    db, _ = ward
    conn = connect_readonly(db)
    views = read_overview(conn)
    conn.close()
    tops = [(v.bed_id, v.top.priority if v.top else None, v.top.state if v.top else None) for v in views]
    ranks = [{"high": 0, "medium": 1, "low": 2, None: 3}[p] for _, p, _ in tops]
    assert ranks == sorted(ranks)
    assert tops[0][1] == "high" and tops[-1][1] is None
    medium = [t for t in tops if t[1] == "medium"]
    assert medium[-1][2] == "ACKNOWLEDGED"  # an acknowledged alarm after the ones still shouting
    bed8 = next(v for v in views if v.bed_id == "bed-08")
    assert [a.alarm for a in bed8.alarms] == ["cardiomegaly", "poor_signal"]


@pytest.mark.parametrize("size, at_least", [((80, 24), 8), ((120, 36), 18), ((160, 48), 32)])
def test_terminal_size_shows_enough_beds(tmp_path, size, at_least) -> None:
    db = tmp_path / "central.db"
    now = ward_scene(db, n_beds=40)

    async def run() -> int:
        app = _app(db, now)
        async with app.run_test(size=size) as pilot:
            _load(app, db, now)
            await pilot.pause()
            screen = app.screen.region
            return sum(screen.contains_region(t.region) for t in app.query(BedTile))
    import asyncio

    shown = asyncio.run(run())
    assert shown >= at_least, shown  # of 40 beds


def test_keys_open_a_bed_with_its_alarms_and_history(ward) -> None:
    db, now = ward

    async def run() -> None:
        app = _app(db, now)
        async with app.run_test(size=(80, 24)) as pilot:
            _load(app, db, now)
            await pilot.pause()
            tiles = list(app.query(BedTile))
            assert app.focused is tiles[0]  # the most urgent bed has the focus
            await pilot.press("right", "down")
            assert app.focused is tiles[1 + columns_for(80)]
            await pilot.press("left", "up")
            assert app.focused is tiles[0]
            await pilot.press("down", "down", "right")
            bed = app.focused.view.bed_id
            await pilot.press("enter")
            await pilot.pause()
            assert isinstance(app.screen, BedScreen) and app.screen.bed_id == bed
            _load(app, db, now, bed)
            await pilot.pause()
            history = app.screen.query_one("#bed-history")
            conn = connect_readonly(db)
            want = read_history(conn, bed)
            conn.close()
            assert history.row_count == len(want) > 0
            assert app.screen.query_one("#bed-alarms").row_count == len(app.screen.view.alarms)
            await pilot.press("escape")
            await pilot.pause()
            assert not isinstance(app.screen, BedScreen)
    import asyncio

    asyncio.run(run())


def test_live_reload_moves_a_new_alarm_to_the_top(ward) -> None:
    """The app reads central.db on its own timer (thread worker); a new high alarm takes the first tile."""
    db, now = ward

    async def run() -> None:
        app = _app(db, now, refresh_s=0.1)
        async with app.run_test(size=(80, 24)) as pilot:
            for _ in range(100):
                await pilot.pause(0.05)
                if app.query(BedTile):
                    break
            first = list(app.query(BedTile))[0]
            assert first.view.bed_id != "bed-06"
            store = CentralStore(db)
            store.commit([Received(envelope(alarm("bed-06", 50, alarm_name="hr_low", text="HR 38 < 40")),
                                   "x", now),
                          Received(envelope(observation("bed-06", 2, hr=38.0)), "x", now)])
            store.close()
            for _ in range(100):
                await pilot.pause(0.05)
                if list(app.query(BedTile))[0].view.bed_id == "bed-06":
                    break
            tile = list(app.query(BedTile))[0]
            assert tile.view.bed_id == "bed-06" and tile.view.hr_bpm == 38.0
            # the tiles were re-used in the new order: each one's title must name the bed whose data it shows
            tiles = list(app.query(BedTile))
            assert [t.border_title for t in tiles] == [t.view.bed_id for t in tiles]
            assert len({t.border_title for t in tiles}) == len(tiles)
            assert "HR LOW" in str(tile.alarm_line(36)) and "-high" in tile.classes
    import asyncio

    asyncio.run(run())


def test_missing_database_is_shown_not_fatal(tmp_path) -> None:
    async def run() -> str:
        app = _app(tmp_path / "none.db", 0.0, refresh_s=0.1)
        async with app.run_test(size=(80, 24)) as pilot:
            for _ in range(50):
                await pilot.pause(0.05)
                if app.error:
                    break
            return app.error
    import asyncio

    assert "no such central database" in asyncio.run(run())


def test_age_text() -> None:
    assert [age_text(x) for x in (None, 0.4, 99.9, 125, 7300)] == ["--", "0s", "99s", "2m05s", "2h01m"]


# -- snapshots -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("size", [(80, 24), (160, 48)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_overview_snapshot(snap_compare, ward, size) -> None:
    db, now = ward
    app = _app(db, now)

    async def run_before(pilot) -> None:
        _load(app, db, now)
        await pilot.pause()

    assert snap_compare(app, terminal_size=size, run_before=run_before)


def test_bed_screen_snapshot(snap_compare, ward) -> None:
    db, now = ward
    app = _app(db, now)

    async def run_before(pilot) -> None:
        _load(app, db, now)
        await pilot.pause()
        app.open_bed("bed-07")
        await pilot.pause()
        _load(app, db, now, "bed-07")
        await pilot.pause()

    assert snap_compare(app, terminal_size=(80, 24), run_before=run_before)
