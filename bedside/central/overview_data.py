"""What the multi-bed overview shows, read from central.db (no Textual here; read-only queries).

The overview is a view on the database the server writes, so the terminal (``--ui``) and every browser
session (``--web``, one process per session) show the same thing and the screen never talks to a bed.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field

#: Sort rank of a priority (most urgent first); beds without an alarm come last.
PRIORITY_RANK = {"high": 0, "medium": 1, "low": 2}
MARKERS = {"high": "***", "medium": "**", "low": "*"}
#: Risks the tiles show, in this order, with their short names.
RISK_SHORT = {"edema": "ED", "pleural_effusion": "PE", "cardiomegaly": "CM"}


@dataclass(frozen=True)
class ActiveAlarm:
    """One alarm that is not cleared (the bed's, or the central's own ``bed_silent``)."""

    bed_id: str
    alarm: str
    source: str  # "bed" | "central"
    kind: str  # "physiological" | "technical"
    priority: str  # "high" | "medium" | "low"
    state: str  # the bed's AlarmState value
    message: str
    raised_wall: float
    wall_time: float  # last change

    @property
    def marker(self) -> str:
        return MARKERS.get(self.priority, "?")

    @property
    def sort_key(self) -> tuple:
        """Most urgent first: priority, then unacknowledged before acknowledged, then the newest."""
        return (PRIORITY_RANK.get(self.priority, 3), self.state == "ACKNOWLEDGED", -self.wall_time)


@dataclass(frozen=True)
class BedView:
    """One tile: the bed, its link, its latest window and its alarms (most urgent first)."""

    bed_id: str
    link: str  # "never", "connected", "disconnected"
    last_seen_wall: float | None
    hr_bpm: float | None
    scored: bool | None
    reason: str
    risks: dict[str, float | None]
    thresholds: dict[str, float]
    validated: dict[str, bool]
    alarms: tuple[ActiveAlarm, ...] = field(default_factory=tuple)

    @property
    def top(self) -> ActiveAlarm | None:
        return self.alarms[0] if self.alarms else None

    @property
    def sort_key(self) -> tuple:
        top = self.top
        return (top.sort_key if top else (4, False, 0.0), self.bed_id)

    def age_s(self, now: float) -> float | None:
        """Seconds since the last message (None: never heard from)."""
        return None if self.last_seen_wall is None else max(0.0, now - self.last_seen_wall)


def read_overview(conn: sqlite3.Connection) -> list[BedView]:
    """Every known bed with its alarms, sorted most urgent first (then by bed id)."""
    conn.row_factory = sqlite3.Row
    alarms: dict[str, list[ActiveAlarm]] = {}
    for r in conn.execute("select bed_id, alarm, source, kind, priority, state, message, raised_wall, wall_time "
                          "from active_alarms"):
        alarms.setdefault(r["bed_id"], []).append(ActiveAlarm(**dict(r)))
    beds = []
    for r in conn.execute("select * from beds"):
        beds.append(BedView(
            bed_id=r["bed_id"], link=r["link"] or "never", last_seen_wall=r["last_seen_wall"], hr_bpm=r["hr_bpm"],
            scored=None if r["scored"] is None else bool(r["scored"]), reason=r["reason"] or "",
            risks=json.loads(r["risks"] or "{}"), thresholds=json.loads(r["thresholds"] or "{}"),
            validated=json.loads(r["validated"] or "{}"),
            alarms=tuple(sorted(alarms.get(r["bed_id"], []), key=lambda a: a.sort_key))))
    return sorted(beds, key=lambda b: b.sort_key)


@dataclass(frozen=True)
class HistoryRow:
    """One alarm transition of a bed (or of the central's alarm about it), for the bed screen."""

    wall_time: float
    source: str  # "bed" | "central"
    alarm: str
    priority: str
    kind: str
    previous: str | None
    state: str
    cause: str
    message: str


def read_history(conn: sqlite3.Connection, bed_id: str, limit: int = 500) -> list[HistoryRow]:
    """The newest ``limit`` transitions of a bed, newest first: the bed's and the central's ``bed_silent``."""
    conn.row_factory = sqlite3.Row
    rows = [HistoryRow(r["wall_time"], "bed", r["alarm"], r["priority"], r["kind"], r["previous"], r["state"],
                       r["cause"] or "", r["message"] or "")
            for r in conn.execute("select * from alarm_transitions where bed_id = ? order by wall_time desc, id desc "
                                  "limit ?", [bed_id, limit])]
    rows += [HistoryRow(r["wall_time"], "central", r["alarm"], r["priority"], "technical", r["previous"], r["state"],
                        "central", r["message"] or "")
             for r in conn.execute("select * from central_alarms where bed_id = ? order by wall_time desc, id desc "
                                   "limit ?", [bed_id, limit])]
    return sorted(rows, key=lambda h: -h.wall_time)[:limit]
