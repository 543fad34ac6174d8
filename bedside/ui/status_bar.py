"""The status bar: bed, device and link, frames lost, model bundle and version, provider, database, user."""

from __future__ import annotations

import os

from rich.text import Text
from textual.widget import Widget

from bedside.ui.monitor_state import MonitorState
from bedside.ui.waveform import format_clock

LINK_CLASSES = {"connected": "status--ok", "replay": "status--ok", "disconnected": "status--bad",
                "reconnecting": "status--warn", "ended": "status--dim", "stopped": "status--bad"}


def short_provider(provider: str) -> str:
    """CPUExecutionProvider -> CPU, TensorrtExecutionProvider -> Tensorrt."""
    return provider.removesuffix("ExecutionProvider") or provider


def short_device(device: str) -> str:
    """A record path or port URL without its directories (``/dev/ttyUSB0`` stays whole)."""
    if device.startswith("/dev/") or "://" in device:
        return device
    return os.path.basename(device.rstrip("/")) or device


class StatusBar(Widget):
    """One line; the most important facts first, so a narrow terminal crops the least important."""

    COMPONENT_CLASSES = {"status--ok", "status--warn", "status--bad", "status--dim", "status--label"}

    def __init__(self, state: MonitorState, *, bed_id: str, user: str, id: str | None = None) -> None:
        super().__init__(id=id)
        self.state = state
        self.bed_id = bed_id
        self.user = user
        self._shown: tuple | None = None

    def update_view(self) -> None:
        """Redraw only when the status or the shown second changed."""
        key = (self.state.status, self.state.link, int(self.state.now_s))  # the link alone can change
        if key != self._shown:
            self._shown = key
            self.refresh()

    def segments(self) -> list[tuple[Text, bool]]:
        """(text, required) in order of importance; optional ones are left out when the line is full."""
        style = self.get_component_rich_style
        st = self.state.status
        seg = [(Text(f"BED {st.bed_id if st else self.bed_id}", style("status--label")), True)]
        if st is None and self.state.link == "stopped":
            seg.append((Text("engine stopped", style("status--bad")), True))
        elif st is None:
            seg.append((Text("waiting for the engine", style("status--warn")), True))
        else:
            # The link as the alarm log tells it: a device_disconnected transition overrules an older Status.
            word = self.state.link or st.link
            link = Text(f"{short_device(st.device)} ")
            link.append(word, style(LINK_CLASSES.get(word, "status--warn")))
            seg += [
                (link, True),
                (Text(f"lost {st.frames_lost}", style("status--bad" if st.frames_lost else "status--ok")), True),
                (Text(f"db {st.db}", style("status--ok" if st.db == "ok" else "status--bad")), True),
                (Text(short_provider(st.provider)), True),
                (Text(st.bundle), True),
                (Text(f"sha {st.bundle_sha256[:8]}", style("status--dim")), False),
            ]
        seg += [(Text(f"t {format_clock(self.state.now_s)}"), False),
                (Text(f"user {self.user}", style("status--dim")), False)]
        return seg

    def render(self) -> Text:
        width = self.size.width
        segs = self.segments()
        sep_style = self.get_component_rich_style("status--dim")
        required = [t for t, req in segs if req]
        sep = " │ " if sum(t.cell_len for t in required) + 3 * (len(required) - 1) <= width else "│"
        out = Text(no_wrap=True, overflow="ellipsis")
        for text, req in segs:
            extra = (len(sep) if out.cell_len else 0) + text.cell_len
            if not req and out.cell_len + extra > width:
                continue
            if out.cell_len:
                out.append(sep, sep_style)
            out.append_text(text)
        return out
