"""Modal dialogs over the monitor: the engine failure (cannot be missed) and one alarm in full.

Both are small boxes in the middle of the screen, so the status bar and the alarm banner stay
visible above them; both close with Esc or Enter, and Ctrl+Q quits from either.
"""

from __future__ import annotations

from datetime import tzinfo

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from bedside.ui.alarm_format import CARRIED_OVER, SCREEN_ACTIONS, alarm_name, carried_over, clock, state_text
from bedside.ui.monitor_state import AlarmEntry, MonitorState

FAILURE_TITLE = "MONITORING STOPPED: the bedside engine failed"
FAILURE_ACTION = ("No ECG is analysed and no alarm is raised from now on. Call the technician; the reason "
                  "is printed again when this screen closes (Ctrl+Q).")


class FailureDialog(ModalScreen[None]):
    """The engine stopped or refused to start: the full reason, what it means, what to do."""

    CSS_PATH = "dialogs.tcss"
    BINDINGS = [Binding("escape,enter", "dismiss", "Close (the alarm stays)"),
                Binding("ctrl+q", "app.quit", "Quit", priority=True)]

    def __init__(self, reason: str) -> None:
        super().__init__(id="failure-dialog")
        self.reason = reason

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog-box", classes="-failure"):
            yield Static(Text(FAILURE_TITLE, style="bold"), id="dialog-title")
            with VerticalScroll(id="dialog-body"):
                yield Static(Text(self.reason), id="failure-reason")
            yield Static(FAILURE_ACTION, id="dialog-action")
            yield Static("Esc/Enter: close (the ENGINE STOPPED alarm stays)   Ctrl+Q: quit", id="dialog-keys")

    def action_dismiss(self) -> None:  # type: ignore[override]
        """Close the dialog; the alarm stays in the banner and the help keeps the reason."""
        self.dismiss(None)


class AlarmDetail(ModalScreen[None]):
    """One current alarm with every field written out (the list shows one line of it)."""

    CSS_PATH = "dialogs.tcss"
    BINDINGS = [Binding("escape,enter", "dismiss", "Close"), Binding("ctrl+q", "app.quit", "Quit", priority=True)]

    def __init__(self, state: MonitorState, entry: AlarmEntry, tz: tzinfo | None) -> None:
        super().__init__(id="alarm-detail")
        self.state = state
        self.entry = entry
        self.tz = tz

    def text(self) -> str:
        """The detail as plain lines: name, kind, state, action, times, who, message."""
        c = self.entry.change
        action = self.state.action(c) or SCREEN_ACTIONS.get(c.alarm, "")
        lines = [f"{c.priority.marker} {alarm_name(c.alarm)} ({c.kind.value}, {c.priority.value} priority)"
                 + (f", {CARRIED_OVER} from session {getattr(c, 'carried_over_from', '?')} (before a restart)"
                    if carried_over(c) else ""),
                 f"State:   {state_text(c, self.state.audio_paused_left_s(self.entry))}",
                 f"Action:  {action or '-'}",
                 f"Raised:  {clock(self.entry.raised_wall, self.tz)}   changed {clock(c.wall_time, self.tz)}"
                 + (f" by {c.who}" if c.who else ""),
                 "", c.message]
        if c.score is not None and c.threshold is not None:
            lines.insert(4, f"Value:   {c.score:.3f} {'≥' if c.score >= c.threshold else '<'} {c.threshold:.3f}")
        return "\n".join(lines)

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog-box"):
            yield Static(Text(alarm_name(self.entry.name), style="bold"), id="dialog-title")
            with VerticalScroll(id="dialog-body"):
                yield Static(Text(self.text()), id="alarm-text")
            yield Static("Esc/Enter: close   a: acknowledge in the list", id="dialog-keys")

    def action_dismiss(self) -> None:  # type: ignore[override]
        """Back to the monitor."""
        self.dismiss(None)
