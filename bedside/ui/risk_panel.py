"""Risk of edema, pleural effusion and cardiomegaly: the current value, its threshold, a 1-hour trend.

The trend is a bar sparkline on a fixed 0..1 scale (a probability is never stretched to fill the
height), one column per time bucket holding the highest risk in it; a bucket with no scored window
stays blank, and the threshold's level is marked with a dotted line where no bar covers it.

A label the bundle did not validate (its validation AUROC is not credibly above chance) never
alarms: its value and trend are drawn greyed with the words "not validated", without a threshold,
threshold mark or alarm colour.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from rich.text import Text
from textual.widget import Widget

from bedside.ui.monitor_state import TREND_S, MonitorState

BLOCKS = " ▁▂▃▄▅▆▇█"
#: Most rows a trend gets (taller bars add nothing readable).
MAX_BAR_ROWS = 4
NOT_VALIDATED = "not validated"
NAMES = {"edema": "Edema", "pleural_effusion": "Pl. effusion", "cardiomegaly": "Cardiomegaly"}


def display_name(label: str) -> str:
    return NAMES.get(label, label.replace("_", " ").capitalize())


def bucket_max(points: Iterable[tuple[float, float]], now_s: float, span_s: float, n: int) -> list[float]:
    """Highest value per time bucket over (now - span, now]; NaN where no value fell in a bucket."""
    out = [math.nan] * n
    t0 = now_s - span_s
    for t, v in points:
        if t <= t0 or t > now_s or math.isnan(v):
            continue
        i = min(n - 1, int((t - t0) / span_s * n))
        out[i] = v if math.isnan(out[i]) else max(out[i], v)
    return out


def trend_cells(values: list[float], height: int, threshold: float | None) -> list[list[tuple[str, bool, bool]]]:
    """Rows (top first) of (char, above threshold, is threshold mark) for bars on a 0..1 scale."""
    levels = 8 * height
    thr_row = None
    if threshold is not None:
        thr_row = height - 1 - min(height - 1, int(threshold * levels) // 8)
    rows = []
    for r in range(height):
        base = (height - 1 - r) * 8  # eighths below this row
        row = []
        for v in values:
            if math.isnan(v):
                row.append(("┈" if r == thr_row else " ", False, r == thr_row))
                continue
            eighths = max(1, min(levels, round(v * levels)))  # a scored bucket shows at least a sliver
            fill = min(8, max(0, eighths - base))
            above = threshold is not None and v >= threshold
            if fill == 0 and r == thr_row:
                row.append(("┈", above, True))
            else:
                row.append((BLOCKS[fill], above, False))
        rows.append(row)
    return rows


class RiskPanel(Widget):
    """One block per label: name, current risk / threshold, and the last hour's trend below it."""

    COMPONENT_CLASSES = {"risk--name", "risk--value", "risk--above", "risk--stale", "risk--bar",
                         "risk--bar-above", "risk--threshold", "risk--unvalidated"}

    def __init__(self, state: MonitorState, *, trend_s: float = TREND_S, id: str | None = None) -> None:
        super().__init__(id=id)
        self.state = state
        self.trend_s = trend_s

    def render(self) -> Text:
        labels = self.state.labels
        width, height = self.size.width, self.size.height
        out = Text(no_wrap=True, overflow="crop")
        if not labels:
            out.append("Risks: waiting for the first window", self.get_component_rich_style("risk--stale"))
            return out
        style = self.get_component_rich_style
        per = max(1, (height - 1) // len(labels))  # rows per label: value line + trend (+ axis)
        axis = per >= 5  # room for a "-1h ... now" line under each trend
        bar_h = max(1, min(MAX_BAR_ROWS, per - 1 - axis))
        out.append(f"{'Risk':<12} {'now':>4} {'thr':>4}"[:width], style("risk--name"))
        if width >= 33:
            out.append(f"   {self.trend_s / 3600:g} h trend", style("risk--stale"))
        stale = self.state.window is not None and not self.state.window.scored
        for label in labels:
            if not self.state.validated(label):
                self._render_unvalidated(out, label, width, per, bar_h, axis)
                continue
            value = self.state.risk(label)
            thr = self.state.thresholds.get(label)
            above = value is not None and thr is not None and value >= thr
            out.append("\n")
            out.append(f"{display_name(label)[:12]:<12} ", style("risk--name"))
            value_style = style("risk--above") if above else style("risk--stale" if stale else "risk--value")
            out.append(f"{'--' if value is None else f'{value:.2f}':>4}", value_style)
            out.append(f" {'--' if thr is None else f'{thr:.2f}':>4}", style("risk--name"))
            if above:
                out.append(" ▲", style("risk--above"))
            if per == 1:
                continue
            values = bucket_max(self.state.trends.get(label, ()), self.state.now_s, self.trend_s, width)
            for row in trend_cells(values, bar_h, thr):
                out.append("\n")
                for ch, is_above, is_thr in row:
                    out.append(ch, style("risk--threshold" if is_thr else "risk--bar-above" if is_above else "risk--bar"))
            if axis:
                self._axis(out, width)
        return out

    def _axis(self, out: Text, width: int) -> None:
        left, right = f"-{self.trend_s / 3600:g}h", "now"
        out.append("\n" + left + right.rjust(width - len(left)), self.get_component_rich_style("risk--stale"))

    def _render_unvalidated(self, out: Text, label: str, width: int, per: int, bar_h: int, axis: bool) -> None:
        """A label that never alarms: greyed value and trend, "not validated" in place of the threshold."""
        dim = self.get_component_rich_style("risk--unvalidated")
        value = self.state.risk(label)
        out.append("\n")
        out.append(f"{display_name(label)[:12]:<12} {'--' if value is None else f'{value:.2f}':>4}", dim)
        inline = per == 1 or width >= 18 + len(NOT_VALIDATED)  # room beside the value, else on the next row
        if inline:
            out.append(f" {NOT_VALIDATED}", dim)
        if per == 1:
            return
        rows = bar_h if inline else bar_h - 1
        if not inline:
            out.append(f"\n  {NOT_VALIDATED}", dim)
        values = bucket_max(self.state.trends.get(label, ()), self.state.now_s, self.trend_s, width)
        for row in trend_cells(values, rows, None) if rows > 0 else ():
            out.append("\n" + "".join(ch for ch, _, _ in row), dim)
        if axis:
            self._axis(out, width)
