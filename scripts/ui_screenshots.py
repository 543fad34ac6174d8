"""Write the documentation screenshots of the monitor screen (Textual's SVG export).

The screen is fed the fixed event sequences of ``tests/ui_scenes.py``: the real 12-lead ECG s0010_re
(PTB Diagnostic ECG, ../shared/data) as waveforms, with fixed risk values and alarms chosen to show
the normal and the alarm state (they are not model outputs). Times are frozen and in UTC, so the
files only change when the screen does.

    .venv/bin/python scripts/ui_screenshots.py [--out docs] [--size 120x36]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

import ui_scenes as scenes  # noqa: E402

from bedside.ui.app import MonitorApp  # noqa: E402


async def shoot(scene: str, size: tuple[int, int], out: Path) -> Path:
    app = MonitorApp(None, bed_id=scenes.BED, user="nurse.kim", tz=timezone.utc, fps=0, labels=scenes.LABELS,
                     thresholds=scenes.THRESHOLDS, min_sqi=scenes.MIN_SQI, clock=lambda: scenes.FROZEN_NOW)
    async with app.run_test(headless=True, size=size) as pilot:
        for event in getattr(scenes, f"{scene}_scene")():
            app.post_event(event)
        app.buffer.last_write_wall = scenes.FROZEN_NOW
        app.tick()
        await pilot.pause()
        path = out / f"screenshot-{scene}.svg"
        tmp = path.with_suffix(".svg.tmp")
        tmp.write_text(app.export_screenshot(title=f"bedside monitor: {scene}"), encoding="utf-8")
        tmp.replace(path)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=REPO / "docs")
    ap.add_argument("--size", default="120x36", help="terminal size COLSxROWS [120x36]")
    args = ap.parse_args()
    if not (scenes.RECORD.parent / "s0010_re.hea").is_file():
        sys.exit(f"the real record {scenes.RECORD} is missing (see ../shared/data/README.md)")
    cols, rows = (int(v) for v in args.size.lower().split("x"))
    for scene in ("normal", "alarm"):
        print(asyncio.run(shoot(scene, (cols, rows), args.out)))


if __name__ == "__main__":
    main()
