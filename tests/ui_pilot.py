"""What the Pilot-driven UI tests share: running an async test without a plugin, the monitor app on
the scripted scenes of ``tests/ui_scenes.py`` with a wall clock the test moves, and feeding it events."""

from __future__ import annotations

import asyncio
import functools
from datetime import timezone

import ui_scenes as scenes
from bedside.ui.app import MonitorApp


def sync(test):
    """Run an async Pilot test with asyncio.run (no async pytest plugin is needed)."""
    @functools.wraps(test)
    def wrapper(*args, **kwargs):
        return asyncio.run(test(*args, **kwargs))
    return wrapper


def make_app(**kw) -> tuple[MonitorApp, dict[str, float]]:
    """The app for the scenes' bed (no frame timer unless ``fps``), and ``wall`` whose ``"now"`` is its clock."""
    wall = {"now": scenes.FROZEN_NOW - 4.0}
    kw.setdefault("fps", 0)
    kw.setdefault("thresholds", scenes.THRESHOLDS)
    app = MonitorApp(kw.pop("factory", None), bed_id=scenes.BED, user="nurse.kim", tz=timezone.utc,
                     labels=scenes.LABELS, min_sqi=scenes.MIN_SQI, clock=lambda: wall["now"], **kw)
    return app, wall


async def feed(app: MonitorApp, pilot, events=()) -> None:
    """Post ``events`` to ``app``, run one frame and let the screen settle."""
    for e in events:
        app.post_event(e)
    app.tick()
    await pilot.pause()
