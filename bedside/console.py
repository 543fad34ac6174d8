"""Headless console output: one line per committed alarm transition, and the end-of-run summary."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any, TextIO

from rich.console import Console
from rich.table import Table

from bedside.engine import RunSummary
from bedside.events import AlarmChange, AlarmKind


def format_t(t_s: float) -> str:
    """Signal time as H:MM:SS.s."""
    h, rest = divmod(t_s, 3600)
    m, s = divmod(rest, 60)
    return f"{int(h)}:{int(m):02d}:{s:04.1f}"


def transition_line(c: AlarmChange) -> str:
    """``0:01:25.0 #12 ** PHYS edema ACTIVE (was cleared) Edema risk 0.71 > 0.55 [by rn.lee]``."""
    kind = "PHYS" if c.kind == AlarmKind.PHYSIOLOGICAL else "TECH"
    was = f" (was {c.previous.value})" if c.previous else ""
    who = f" [by {c.who}]" if c.who else ""
    return (f"{format_t(c.t_s)} #{c.seq} {c.priority.marker:<3} {kind} {c.alarm} {c.state.value.upper()}{was} "
            f"{c.message}{who}")


class TransitionPrinter:
    """Engine listener printing each AlarmChange as it is announced (after it is committed)."""

    def __init__(self, stream: TextIO | None = None):
        self.stream = stream or sys.stdout

    def __call__(self, event: Any) -> None:
        if isinstance(event, AlarmChange):
            self.stream.write(transition_line(event) + "\n")
            self.stream.flush()


def print_summary(summary: RunSummary, console: Console, title: str, not_validated: Sequence[str] = ()) -> None:
    """Windows scored and not scored (why), the alarm transitions, the log and the speed.

    ``not_validated``: the bundle's labels that may not alarm (their risks are logged only).
    """
    console.print(f"[bold]{title}[/bold]", soft_wrap=True)
    if summary.end_reason == "already complete":
        console.print(f"Already replayed into {summary.db_path} with the same model and settings (session "
                      f"{summary.session_id}): nothing added. Review it with `bedside alerts --db {summary.db_path} "
                      f"--session {summary.session_id}`, or pass --new-session to replay it again.", soft_wrap=True)
        return
    t = Table(title="Windows", show_edge=False)
    t.add_column("windows")
    t.add_column("count", justify="right")
    t.add_row("analysed", str(summary.windows))
    t.add_row("scored", str(summary.scored))
    for reason, n in sorted(summary.not_scored.items()):
        t.add_row(f"not scored: {reason}", str(n))
    console.print(t)
    if summary.transitions:
        a = Table(title=f"Alarm transitions ({len(summary.transitions)})", show_edge=False)
        for col in ("time", "#", "kind", "prio", "alarm", "state", "message"):
            a.add_column(col)
        for c in summary.transitions:
            a.add_row(format_t(c.t_s), str(c.seq), c.kind.value, c.priority.marker, c.alarm, c.state.value,
                      c.message + (f" [by {c.who}]" if c.who else ""))
        console.print(a)
    else:
        console.print("Alarm transitions: none")
    if not_validated:
        console.print(f"labels not validated (risks logged, never alarmed): {', '.join(not_validated)}",
                      soft_wrap=True)
    if summary.technical_events:
        console.print("Technical events: " + ", ".join(f"{k} {n}" for k, n in sorted(summary.technical_events.items())),
                      soft_wrap=True)
    if summary.skipped_windows:
        console.print(f"Windows skipped (inference behind, samples all kept): {summary.skipped_windows}",
                      soft_wrap=True)
    if summary.gap_samples:
        console.print(f"Samples missing (analysed as gaps, never zero-filled): {summary.gap_samples}")
    if summary.storage_failures or not summary.log_complete:
        console.print(f"[red]Log writes failed {summary.storage_failures} times; not kept in the log: "
                      f"{summary.unsaved_windows} windows, {summary.unsaved_transitions} alarm transitions[/red]",
                      soft_wrap=True)
    resumed = f", resumed at window {summary.resumed_at_window}" if summary.resumed_at_window else ""
    console.print(f"Logged to {summary.db_path} (session {summary.session_id}{resumed}); review with "
                  f"`bedside alerts --db {summary.db_path} --session {summary.session_id}`", soft_wrap=True)
    speed = f" ({summary.signal_s / summary.wall_s:.0f}x real time)" if summary.wall_s > 0 and summary.signal_s else ""
    incomplete = "" if summary.log_complete else " (the log is incomplete)"
    console.print(f"{summary.signal_s:.0f} s of signal in {summary.wall_s:.1f} s{speed}; ended: {summary.end_reason}"
                  f"{incomplete}", soft_wrap=True)


def lost_writes_message(summary: RunSummary) -> str | None:
    """Why a run must exit non-zero although it ended: what its log did not keep (None: nothing lost)."""
    if summary.log_complete:
        return None
    return (f"the alarm log {summary.db_path} did not keep {summary.unsaved_windows} analysed windows and "
            f"{summary.unsaved_transitions} alarm transitions (writes failed {summary.storage_failures} times); "
            "they were shown but are not in the log. Check that the disk is not full and the file is writable.")
