"""Headless Chromium driven over the DevTools protocol (aiohttp websocket), for the --web overview test.

textual-serve draws with xterm.js on a canvas, so the page has no text in its DOM. What the browser
reads is captured instead: a script injected before the page loads records every websocket message
the page receives (the app's terminal output that xterm.js draws), and a screenshot shows what it drew.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import signal
import shutil
import subprocess
import tempfile
from typing import Any

import aiohttp

CHROMIUM = next((p for p in (shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")) if p), None)

#: Records the page's incoming websocket data in window.__rx (text and binary, decoded as UTF-8).
HOOK = r"""
(() => {
  window.__rx = [];
  const Native = window.WebSocket;
  function Recording(url, protocols) {
    const ws = protocols === undefined ? new Native(url) : new Native(url, protocols);
    ws.addEventListener('message', (ev) => {
      const d = ev.data;
      if (typeof d === 'string') window.__rx.push(d);
      else if (d instanceof ArrayBuffer) window.__rx.push(new TextDecoder().decode(d));
      else if (d instanceof Blob) d.arrayBuffer().then(b => window.__rx.push(new TextDecoder().decode(b)));
    });
    return ws;
  }
  Recording.prototype = Native.prototype;
  Object.assign(Recording, Native);
  window.WebSocket = Recording;
})();
"""
ANSI = re.compile(r"\x1b(\[[0-9;?$]*[ -/]*[@-~]|\][^\x07]*\x07|[()][A-Z0-9])")


class Browser:
    """``async with Browser() as b: await b.open(url); text = await b.received_text(); png = await b.screenshot()``."""

    def __init__(self, width: int = 1200, height: int = 800) -> None:
        self.size = (width, height)
        self._n = 0

    async def __aenter__(self) -> "Browser":
        assert CHROMIUM is not None
        # chromium's helper processes (crashpad, renderers) write to the profile after the browser dies:
        # its own session, killed as a group; leftovers of a dying helper do not fail the test
        self._profile = tempfile.TemporaryDirectory(ignore_cleanup_errors=True)
        self.proc = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--remote-debugging-port=0",
             f"--user-data-dir={self._profile.name}", f"--window-size={self.size[0]},{self.size[1]}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
        url = await asyncio.wait_for(asyncio.to_thread(self._devtools_url), 60)
        port = url.split(":")[2].split("/")[0]
        self.http = aiohttp.ClientSession()
        targets = await (await self.http.get(f"http://127.0.0.1:{port}/json/list")).json()
        page = next(t for t in targets if t["type"] == "page")["webSocketDebuggerUrl"]
        self.ws = await self.http.ws_connect(page, max_msg_size=0)
        await self.call("Page.enable")
        await self.call("Page.addScriptToEvaluateOnNewDocument", source=HOOK)
        return self

    def _devtools_url(self) -> str:
        for line in self.proc.stderr:
            m = re.search(r"DevTools listening on (ws://\S+)", line)
            if m:
                return m.group(1)
        raise RuntimeError("chromium exited without a DevTools address")

    async def __aexit__(self, *exc: object) -> None:
        await self.ws.close()
        await self.http.close()
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(10)
        self._profile.cleanup()

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        self._n += 1
        await self.ws.send_json({"id": self._n, "method": method, "params": params})
        async for msg in self.ws:
            data = json.loads(msg.data)
            if data.get("id") == self._n:
                if "error" in data:
                    raise RuntimeError(f"{method}: {data['error']}")
                return data.get("result", {})
        raise RuntimeError("DevTools connection closed")

    async def open(self, url: str) -> None:
        await self.call("Page.navigate", url=url)

    async def received_text(self) -> str:
        """Everything the page received on its websockets, ANSI escapes removed."""
        r = await self.call("Runtime.evaluate", expression="(window.__rx || []).join('')", returnByValue=True)
        return ANSI.sub("", r["result"].get("value") or "")

    async def screenshot(self) -> bytes:
        return base64.b64decode((await self.call("Page.captureScreenshot", format="png"))["data"])
