"""Risk of edema, pleural effusion and cardiomegaly: the current value, its threshold, a 1-hour trend.

The trend is a bar sparkline on a fixed 0..1 scale (a probability is never stretched to fill the
height), one column per time bucket holding the highest risk in it; a bucket with no scored window
stays blank, and the threshold's level is marked with a dotted line where no bar covers it.

The current risk and its threshold are written with three decimals and an explicit ``≥`` or ``<``
between them (``0.251 ≥ 0.250``), so which side of the threshold a risk is on is always readable. The
colour of the value follows that comparison; the name is reversed while the label's alarm is current,
so the mark follows the alarm (with its persistence and hysteresis) and does not blink with every window
that crosses the threshold. While the values are stale (link down, analysis stopped) they are ``---``
and the header says how old the last ones are.

A label the bundle did not validate (its validation AUROC is not credibly above chance) never
alarms: its value and trend are drawn greyed with the words "not validated", without a threshold,
threshold mark or alarm colour.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from rich.style import Style
from rich.text import Text
from textual.widget import Widget

from bedside.ui.alarm_format import age_text
from bedside.ui.monitor_state import TREND_S, MonitorState

BLOCKS = " ▁▂▃▄▅▆▇█"
#: Most rows a trend gets (taller bars add nothing readable).
MAX_BAR_ROWS = 4
NOT_VALIDATED = "not validated"
NAMES = {"edema": "Edema", "pleural_effusion": "Pl. effusion", "cardiomegaly": "Cardiomegaly"}
SHORT_NAMES = {"pleural_effusion": "Pl.effusion", "cardiomegaly": "Cardiomeg."}
#: Cells of a value line besides the name: " 0.251 ≥0.250".
VALUE_CELLS = 13


def display_name(label: str, width: int = 12) -> str:
    """The label's name in at most ``width`` cells (a short form at 80 columns)."""
    name = NAMES.get(label, label.replace("_", " ").capitalize())
    if len(name) > width:
        name = SHORT_NAMES.get(label, name)
    return name[:width]


def compare_text(value: float | None, threshold: float | None) -> tuple[str, bool]:
    """(" 0.251 ≥0.250", above) with three decimals; ``--`` for a missing value or threshold."""
    v = "  ---" if value is None else f"{value:.3f}"
    if threshold is None:
        return f" {v:>5}  {'--':>5}", False
    if value is None:
        return f" {v:>5}  {threshold:.3f}", False
    above = value >= threshold
    return f" {v} {'≥' if above else '<'}{threshold:.3f}", above


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
        name_w = max(4, min(16, width - VALUE_CELLS))
        age = self.state.stale_s()
        if age is not None:
            out.append(f"Risk --- {age_text(age)}"[:width], style("risk--above"))
        else:
            out.append(f"{'Risk':<{name_w}} {'now':>5}  {'thr':>5}"[:width], style("risk--name"))
        trend_label = f"   {self.trend_s / 3600:g} h trend"
        if out.cell_len + len(trend_label) <= width:
            out.append(trend_label, style("risk--stale"))
        not_scored = self.state.window is not None and not self.state.window.scored
        for label in labels:
            if not self.state.validated(label):
                self._render_unvalidated(out, label, width, per, bar_h, axis)
                continue
            value = None if age is not None else self.state.risk(label)
            thr = self.state.thresholds.get(label)
            text, above = compare_text(value, thr)
            in_alarm = label in self.state.alarms
            out.append("\n")
            out.append(f"{display_name(label, name_w):<{name_w}}",
                       style("risk--name") + (Style(reverse=True, bold=True) if in_alarm else Style()))
            value_style = style("risk--above") if above else style("risk--stale" if not_scored else "risk--value")
            out.append(text, value_style)
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
        name_w = max(4, min(16, width - VALUE_CELLS))
        if self.state.stale_s() is not None:
            value = None
        out.append(f"{display_name(label, name_w):<{name_w}} {'  ---' if value is None else f'{value:.3f}'}", dim)
        inline = per == 1 or width >= name_w + 7 + len(NOT_VALIDATED)  # room beside the value, else on the next row
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
