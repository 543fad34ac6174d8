"""The central station's own SQLite log: every report received from every bed, once, and the current state.

Built like the bed's log (bedside/store.py) on sqlite-utils: schema from :data:`MIGRATIONS`, WAL journal,
``synchronous=FULL`` (a committed batch survives a kill -9), file mode 0600. :meth:`CentralStore.commit`
writes a batch of received messages in ONE transaction and tells, per message, whether it was new or a
duplicate (same MSH-10 control id: stored once, acknowledged again); the server acknowledges only after
it returned.

Tables:

- ``messages``: one row per accepted control id (the de-duplication key), with its bed and MSH-13 order;
- ``alarm_transitions``: one row per PCD-04 alarm report (a bed's committed transition);
- ``observations``: one row per PCD-01 report (an analysed window);
- ``beds``: per bed: link state, last message, latest heart rate and risks (what the overview shows);
- ``active_alarms``: per bed the alarms that are not cleared (the bed's, and the central's own ``bed_silent``
  and ``messages_missing``);
- ``central_alarms``: the central's own technical alarm transitions (raised / updated / cleared);
- ``rejects``: every refused message, with the reason (nothing is dropped without a trace).
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlite_utils import Database, Migrations

from bedside.errors import BedsideError
from bedside.hl7.model import AlarmReport, Envelope, ObservationReport
from bedside.store import (BUSY_TIMEOUT_S, create_private_file, existing_sqlite_tables, readonly_uri, utc,
                           write_transaction)

MIGRATIONS = Migrations("central")

#: The central's technical alarm for a bed that sent nothing for too long.
BED_SILENT = "bed_silent"
#: Priority of ``bed_silent``: the central no longer sees that patient's alarms (IEC 60601-1-8 medium).
BED_SILENT_PRIORITY = "medium"
#: Tables that make an SQLite file a central.db.
CENTRAL_TABLES = frozenset({"messages", "alarm_transitions", "observations", "beds", "active_alarms"})
#: The central's technical alarm for a gap in a bed's MSH-13 sequence: messages of this session it never got.
MESSAGES_MISSING = "messages_missing"
#: Priority of ``messages_missing``: the central's record of the session is incomplete (low; alarms still flow).
MESSAGES_MISSING_PRIORITY = "low"
#: Characters of a refused message kept in ``rejects`` (enough to see what it was).
REJECT_EXCERPT = 300


@MIGRATIONS()
def m001_initial(db: Database) -> None:
    """Messages, alarm transitions, observations, beds, active alarms, central alarms, rejects."""
    db["messages"].create({"control_id": str, "bed_id": str, "bed_seq": int, "kind": str, "received_wall": float,
                           "peer": str}, pk="control_id", not_null={"bed_id", "kind", "received_wall"})
    db["messages"].create_index(["bed_id", "bed_seq"])
    db["alarm_transitions"].create({
        "id": int, "control_id": str, "bed_id": str, "session_id": int, "seq": int, "bed_seq": int, "alarm": str,
        "kind": str, "priority": str, "state": str, "previous": str, "cause": str, "message": str, "t_s": float,
        "wall_time": float, "utc": str, "score": float, "threshold": float, "received_wall": float,
    }, pk="id", not_null={"control_id", "bed_id", "session_id", "seq", "alarm", "state"})
    db["alarm_transitions"].create_index(["control_id"], unique=True)
    db["alarm_transitions"].create_index(["bed_id", "session_id", "seq"])
    db["observations"].create({
        "id": int, "control_id": str, "bed_id": str, "session_id": int, "window_index": int, "bed_seq": int,
        "t_s": float, "wall_time": float, "scored": int, "reason": str, "hr_bpm": float, "sqi_min": float,
        "risks": str, "thresholds": str, "validated": str, "received_wall": float,
    }, pk="id", not_null={"control_id", "bed_id", "session_id", "window_index"})
    db["observations"].create_index(["control_id"], unique=True)
    db["observations"].create_index(["bed_id", "session_id", "window_index"])
    db["beds"].create({
        "bed_id": str, "registered": str, "link": str, "peer": str, "link_wall": float, "last_seen_wall": float,
        "last_bed_seq": int, "session_id": int, "window_index": int, "obs_wall": float, "scored": int,
        "reason": str, "hr_bpm": float, "sqi_min": float, "risks": str, "thresholds": str, "validated": str,
    }, pk="bed_id")
    db["active_alarms"].create({
        "bed_id": str, "alarm": str, "source": str, "session_id": int, "seq": int, "kind": str, "priority": str,
        "state": str, "message": str, "raised_wall": float, "wall_time": float,
    }, pk=("bed_id", "alarm"))
    db["central_alarms"].create({
        "id": int, "bed_id": str, "alarm": str, "priority": str, "state": str, "previous": str, "wall_time": float,
        "utc": str, "message": str,
    }, pk="id")
    db["rejects"].create({"id": int, "received_wall": float, "utc": str, "peer": str, "bed_id": str,
                          "control_id": str, "reason": str, "excerpt": str}, pk="id")


@MIGRATIONS()
def m002_sequence_gaps(db: Database) -> None:
    """Per bed: messages missing from its MSH-13 sequence (all time, and in its current session) and
    sequence restarts (a new bed log)."""
    db["beds"].add_column("missing_messages", int, not_null_default=0)
    db["beds"].add_column("session_missing", int, not_null_default=0)
    db["beds"].add_column("seq_restarts", int, not_null_default=0)


@dataclass(frozen=True)
class Gap:
    """Messages of a bed the central never received: MSH-13 ``first`` .. ``last`` (inclusive)."""

    bed_id: str
    first: int
    last: int
    session_missing: int  # missing in the bed's current session so far (this gap included)

    @property
    def count(self) -> int:
        return self.last - self.first + 1


class CentralStoreError(BedsideError):
    """The central database cannot be opened or written."""


@dataclass(frozen=True)
class Received:
    """One parsed message to store, with the connection it came on."""

    envelope: Envelope
    peer: str
    received_wall: float


def _json(d: dict[str, Any]) -> str:
    return json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in d.items()}, sort_keys=True)


def check_central_path(path: Path) -> None:
    """Raise :class:`CentralStoreError`, having changed nothing, when ``path`` exists and is not a central.db
    (another kind of file, a bed's log, another application's database)."""
    fix = "Pass --db a new file name or a central.db that `bedside central` wrote."
    tables = existing_sqlite_tables(path, "central.db", fix, CentralStoreError)
    if tables and not CENTRAL_TABLES <= tables:
        what = "a bed's alarm log" if "sessions" in tables else "another application's database"
        raise CentralStoreError(f"{path}: is {what}, not a central.db; nothing was changed. {fix}")


class CentralStore:
    """One central.db; the server is its only writer (one thread)."""

    def __init__(self, path: str | os.PathLike[str]):
        if not os.fspath(path):
            raise CentralStoreError("--db is empty: give the central database's file name (for example central.db).")
        self.path = Path(path)
        self.gaps: list[Gap] = []  # found by commit(); the server takes them (log, counters)
        check_central_path(self.path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            create_private_file(self.path)
            conn = sqlite3.connect(str(self.path), check_same_thread=False, timeout=BUSY_TIMEOUT_S,
                                   isolation_level=None)
            self.db = Database(conn)
            self.db.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            self.db.enable_wal()
            self.db.execute("PRAGMA synchronous = FULL")
            with self.transaction():
                MIGRATIONS.apply(self.db)
        except (OSError, sqlite3.Error) as exc:
            raise CentralStoreError(f"{self.path}: cannot open the central database: {exc}. Check that the folder "
                                    "is writable and the file is a central.db (not a bed's log); or pass another "
                                    "--db.") from exc

    def transaction(self) -> contextlib.AbstractContextManager[None]:
        """One write transaction (``bedside.store.write_transaction``: BEGIN IMMEDIATE, rolled back on error)."""
        return write_transaction(self.db)

    def close(self) -> None:
        self.db.close()

    # -- beds --------------------------------------------------------------------------------------

    def register_beds(self, bed_ids: Iterable[str], how: str, wall_time: float) -> None:
        """Make beds known (allow-list at start, or first contact); an existing bed keeps its state."""
        with self.transaction():
            for bed_id in bed_ids:
                self.db.execute("insert or ignore into beds (bed_id, registered, link, link_wall) values (?, ?, ?, ?)",
                                [bed_id, how, "never", wall_time])

    def known_beds(self) -> set[str]:
        return {r[0] for r in self.db.execute("select bed_id from beds")}

    def set_link(self, bed_id: str, link: str, peer: str, wall_time: float) -> None:
        """Record a bed's connection state: "connected" or "disconnected"."""
        with self.transaction():
            self.db.execute("update beds set link = ?, peer = ?, link_wall = ? where bed_id = ?",
                            [link, peer, wall_time, bed_id])

    def mark_all_disconnected(self, wall_time: float) -> None:
        """At start: no bed is connected to a central that just started (a kill -9 left links 'connected')."""
        with self.transaction():
            self.db.execute("update beds set link = 'disconnected', link_wall = ? where link = 'connected'",
                            [wall_time])

    def last_seen(self) -> dict[str, float | None]:
        """bed id -> UNIX time of its last stored message (None: never)."""
        return {r[0]: r[1] for r in self.db.execute("select bed_id, last_seen_wall from beds")}

    # -- the central's own alarm -------------------------------------------------------------------

    def raise_silent(self, bed_id: str, silent_s: float, wall_time: float) -> bool:
        """Raise ``bed_silent`` for a bed (False when it is already active)."""
        text = f"No message from bed {bed_id} for {silent_s:.0f} s"
        with self.transaction():
            if self.db.execute("select 1 from active_alarms where bed_id = ? and alarm = ?",
                               [bed_id, BED_SILENT]).fetchone():
                return False
            self.db["active_alarms"].insert(dict(
                bed_id=bed_id, alarm=BED_SILENT, source="central", session_id=None, seq=None, kind="technical",
                priority=BED_SILENT_PRIORITY, state="active", message=text, raised_wall=wall_time,
                wall_time=wall_time))
            self._log_central(bed_id, "active", None, text, wall_time)
        return True

    def _clear_silent(self, bed_id: str, wall_time: float) -> None:
        """Inside a transaction: the bed spoke again."""
        cur = self.db.execute("delete from active_alarms where bed_id = ? and alarm = ?", [bed_id, BED_SILENT])
        if cur.rowcount:
            self._log_central(bed_id, "cleared", "active", f"Bed {bed_id} is sending again", wall_time)

    def _log_central(self, bed_id: str, state: str, previous: str | None, text: str, wall_time: float,
                     alarm: str = BED_SILENT, priority: str = BED_SILENT_PRIORITY) -> None:
        self.db["central_alarms"].insert(dict(bed_id=bed_id, alarm=alarm, priority=priority,
                                              state=state, previous=previous, wall_time=wall_time,
                                              utc=utc(wall_time), message=text))

    def _check_sequence(self, bed_id: str, bed_seq: int, last: int | None, wall_time: float) -> None:
        """Inside a transaction, for a new message: a gap after MSH-13 ``last`` raises (or updates)
        ``messages_missing`` for the bed's session; a number at or below ``last`` is a restarted sequence
        (the bed got a new log file): counted, no alarm."""
        if last is None or bed_seq == last + 1:
            return
        if bed_seq <= last:
            self.db.execute("update beds set seq_restarts = seq_restarts + 1 where bed_id = ?", [bed_id])
            return
        first, end = last + 1, bed_seq - 1
        n = end - first + 1
        self.db.execute("update beds set missing_messages = missing_messages + ?, "
                        "session_missing = session_missing + ? where bed_id = ?", [n, n, bed_id])
        total = self.db.execute("select session_missing from beds where bed_id = ?", [bed_id]).fetchone()[0]
        old = self.db.execute("select raised_wall from active_alarms where bed_id = ? and alarm = ?",
                              [bed_id, MESSAGES_MISSING]).fetchone()
        text = (f"{total} message{'s' * (total != 1)} of this session missing from bed {bed_id} "
                f"(last gap: MSH-13 {first}-{end})")
        self.db["active_alarms"].upsert(dict(
            bed_id=bed_id, alarm=MESSAGES_MISSING, source="central", session_id=None, seq=None, kind="technical",
            priority=MESSAGES_MISSING_PRIORITY, state="active", message=text,
            raised_wall=old[0] if old is not None else wall_time, wall_time=wall_time), pk=("bed_id", "alarm"))
        self._log_central(bed_id, "active", "active" if old is not None else None, text, wall_time,
                          MESSAGES_MISSING, MESSAGES_MISSING_PRIORITY)
        self.gaps.append(Gap(bed_id, first, end, total))

    def _clear_missing(self, bed_id: str, wall_time: float) -> None:
        """Inside a transaction: the bed started a new session (its record there starts complete)."""
        cur = self.db.execute("delete from active_alarms where bed_id = ? and alarm = ?", [bed_id, MESSAGES_MISSING])
        if cur.rowcount:
            self._log_central(bed_id, "cleared", "active", f"Bed {bed_id} started a new session", wall_time,
                              MESSAGES_MISSING, MESSAGES_MISSING_PRIORITY)

    # -- the one write path for reports ------------------------------------------------------------

    def commit(self, batch: list[Received]) -> list[bool]:
        """Store a batch in one transaction; per message True when new, False for a duplicate control id.
        The gaps in the beds' MSH-13 sequences this batch revealed are in :attr:`gaps` until the next call."""
        out = []
        self.gaps = []
        try:
            with self.transaction():
                for item in batch:
                    out.append(self._store(item))
        except sqlite3.Error as exc:
            self.gaps = []
            raise CentralStoreError(f"{self.path}: write failed: {exc}") from exc
        return out

    def _store(self, item: Received) -> bool:
        env, r = item.envelope, item.envelope.report
        if self.db.execute("select 1 from messages where control_id = ?", [env.control_id]).fetchone():
            self._seen(r.bed_id, None, item.received_wall)
            return False
        kind = "alarm" if isinstance(r, AlarmReport) else "observation"
        self.db["messages"].insert(dict(control_id=env.control_id, bed_id=r.bed_id, bed_seq=env.bed_seq, kind=kind,
                                        received_wall=item.received_wall, peer=item.peer))
        bed = self.db.execute("select session_id, last_bed_seq from beds where bed_id = ?", [r.bed_id]).fetchone()
        current_session = bed[0] if bed else None
        if current_session is None or r.session_id > current_session:  # the bed started a new session
            self.db.execute("delete from active_alarms where bed_id = ? and source = 'bed'", [r.bed_id])
            self._clear_missing(r.bed_id, item.received_wall)
            self.db.execute("update beds set session_id = ?, window_index = null, session_missing = 0 where bed_id = ?",
                            [r.session_id, r.bed_id])
            current_session = r.session_id
        self._check_sequence(r.bed_id, env.bed_seq, bed[1] if bed else None, item.received_wall)
        if isinstance(r, AlarmReport):
            self._store_alarm(env, r, item.received_wall, current_session)
        else:
            self._store_observation(env, r, item.received_wall, current_session)
        self._seen(r.bed_id, env.bed_seq, item.received_wall)
        return True

    def _seen(self, bed_id: str, bed_seq: int | None, wall_time: float) -> None:
        """The bed spoke; ``bed_seq``: the MSH-13 of a new message (None for a duplicate)."""
        self.db.execute("update beds set last_seen_wall = ?, last_bed_seq = coalesce(?, last_bed_seq) "
                        "where bed_id = ?", [wall_time, bed_seq, bed_id])
        self._clear_silent(bed_id, wall_time)

    def _store_alarm(self, env: Envelope, r: AlarmReport, received: float, current_session: int) -> None:
        self.db["alarm_transitions"].insert(dict(
            control_id=env.control_id, bed_id=r.bed_id, session_id=r.session_id, seq=r.seq, bed_seq=env.bed_seq,
            alarm=r.alarm, kind=r.kind, priority=r.priority, state=r.state, previous=r.previous, cause=r.cause,
            message=r.text, t_s=r.t_s, wall_time=r.wall_time, utc=utc(r.wall_time), score=r.score,
            threshold=r.threshold, received_wall=received))
        if r.session_id != current_session:  # a late report of an older session: history only
            return
        old = self.db.execute("select seq, raised_wall from active_alarms where bed_id = ? and alarm = ?",
                              [r.bed_id, r.alarm]).fetchone()
        if old is not None and old[0] is not None and old[0] > r.seq:
            return  # a newer transition of this alarm is already applied
        if r.state == "cleared":
            self.db.execute("delete from active_alarms where bed_id = ? and alarm = ?", [r.bed_id, r.alarm])
            return
        raised = old[1] if old is not None and r.previous is not None else r.wall_time
        self.db["active_alarms"].upsert(dict(
            bed_id=r.bed_id, alarm=r.alarm, source="bed", session_id=r.session_id, seq=r.seq, kind=r.kind,
            priority=r.priority, state=r.state, message=r.text, raised_wall=raised, wall_time=r.wall_time),
            pk=("bed_id", "alarm"))

    def _store_observation(self, env: Envelope, r: ObservationReport, received: float, current_session: int) -> None:
        risks, thresholds, validated = _json(r.risks), _json(r.thresholds), json.dumps(r.validated, sort_keys=True)
        self.db["observations"].insert(dict(
            control_id=env.control_id, bed_id=r.bed_id, session_id=r.session_id, window_index=r.window_index,
            bed_seq=env.bed_seq, t_s=r.t_s, wall_time=r.wall_time, scored=int(r.scored), reason=r.reason,
            hr_bpm=r.hr_bpm, sqi_min=r.sqi_min, risks=risks, thresholds=thresholds, validated=validated,
            received_wall=received))
        last = self.db.execute("select window_index from beds where bed_id = ?", [r.bed_id]).fetchone()
        if r.session_id == current_session and (last is None or last[0] is None or r.window_index > last[0]):
            self.db.execute(
                "update beds set window_index = ?, obs_wall = ?, scored = ?, reason = ?, hr_bpm = ?, sqi_min = ?, "
                "risks = ?, thresholds = ?, validated = ? where bed_id = ?",
                [r.window_index, r.wall_time, int(r.scored), r.reason, r.hr_bpm, r.sqi_min, risks, thresholds,
                 validated, r.bed_id])

    def reject(self, peer: str, reason: str, text: str, bed_id: str | None = None, control_id: str | None = None,
               wall_time: float | None = None) -> None:
        """Log a refused message (the server answers it with AR)."""
        wall_time = time.time() if wall_time is None else wall_time
        with self.transaction():
            self.db["rejects"].insert(dict(received_wall=wall_time, utc=utc(wall_time), peer=peer, bed_id=bed_id,
                                           control_id=control_id, reason=reason,
                                           excerpt=text[:REJECT_EXCERPT].replace("\r", "\n")))


def connect_readonly(path: str | os.PathLike[str]) -> sqlite3.Connection:
    """A read-only connection to a central.db (the overview, exports); rows as sqlite3.Row."""
    p = Path(path)
    if not p.is_file():
        raise CentralStoreError(f"{p}: no such central database. Give the --db that `bedside central` writes.")
    conn = sqlite3.connect(readonly_uri(p), uri=True, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    return conn
