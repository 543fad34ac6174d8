"""Snapshot tests of the monitor screen, at 80x24 (every state) and 160x48 (the main three).

Deterministic: a fixed sequence of events (the real record s0010_re and fixed risks/alarms from
``tests/ui_scenes.py``) is fed to the app directly; no engine (the failure scene's factory raises at
once), no frame timer, frozen clock, UTC, the packaged alarm settings (action texts, HR limits).
Update after a deliberate change of the screen with ``pytest tests/test_ui_snapshots.py --snapshot-update``
and look at the report (snapshot_report.html) before committing.
"""

from __future__ import annotations

from datetime import timezone

import pytest

import ui_scenes as scenes
from bedside.alarm_config import load_alarm_config
from bedside.errors import RecordError
from bedside.ui.app import MonitorApp

SIZES = [(80, 24), (160, 48)]
#: Scenes drawn at 80x24 only: (scene, wall seconds after FROZEN_NOW, keys pressed, terminal size).
STATES = {
    "stale": ("disconnected", 10.0, (), (80, 24)),
    "reconnected": ("reconnected", 0.0, (), (80, 24)),
    "undrawn_lead_off": ("undrawn_lead_off", 0.0, (), (80, 24)),
    "near_threshold": ("near_threshold", 0.0, (), (80, 24)),
    "fixed_gain": ("normal", 0.0, ("g",), (80, 24)),
    "too_small": ("alarm", 0.0, (), (60, 20)),
    "failure": ("normal", 0.0, (), (80, 24)),  # the engine refuses the record: no event at all
}


@pytest.fixture(autouse=True)
def _need_record() -> None:
    if not (scenes.RECORD.parent / "s0010_re.hea").is_file():
        pytest.skip(f"real recording not found at {scenes.RECORD} (see ../shared/data/README.md)")


def refused_record():
    raise RecordError(scenes.FAILURE_REASON)


def scene_app(scene: str, after_s: float = 0.0, keys: tuple[str, ...] = (), failure: bool = False):
    """An app with a frozen clock and a run_before that feeds the scene and draws one frame."""
    wall = {"now": scenes.FROZEN_NOW - 4.0}
    thresholds = scenes.NEAR_THRESHOLDS if scene == "near_threshold" else scenes.THRESHOLDS
    app = MonitorApp(refused_record if failure else None, bed_id=scenes.BED, user="nurse.kim", tz=timezone.utc,
                     fps=0, labels=scenes.LABELS, thresholds=thresholds, min_sqi=scenes.MIN_SQI,
                     clock=lambda: wall["now"], alarm_config=load_alarm_config(), audio=True)
    events = [] if failure else getattr(scenes, f"{scene}_scene")()  # refused at start: nothing ever arrived

    async def run_before(pilot) -> None:
        for event in events:
            app.post_event(event)
        if failure:
            for _ in range(200):  # the engine thread fails at once; wait for it
                await pilot.pause(0.01)
                if app._engine_thread is not None and not app._engine_thread.is_alive():
                    break
        wall["now"] = scenes.FROZEN_NOW - (2.0 if scene in ("disconnected", "reconnected") else 0.0) + after_s
        app.tick()
        await pilot.pause()
        for key in keys:
            await pilot.press(key)
        app.tick()
        await pilot.pause()

    return app, run_before


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("scene", ["normal", "alarm", "disconnected"])
def test_monitor_screen(snap_compare, scene: str, size: tuple[int, int]) -> None:
    app, run_before = scene_app(scene)
    assert snap_compare(app, terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("name", list(STATES))
def test_screen_state(snap_compare, name: str) -> None:
    scene, after_s, keys, size = STATES[name]
    app, run_before = scene_app(scene, after_s, keys, failure=name == "failure")
    assert snap_compare(app, terminal_size=size, run_before=run_before)
