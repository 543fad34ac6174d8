"""Write the documentation screenshots of the monitor screen (Textual's SVG export).

The screen is fed the fixed event sequences of ``tests/ui_scenes.py``: the real 12-lead ECG s0010_re
(PTB Diagnostic ECG, ../shared/data) as waveforms, with fixed risk values and alarms chosen to show
each state (they are not model outputs), and the packaged alarm settings (action texts, HR limits).
Times are frozen and in UTC, so the files only change when the screen does.

    .venv/bin/python scripts/ui_screenshots.py [--out docs] [--size 120x36]

Writes screenshot-{normal,alarm,stale,lead-off,fixed-gain,failure}.svg at --size and
screenshot-80x24-alarm.svg at the smallest supported terminal.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from datetime import timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

import ui_scenes as scenes  # noqa: E402

from bedside.alarm_config import load_alarm_config  # noqa: E402
from bedside.errors import RecordError  # noqa: E402
from bedside.ui.app import MonitorApp  # noqa: E402

#: name -> (scene, wall seconds after the frozen time, keys to press, engine refuses the record)
SHOTS = {
    "normal": ("normal", 0.0, (), False),
    "alarm": ("alarm", 0.0, (), False),
    "stale": ("disconnected", 10.0, (), False),
    "lead-off": ("undrawn_lead_off", 0.0, (), False),
    "fixed-gain": ("normal", 0.0, ("g",), False),
    "failure": ("", 0.0, (), True),
}


def _refused() -> None:
    raise RecordError(scenes.FAILURE_REASON)


logging.getLogger("bedside.ui.app").setLevel(logging.CRITICAL)  # the refusal is staged: no traceback here


async def shoot(name: str, size: tuple[int, int], out: Path, file_name: str | None = None) -> Path:
    scene, after_s, keys, failure = SHOTS[name]
    wall = {"now": scenes.FROZEN_NOW - 4.0}
    app = MonitorApp(_refused if failure else None, bed_id=scenes.BED, user="nurse.kim", tz=timezone.utc, fps=0,
                     labels=scenes.LABELS, thresholds=scenes.THRESHOLDS, min_sqi=scenes.MIN_SQI,
                     clock=lambda: wall["now"], alarm_config=load_alarm_config(), audio=True)
    async with app.run_test(headless=True, size=size) as pilot:
        for event in getattr(scenes, f"{scene}_scene")() if scene else ():
            app.post_event(event)
        if failure:
            for _ in range(200):
                await pilot.pause(0.01)
                if app.failure is not None or app._inbox:
                    break
        wall["now"] = scenes.FROZEN_NOW - (2.0 if scene == "disconnected" else 0.0) + after_s
        app.tick()
        await pilot.pause()
        for key in keys:
            await pilot.press(key)
        app.tick()
        await pilot.pause()
        path = out / (file_name or f"screenshot-{name}.svg")
        tmp = path.with_suffix(".svg.tmp")
        tmp.write_text(app.export_screenshot(title=f"bedside monitor: {name}"), encoding="utf-8")
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
    for name in SHOTS:
        print(asyncio.run(shoot(name, (cols, rows), args.out)))
    print(asyncio.run(shoot("alarm", (80, 24), args.out, "screenshot-80x24-alarm.svg")))


if __name__ == "__main__":
    main()
