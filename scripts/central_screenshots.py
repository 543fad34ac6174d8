"""Write the documentation screenshots of the central overview (Textual's SVG export).

The ward is the fixed scene of ``tests/central_helpers.ward_scene`` (10 beds, fixed risks and alarms
chosen to show each state; not model outputs), drawn at a frozen time in UTC.

    .venv/bin/python scripts/central_screenshots.py [--out docs]

Writes central-overview-80x24.svg, central-overview-160x48.svg and central-bed-80x24.svg.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from datetime import timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

from central_helpers import ward_scene  # noqa: E402

from bedside.central.overview import OverviewApp  # noqa: E402
from bedside.central.overview_data import read_history, read_overview  # noqa: E402
from bedside.central.store import connect_readonly  # noqa: E402


async def shoot(db: Path, now: float, size: tuple[int, int], out: Path, bed: str | None = None) -> None:
    app = OverviewApp(db, tz=timezone.utc, clock=lambda: now, refresh_s=0)
    async with app.run_test(size=size) as pilot:
        conn = connect_readonly(db)
        app.apply(read_overview(conn), now)
        await pilot.pause()
        if bed is not None:
            app.open_bed(bed)
            await pilot.pause()
            app.apply(read_overview(conn), now, read_history(conn, bed), bed)
            await pilot.pause()
        conn.close()
        app.save_screenshot(filename=out.name, path=str(out.parent))
    print(f"wrote {out}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=REPO / "docs")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "central.db"
        now = ward_scene(db)
        asyncio.run(shoot(db, now, (80, 24), args.out / "central-overview-80x24.svg"))
        asyncio.run(shoot(db, now, (160, 48), args.out / "central-overview-160x48.svg"))
        asyncio.run(shoot(db, now, (80, 24), args.out / "central-bed-80x24.svg", bed="bed-07"))


if __name__ == "__main__":
    main()
