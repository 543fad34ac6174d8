"""Snapshot tests of the monitor screen: normal, alarm and disconnected, at 80x24 and 160x48.

Deterministic: a fixed sequence of events (the real record s0010_re and fixed risks/alarms from
``tests/ui_scenes.py``) is fed to the app directly; no engine, no frame timer, frozen clock, UTC.
Update after a deliberate change of the screen with ``pytest tests/test_ui_snapshots.py --snapshot-update``
and look at the report (snapshot_report.html) before committing.
"""

from __future__ import annotations

from datetime import timezone

import pytest

import ui_scenes as scenes
from bedside.ui.app import MonitorApp

SIZES = [(80, 24), (160, 48)]


@pytest.fixture(autouse=True)
def _need_record() -> None:
    if not (scenes.RECORD.parent / "s0010_re.hea").is_file():
        pytest.skip(f"real recording not found at {scenes.RECORD} (see ../shared/data/README.md)")


def scene_app(scene: str) -> tuple[MonitorApp, object]:
    """An app with a frozen clock and a run_before that feeds the scene and draws one frame."""
    wall = {"now": scenes.FROZEN_NOW - 4.0}
    app = MonitorApp(None, bed_id=scenes.BED, user="nurse.kim", tz=timezone.utc, fps=0, labels=scenes.LABELS,
                     thresholds=scenes.THRESHOLDS, min_sqi=scenes.MIN_SQI, clock=lambda: wall["now"])
    events = getattr(scenes, f"{scene}_scene")()

    async def run_before(pilot) -> None:
        for event in events:
            app.post_event(event)
        wall["now"] = scenes.FROZEN_NOW - (2.0 if scene == "disconnected" else 0.0)
        app.tick()
        await pilot.pause()

    return app, run_before


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("scene", ["normal", "alarm", "disconnected"])
def test_monitor_screen(snap_compare, scene: str, size: tuple[int, int]) -> None:
    app, run_before = scene_app(scene)
    assert snap_compare(app, terminal_size=size, run_before=run_before)
