"""One bed on the central overview: a bordered tile of three lines.

Border title: the bed id. Line 1: the bed's most urgent alarm (marker, name, state, ``+N``) on its
priority colour. Line 2: heart rate, link state and seconds since the last message. Line 3: the three
risks, each as ``risk/threshold`` (``▲`` and red when above; greyed when the label is not validated).
"""

from __future__ import annotations

from rich.text import Text
from textual.binding import Binding
from textual.message import Message
from textual.widget import Widget

from bedside.central.overview_data import RISK_SHORT, BedView
from bedside.ui.alarm_format import alarm_name

#: Cells of one tile (border included): 38 wide, 5 high.
TILE_WIDTH = 38
TILE_HEIGHT = 5
LINK_TEXT = {"connected": "linked", "disconnected": "NO LINK", "never": "never linked"}


def age_text(age_s: float | None) -> str:
    """Seconds since the last message: ``7s``, ``2m05s``, ``3h12m``; ``--`` when never heard from."""
    if age_s is None:
        return "--"
    s = int(age_s)
    if s < 100:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def _frac(x: float, digits: int = 2) -> str:
    """A 0-1 value in ``digits + 1`` cells: ``.71`` / ``.714`` (``1.0`` / ``1.00`` for one)."""
    if x >= 1 - 0.5 * 10 ** -digits:
        return f"{1:.{digits - 1}f}"
    return f"{x:.{digits}f}".lstrip("0")


class BedTile(Widget, can_focus=True):
    """A bed's tile; Enter opens its alarm list and history."""

    COMPONENT_CLASSES = {"tile--high", "tile--medium", "tile--low", "tile--high-ack", "tile--medium-ack",
                         "tile--low-ack", "tile--quiet", "tile--dim", "tile--above", "tile--ok", "tile--bad",
                         "tile--hr"}
    BINDINGS = [  # here, not on the app: the scrolling container around the tiles would take the arrows
        Binding("enter", "open", "Open bed"),
        Binding("left", "app.move(-1, 0)", "←", show=False), Binding("right", "app.move(1, 0)", "→", show=False),
        Binding("up", "app.move(0, -1)", "↑", show=False), Binding("down", "app.move(0, 1)", "↓", show=False),
    ]

    class Open(Message):
        """The user asked for this bed's alarm list and history."""

        def __init__(self, bed_id: str) -> None:
            super().__init__()
            self.bed_id = bed_id

    def __init__(self, view: BedView, now: float, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.view = view
        self.now = now
        self.border_title = view.bed_id

    def show(self, view: BedView, now: float) -> None:
        """New data, possibly another bed's (tiles keep their places when the order changes): retitle,
        redraw and recolour the border by the top alarm's priority."""
        self.view, self.now = view, now
        self.border_title = view.bed_id
        top = view.top
        for p in ("high", "medium", "low"):
            self.set_class(top is not None and top.priority == p, f"-{p}")
        self.set_class(top is not None and top.state == "ACKNOWLEDGED", "-ack")
        self.refresh()

    def on_mount(self) -> None:
        self.show(self.view, self.now)

    def action_open(self) -> None:
        """Open this bed's screen."""
        self.post_message(self.Open(self.view.bed_id))

    def on_click(self) -> None:
        self.focus()
        self.post_message(self.Open(self.view.bed_id))

    def alarm_line(self, width: int) -> Text:
        style = self.get_component_rich_style
        top = self.view.top
        if top is None:
            return Text(" no active alarm".ljust(width), style("tile--quiet"))
        more = f" +{len(self.view.alarms) - 1}" if len(self.view.alarms) > 1 else ""
        head = f"{top.marker:<3} {alarm_name(top.alarm)} {top.state.upper()}"
        text = f"{head[:width - len(more)]}{more}".ljust(width)
        ack = "-ack" if top.state == "ACKNOWLEDGED" else ""
        return Text(text, style(f"tile--{top.priority}{ack}"))

    def status_line(self, width: int) -> Text:
        style = self.get_component_rich_style
        v = self.view
        hr = f"{v.hr_bpm:3.0f}" if v.hr_bpm is not None else "---"
        out = Text("HR ", style("tile--dim"))
        out.append(hr, style("tile--hr"))
        link = LINK_TEXT.get(v.link, v.link)
        out.append("  ")
        out.append(link, style("tile--ok" if v.link == "connected" else "tile--bad"))
        out.append(f" {age_text(v.age_s(self.now))}", style("tile--dim"))
        if v.scored is False and v.reason:
            out.append(f" {v.reason}", style("tile--dim"))
        out.truncate(width)
        return out

    def risk_line(self, width: int) -> Text:
        style = self.get_component_rich_style
        v = self.view
        out = Text()
        for label, short in RISK_SHORT.items():
            risk, thr = v.risks.get(label), v.thresholds.get(label)
            if out.cell_len:
                out.append(" ")
            out.append(f"{short} ", style("tile--dim"))
            if risk is None:
                out.append(" --     ", style("tile--dim"))
                continue
            above = thr is not None and risk >= thr
            cls = "tile--dim" if not v.validated.get(label, True) else "tile--above" if above else ""
            # three decimals and an explicit mark from the exact values: .497<.50 never reads as "at threshold"
            thr_text = f"{'≥' if above else '<'}{_frac(thr)}" if thr is not None else "   "
            out.append(f"{_frac(risk, 3)}{thr_text}", style(cls) if cls else "")
        out.truncate(width)
        return out

    def render(self) -> Text:
        width = max(1, self.content_size.width)
        return Text("\n").join([self.alarm_line(width), self.status_line(width), self.risk_line(width)])
