"""Scrolling ECG traces: one ``WaveformTrace`` per displayed lead and a ``TimeScale`` under them.

The panel fixes one frame position (the newest sample index) per tick, so every trace and the time
scale show exactly the same span. Gaps (NaN) stay blank; a trace with no signal in its last second
says so in words, because a blank or flat line must never read as asystole. A ``LeadBar`` above the
traces names the drawn leads, marks an electrode that is off on a lead not drawn, and says the gain.

Gain: ``auto`` (the span snaps to 1, 1.5, 2, 3 ... mV so it does not breathe) or fixed in mm/mV as on
paper. A braille dot is 1/25 s wide (1 mm at 25 mm/s) and, in a terminal cell twice as tall as it is
wide, about as tall as it is wide (2 x 4 dots a cell), so a dot counts as 1 mm: at 10 mm/mV one mV is
10 dots = 2.5 rows. With a fixed gain each trace starts with a 1 mV calibration pulse (0.2 s wide)
and has a dotted vertical line at each second; the time scale has a tick every 0.2 s and a labelled
tick every second in every mode.
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
from bedside.ui.heart_rate import electrodes_of, undrawn_off
from bedside.ui.monitor_state import MonitorState
from bedside.ui.wave_buffer import WaveBuffer

GUTTER = 5  # cells left of each trace for the lead name, gain and quality
#: Gains the ``g`` key cycles through: None = auto, else mm/mV (1 braille dot = 1 mm).
GAINS_MM_PER_MV: tuple[float | None, ...] = (None, 10.0, 20.0, 5.0)
#: Dot columns the calibration pulse takes at the left of a fixed-gain trace (5 dots = 0.2 s, 3 blank).
CAL_DOTS = 8
GRID_CHAR = "┆"


def gain_text(gain_mm_per_mv: float | None) -> str:
    return "auto" if gain_mm_per_mv is None else f"{gain_mm_per_mv:g} mm/mV"


def fixed_range(lo: np.ndarray, hi: np.ndarray, n_rows: int, gain_mm_per_mv: float) -> tuple[float, float]:
    """Vertical range (mV) of ``n_rows`` dot rows at a fixed gain, centred on the trace's median level
    (snapped to 0.1 mV so the baseline does not wander)."""
    span = (n_rows - 1) / gain_mm_per_mv  # braille_rows puts v_max on the first dot row, v_min on the last
    mid = (lo + hi) / 2
    centre = round(float(np.nanmedian(mid)) * 10) / 10 if np.isfinite(mid).any() else 0.0
    return centre - span / 2, centre + span / 2


def calibration_pulse(lo: np.ndarray, hi: np.ndarray, v_min: float, v_max: float) -> None:
    """Overwrite the first ``CAL_DOTS`` columns with a 1 mV square pulse, 0.2 s wide (in place)."""
    base = max(v_min, (v_min + v_max) / 2 - 0.5)
    lo[:CAL_DOTS] = hi[:CAL_DOTS] = np.nan
    lo[0], hi[0] = base, base + 1.0
    lo[1:5] = hi[1:5] = base + 1.0
    lo[5], hi[5] = base, base + 1.0


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
        self.gain_mm_per_mv: float | None = None  # None: auto gain
        self._k0 = 0  # first dot column's index of the rows last built (for the fixed-gain grid)
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
        self._k0 = k0
        x = self.buffer.read([LEAD_INDEX[self.lead]], int(bounds[0]), int(bounds[-1]))[0]
        lo, hi = envelope(x, bounds)
        no_signal = not np.isfinite(lo[-int(DOTS_PER_S):]).any()
        if self.gain_mm_per_mv is None:
            v_min, v_max = auto_range(lo, hi)
            label = f"{v_max - v_min:g}mV"
        else:
            v_min, v_max = fixed_range(lo, hi, 4 * height, self.gain_mm_per_mv)
            if len(lo) > 2 * CAL_DOTS:
                calibration_pulse(lo, hi, v_min, v_max)
            label = f"{self.gain_mm_per_mv:g}mm"
        return braille_rows(lo, hi, height, v_min, v_max), label, no_signal

    def _build(self) -> None:
        width, height = self.size.width, self.size.height
        n_cells = max(0, width - GUTTER)
        rows, gain, no_signal = self.rows() if height > 0 and n_cells > 0 else ([], "", False)
        self.last_rows, self.no_signal = rows, no_signal
        base = self.rich_style
        line = base + self.get_component_rich_style("trace--line")
        alert = base + self.get_component_rich_style("trace--no-signal")
        labels = self._labels(gain)
        grid = self.rich_style + Style(color="#2c3a4a")
        ticks = ([c for c, _ in second_ticks(self._k0, n_cells)]
                 if self.gain_mm_per_mv is not None and rows else [])
        strips = []
        for i, row in enumerate(rows):
            text, style = labels[i] if i < len(labels) else ("", "")
            segments = [Segment(f"{text:<{GUTTER - 1}} "[:GUTTER], base + Style.parse(style) if style else base)]
            if no_signal and i == height // 2:
                msg = " NO SIGNAL "
                pad = max(0, (n_cells - len(msg)) // 2)
                segments += [Segment(row[:pad], line), Segment(msg[:n_cells - pad], alert),
                             Segment(row[pad + len(msg):], line)]
            elif ticks:
                segments += grid_segments(row, ticks, line, grid)
            else:
                segments.append(Segment(row, line))
            strips.append(Strip(segments, GUTTER + n_cells))
        self._strips = strips

    def render_line(self, y: int) -> Strip:
        key = (self.frame_end, self.size, self.lead, self.buffer.fs_hz, self.buffer.end_index, id(self.state.window),
               self.gain_mm_per_mv, self.state.stale_s() is None)
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
        if w is not None and self.state.stale_s() is not None:
            lines.append(("q---", "dim"))  # stale: the link is down, the last quality is not current
        elif w is not None:
            q = w.quality.get(self.lead)
            if q is not None:
                lines.append((f"q{round(q * 100):d}", "bold reverse red" if self.state.poor_quality(q) else ""))
            if any(w.lead_off.get(e) for e in electrodes_of(self.lead)):
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
        head = f"{'s':<{GUTTER}}"[:GUTTER]
        fs = self.buffer.fs_hz
        if fs is None or n_cells == 0:
            return head
        k0, _ = dot_window(self.frame_end, fs, 2 * n_cells)
        ruler = ["─"] * n_cells
        per = round(DOTS_PER_S / 5)  # dot columns per 0.2 s
        for d in range((-k0) % per, 2 * n_cells, per):
            ruler[d // 2] = "·"
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


def grid_segments(row: str, cells: list[int], line: Style, grid: Style) -> list[Segment]:
    """A trace row with a grid mark in each of ``cells`` that the trace leaves blank."""
    out, start = [], 0
    for c in cells:
        if c < len(row) and row[c] == " ":
            if c > start:
                out.append(Segment(row[start:c], line))
            out.append(Segment(GRID_CHAR, grid))
            start = c + 1
    if start < len(row):
        out.append(Segment(row[start:], line))
    return out


class LeadBar(Widget):
    """One line above the traces: the drawn leads (``l`` for the next set), an electrode that is off on
    a lead not drawn, and the gain (``g``)."""

    COMPONENT_CLASSES = {"leadbar--leads", "leadbar--off", "leadbar--dim"}

    def __init__(self, state: MonitorState, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.state = state
        self.leads: tuple[str, ...] = ()
        self.gain_mm_per_mv: float | None = None

    def hidden_off(self) -> list[str]:
        """Electrodes off on leads that are not drawn (none while the values are stale)."""
        w = self.state.window
        if w is None or self.state.stale_s() is not None:
            return []
        return undrawn_off(w.lead_off, self.leads)

    def render(self) -> Text:
        style = self.get_component_rich_style
        out = Text(no_wrap=True, overflow="crop")
        out.append("Leads ", style("leadbar--dim"))
        out.append(" ".join(self.leads), style("leadbar--leads"))
        out.append(" (l)", style("leadbar--dim"))
        hidden = self.hidden_off()
        if hidden:
            out.append("  ")
            out.append(f" {' '.join(hidden)} OFF, not drawn ", style("leadbar--off"))
        gain = f"gain {gain_text(self.gain_mm_per_mv)} (g)"
        if out.cell_len + 2 + len(gain) <= self.size.width:
            out.append(" " * (self.size.width - out.cell_len - len(gain)))
            out.append(gain, style("leadbar--dim"))
        return out


class WaveformPanel(Vertical):
    """The displayed leads, one trace each, over one time scale."""

    def __init__(self, leads: Sequence[str], buffer: WaveBuffer, state: MonitorState, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.leads = tuple(leads)
        self.buffer = buffer
        self.state = state
        self.frame_end = 0
        self.gain_mm_per_mv: float | None = None

    def compose(self) -> ComposeResult:
        bar = LeadBar(self.state, id="lead-bar")
        bar.leads = self.leads
        yield bar
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
        self.query_one(LeadBar).refresh()

    def set_gain(self, gain_mm_per_mv: float | None) -> None:
        """Auto gain (None) or a fixed gain in mm/mV, with calibration pulse and grid."""
        self.gain_mm_per_mv = gain_mm_per_mv
        for t in self.traces():
            t.gain_mm_per_mv = gain_mm_per_mv
            t.refresh()
        bar = self.query_one(LeadBar)
        bar.gain_mm_per_mv = gain_mm_per_mv
        bar.refresh()

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
                t.gain_mm_per_mv = self.gain_mm_per_mv
                self.mount(t, before=scale)
        self.leads = leads
        bar = self.query_one(LeadBar)
        bar.leads = leads
        bar.refresh()
