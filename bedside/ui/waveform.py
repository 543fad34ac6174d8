"""Scrolling ECG traces: one ``WaveformTrace`` per displayed lead and a ``TimeScale`` under them.

The panel fixes one frame position (the newest sample index) per tick, so every trace and the time
scale show exactly the same span. Gaps (NaN) stay blank; a trace with no signal in its last second
says so in words, because a blank or flat line must never read as asystole.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.strip import Strip
from textual.widget import Widget

from bedside.leads import LEAD_INDEX
from bedside.ui.braille import DOTS_PER_S, auto_range, braille_rows, dot_window, envelope, second_ticks
from bedside.ui.monitor_state import MonitorState
from bedside.ui.wave_buffer import WaveBuffer

GUTTER = 5  # cells left of each trace for the lead name, gain and quality


def format_clock(t_s: float) -> str:
    """Signal time as m:ss, or h:mm:ss from one hour on."""
    t = int(t_s)
    h, m, s = t // 3600, t // 60 % 60, t % 60
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class WaveformTrace(Widget):
    """One lead's trace, drawn in braille dots at ``DOTS_PER_S`` (Line API: one Strip per row, built once a frame)."""

    COMPONENT_CLASSES = {"trace--line", "trace--no-signal"}

    def __init__(self, lead: str, buffer: WaveBuffer, state: MonitorState, *, id: str | None = None) -> None:
        super().__init__(id=id, classes="trace")
        self.lead = lead
        self.buffer = buffer
        self.state = state
        self.frame_end = 0  # newest sample index of the frame being drawn (set by the panel)
        self.last_rows: list[str] = []  # the braille rows last drawn (for tests)
        self.no_signal = False
        self._strips: list[Strip] = []
        self._key: tuple | None = None  # what the strips were built from

    def rows(self) -> tuple[list[str], str, bool]:
        """(braille rows, gain label, no signal in the last second) for the current size and frame."""
        width, height = self.size.width, self.size.height
        n_cells = max(0, width - GUTTER)
        fs = self.buffer.fs_hz
        if fs is None:
            return [" " * n_cells] * height, "--", True
        k0, bounds = dot_window(self.frame_end, fs, 2 * n_cells)
        x = self.buffer.read([LEAD_INDEX[self.lead]], int(bounds[0]), int(bounds[-1]))[0]
        lo, hi = envelope(x, bounds)
        v_min, v_max = auto_range(lo, hi)
        no_signal = not np.isfinite(lo[-int(DOTS_PER_S):]).any()
        return braille_rows(lo, hi, height, v_min, v_max), f"{v_max - v_min:g}mV", no_signal

    def _build(self) -> None:
        width, height = self.size.width, self.size.height
        n_cells = max(0, width - GUTTER)
        rows, gain, no_signal = self.rows() if height > 0 and n_cells > 0 else ([], "", False)
        self.last_rows, self.no_signal = rows, no_signal
        base = self.rich_style
        line = base + self.get_component_rich_style("trace--line")
        alert = base + self.get_component_rich_style("trace--no-signal")
        labels = self._labels(gain)
        strips = []
        for i, row in enumerate(rows):
            text, style = labels[i] if i < len(labels) else ("", "")
            segments = [Segment(f"{text:<{GUTTER - 1}} "[:GUTTER], base + Style.parse(style) if style else base)]
            if no_signal and i == height // 2:
                msg = " NO SIGNAL "
                pad = max(0, (n_cells - len(msg)) // 2)
                segments += [Segment(row[:pad], line), Segment(msg[:n_cells - pad], alert),
                             Segment(row[pad + len(msg):], line)]
            else:
                segments.append(Segment(row, line))
            strips.append(Strip(segments, GUTTER + n_cells))
        self._strips = strips

    def render_line(self, y: int) -> Strip:
        key = (self.frame_end, self.size, self.lead, self.buffer.fs_hz, self.buffer.end_index, id(self.state.window))
        if key != self._key:
            self._key = key
            self._build()
        return self._strips[y] if y < len(self._strips) else Strip.blank(self.size.width, self.rich_style)

    def render(self) -> Text:
        """The trace as plain text (tests and screen readers); the screen draws it with render_line."""
        self._key = None
        self._build()
        return Text("\n".join(s.text for s in self._strips), no_wrap=True)

    def _labels(self, gain: str) -> list[tuple[str, str]]:
        """Gutter text per row: lead name, full-height gain, quality or lead-off."""
        lines = [(self.lead, "bold"), (gain, "dim")]
        w = self.state.window
        if w is not None:
            q = w.quality.get(self.lead)
            if q is not None:
                lines.append((f"q{round(q * 100):d}", "bold reverse red" if self.state.poor_quality(q) else ""))
            if w.lead_off.get(self.lead):
                lines.append(("OFF", "bold reverse red"))
        return lines


class TimeScale(Widget):
    """A ruler under the traces: a tick at each whole second of signal time, labelled m:ss."""

    def __init__(self, buffer: WaveBuffer, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.buffer = buffer
        self.frame_end = 0

    def text(self) -> str:
        n_cells = max(0, self.size.width - GUTTER)
        head = f"{'1s/':<{GUTTER}}"[:GUTTER]
        fs = self.buffer.fs_hz
        if fs is None or n_cells == 0:
            return head
        k0, _ = dot_window(self.frame_end, fs, 2 * n_cells)
        ruler = ["─"] * n_cells
        for cell, second in second_ticks(k0, n_cells):
            ruler[cell] = "┴"
            label = format_clock(second)
            if cell + 1 + len(label) <= n_cells:
                ruler[cell + 1:cell + 1 + len(label)] = list(label)
        return head + "".join(ruler)

    def render_line(self, y: int) -> Strip:
        if y > 0:
            return Strip.blank(self.size.width, self.rich_style)
        return Strip([Segment(self.text(), self.rich_style)])

    def render(self) -> Text:
        return Text(self.text(), no_wrap=True)


class WaveformPanel(Vertical):
    """The displayed leads, one trace each, over one time scale."""

    def __init__(self, leads: Sequence[str], buffer: WaveBuffer, state: MonitorState, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.leads = tuple(leads)
        self.buffer = buffer
        self.state = state
        self.frame_end = 0

    def compose(self) -> ComposeResult:
        for i, lead in enumerate(self.leads):
            yield WaveformTrace(lead, self.buffer, self.state, id=f"trace-{i}")
        yield TimeScale(self.buffer, id="time-scale")

    def traces(self) -> list[WaveformTrace]:
        return list(self.query(WaveformTrace))

    def show_frame(self, end_index: int) -> None:
        """Draw every trace and the scale ending at sample ``end_index``."""
        self.frame_end = end_index
        for w in (*self.traces(), self.query_one(TimeScale)):
            w.frame_end = end_index
            w.refresh()

    def set_leads(self, leads: Sequence[str]) -> None:
        """Show another set of leads (same number of traces, or rebuilt when it differs)."""
        leads = tuple(leads)
        traces = self.traces()
        if len(traces) == len(leads):
            for trace, lead in zip(traces, leads):
                trace.lead = lead
                trace.refresh()
        else:
            for trace in traces:
                trace.remove()
            scale = self.query_one(TimeScale)
            for i, lead in enumerate(leads):
                t = WaveformTrace(lead, self.buffer, self.state, id=f"trace-{i}-{len(leads)}")
                t.frame_end = self.frame_end
                self.mount(t, before=scale)
        self.leads = leads
