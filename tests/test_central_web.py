"""`bedside central --web`: the overview in headless Chromium shows a bed's alarm that arrived while the page was open.

Skipped when Chromium or textual-serve is absent (`apt-get install chromium`; `pip install '.[central]'`).
"""

from __future__ import annotations

import asyncio
import io
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bedside.hl7 import messages
from central_browser import CHROMIUM, Browser
from central_helpers import alarm, envelope, exchange, observation

ROOT = Path(__file__).resolve().parents[1]

pytestmark = [
    pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install -y chromium)"),
    pytest.mark.skipif(__import__("importlib").util.find_spec("textual_serve") is None,
                       reason="textual-serve not installed (pip install 'cromotex-bedside[central]')"),
]

#: The high-priority red of the tiles (bedside/central/overview.tcss).
HIGH_RED = (0xC0, 0x39, 0x2B)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _red_pixels(png: bytes) -> int:
    from PIL import Image

    img = Image.open(io.BytesIO(png)).convert("RGB")
    return sum(count for count, rgb in img.getcolors(1 << 20) if all(abs(a - b) <= 6 for a, b in zip(rgb, HIGH_RED)))


def test_alarm_appears_in_the_browser(tmp_path) -> None:
    web = _free_port()
    db = tmp_path / "central.db"
    central = subprocess.Popen([sys.executable, "-m", "bedside.cli", "central", "--listen", "127.0.0.1:0",
                                "--db", str(db), "--bed", "bed-1", "--bed", "bed-2", "--web", f"127.0.0.1:{web}"],
                               cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        line = central.stdout.readline().strip()
        assert line.startswith("listening on "), (line, central.stderr.read() if central.poll() is not None else "")
        host, port = line.split()[-1].rsplit(":", 1)
        asyncio.run(_check_page(host, int(port), web))
    finally:
        central.terminate()
        central.wait(20)


async def _check_page(host: str, port: int, web: int) -> None:
    bed1 = [envelope(observation("bed-1", 1, hr=64.0))]
    await exchange(host, port, [messages.build(e) for e in bed1])
    deadline = time.monotonic() + 60
    async with Browser() as browser:
        while True:  # textual-serve's HTTP side starts after the MLLP server
            try:
                await browser.open(f"http://127.0.0.1:{web}/")
                break
            except RuntimeError:
                assert time.monotonic() < deadline, "textual-serve did not answer"
                await asyncio.sleep(0.5)
        while "bed-1" not in await browser.received_text():
            assert time.monotonic() < deadline, "the overview never showed bed-1"
            await asyncio.sleep(0.5)
        before = await browser.received_text()
        red_before = _red_pixels(await browser.screenshot())  # "not linked" badges are red too
        assert "HR LOW" not in before
        # the alarm arrives while the page is open
        acks = await exchange(host, port, [messages.build(envelope(alarm("bed-2", 1, alarm_name="hr_low",
                                                                          text="HR 35 < 40")))])
        assert acks[0][1] == "AA"
        while "HR LOW" not in await browser.received_text():
            assert time.monotonic() < deadline, "the alarm never reached the page"
            await asyncio.sleep(0.5)
        text = await browser.received_text()
        assert "*** HR LOW ACTIVE" in text and "bed-2" in text
        for _ in range(20):  # xterm.js draws on the next animation frame
            if _red_pixels(await browser.screenshot()) > red_before + 2000:
                break
            await asyncio.sleep(0.25)
        assert _red_pixels(await browser.screenshot()) > red_before + 2000  # the alarm line's red is on the canvas
