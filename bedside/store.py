"""The durable log: sessions, alarm transitions, analysed windows and technical events in SQLite.

Built on sqlite-utils: the schema comes from :data:`MIGRATIONS` (recorded in the
``_sqlite_migrations`` table, so a newer engine upgrades an older file in place), WAL journal with
``synchronous=FULL`` (a committed transaction survives a kill -9 and a power cut), and everything one
engine iteration produced is written by :meth:`Store.commit` in ONE transaction, before the engine
announces any of it. The file is created with mode 0600 (the WAL and shared-memory files inherit it).

No patient identifiers are stored: a session names a bed (and optionally an encounter ID); a
replayed record is named by its file name only. The tables are plain, with JSON text columns, so the
file opens unchanged in Datasette.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import stat
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

from sqlite_utils import Database, Migrations

from bedside.errors import BedsideWarning, StoreError
# the read-only queries live in bedside.log_query (plain sqlite3: `bedside alerts` never imports sqlite-utils)
from bedside.log_query import query_transitions, readonly_uri  # noqa: F401 (re-exported)
from bedside.log_query import sqlite_uri as _uri
from bedside.events import AlarmChange, AlarmKind, AlarmState, Priority, WindowResult

MIGRATIONS = Migrations("bedside")

#: Seconds a writer (opening or creating the log included) waits for another one before it fails.
BUSY_TIMEOUT_S = 10.0
#: The first 16 bytes of every SQLite 3 database file.
SQLITE_MAGIC = b"SQLite format 3\x00"
#: Tables that make an SQLite file a bedside log (another application's database has other tables).
BEDSIDE_TABLES = frozenset({"sessions", "alarm_transitions", "windows", "technical_events"})


@MIGRATIONS()
def m001_initial(db: Database) -> None:
    """Sessions, alarm transitions, windows, technical events."""
    db["sessions"].create({
        "id": int, "bed_id": str, "encounter_id": str, "source_kind": str, "device": str, "fs_hz": float,
        "bundle_sha256": str, "bundle_version": str, "provider": str, "hop_s": float, "config_sha256": str,
        "resume_key": str, "engine_version": str, "started_wall": float, "started_utc": str,
        "ended_wall": float, "ended_utc": str, "end_reason": str,
    }, pk="id", not_null={"bed_id", "source_kind", "started_wall"})
    db["sessions"].create_index(["resume_key"])
    db["alarm_transitions"].create({
        "id": int, "session_id": int, "seq": int, "window_index": int, "t_s": float, "wall_time": float,
        "utc": str, "alarm": str, "kind": str, "priority": str, "state": str, "previous": str, "cause": str,
        "score": float, "threshold": float, "who": str, "message": str, "audio_paused_until_s": float,
    }, pk="id", foreign_keys=[("session_id", "sessions", "id")],
        not_null={"session_id", "seq", "t_s", "alarm", "kind", "priority", "state"})
    db["alarm_transitions"].create_index(["session_id", "seq"], unique=True)
    db["alarm_transitions"].create_index(["wall_time"])
    db["windows"].create({
        "id": int, "session_id": int, "idx": int, "t_s": float, "wall_time": float, "scored": int,
        "reason": str, "detail": str, "scores": str, "smoothed": str, "hr_bpm": float, "quality_min": float,
        "quality": str, "lead_off": str,
    }, pk="id", foreign_keys=[("session_id", "sessions", "id")], not_null={"session_id", "idx", "t_s"})
    db["windows"].create_index(["session_id", "idx"], unique=True)
    db["technical_events"].create({
        "id": int, "session_id": int, "seq": int, "t_s": float, "wall_time": float, "utc": str, "kind": str,
        "sample_index": int, "length": int, "detail": str,
    }, pk="id", foreign_keys=[("session_id", "sessions", "id")], not_null={"session_id", "seq", "kind"})
    db["technical_events"].create_index(["session_id", "seq"], unique=True)


@MIGRATIONS()
def m002_hl7_outbox(db: Database) -> None:
    """HL7 messages waiting for the central station (bedside/hl7/outbox.py, docs/hl7.md)."""
    from bedside.hl7.schema import create_tables

    create_tables(db)


@MIGRATIONS()
def m003_conditions_and_carry_over(db: Database) -> None:
    """Each window's technical conditions (JSON), and the session an alarm was carried over from."""
    db["windows"].add_column("conditions", str)
    db["alarm_transitions"].add_column("carried_over_from", int)


class OutboxWriter(Protocol):
    """What Store.commit calls inside its transaction (bedside.hl7.outbox.Outbox)."""

    def write(self, db: Database, session_id: int, windows: list[WindowResult], wall_time: float,
              changes: list[tuple[int, AlarmChange]]) -> None: ...

    def close(self) -> None: ...


@contextlib.contextmanager
def write_transaction(db: Database) -> Iterator[None]:
    """One write transaction that takes the write lock first (BEGIN IMMEDIATE), so it waits for another
    writer (busy_timeout) instead of failing at once when its read snapshot went stale; rolled back on
    any exception. Used by the bed's log and by central.db."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        if db.conn.in_transaction:
            db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


@dataclass(frozen=True)
class TechnicalEvent:
    """Something about the equipment worth keeping (device gaps, resyncs, reconnects, engine events)."""

    t_s: float
    wall_time: float
    kind: str
    detail: str = ""
    sample_index: int | None = None
    length: int | None = None


def _conditions_fields(text: str | None) -> dict[str, Any]:
    """WindowResult's conditions, unknown and gap_s from the ``conditions`` column (none: an older log)."""
    if not text:
        return {}
    d = json.loads(text)
    return {"conditions": d["present"], "unknown": tuple(d["unknown"]), "gap_s": d["gap_s"]}


def utc(wall_time: float) -> str:
    return datetime.fromtimestamp(wall_time, timezone.utc).isoformat(timespec="milliseconds")


def _json(d: dict[str, Any], digits: int = 4) -> str:
    return json.dumps({k: (round(v, digits) if isinstance(v, float) else v) for k, v in d.items()})


def create_private_file(path: Path) -> None:
    """Create ``path`` with mode 0600 if it does not exist; tighten an existing file that is wider."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)
        return
    except FileExistsError:
        pass
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        warnings.warn(f"{path}: database was readable by others (mode {mode:o}); set to 0600", BedsideWarning,
                      stacklevel=3)
        os.chmod(path, 0o600)


def sqlite_table_names(path: Path) -> set[str]:
    """The table names of the SQLite file ``path``, read through an ``immutable`` connection (no lock, no
    -wal/-shm file); raises :class:`sqlite3.Error` when it cannot be read."""
    conn = sqlite3.connect(_uri(path, mode="ro", immutable="1"), uri=True)
    try:
        return {r[0] for r in conn.execute("select name from sqlite_master where type = 'table'")}
    finally:
        conn.close()


def existing_sqlite_tables(path: Path, kind: str, fix: str, error: type[Exception]) -> set[str] | None:
    """The table names of the SQLite file ``path`` (a ``kind``: "alarm log", "central.db"), or None when it
    does not exist yet or is empty. Raises ``error`` naming the path and ``fix``, having changed nothing, for
    anything else: a directory, device or FIFO, a file that is not SQLite or cannot be read. Reads the 16-byte
    header and the schema through an ``immutable`` connection (no lock, no -wal/-shm file)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise error(f"{path}: cannot check the {kind}: {exc}. {fix}") from exc
    if not stat.S_ISREG(st.st_mode):
        what = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file (a device, FIFO or socket)"
        raise error(f"{path}: is {what}, not a {kind}; nothing was changed. {fix}")
    if st.st_size == 0:
        return None
    try:
        with open(path, "rb") as f:
            head = f.read(len(SQLITE_MAGIC))
    except OSError as exc:
        raise error(f"{path}: cannot read the {kind}: {exc}. {fix}") from exc
    if head != SQLITE_MAGIC:
        raise error(f"{path}: is not an SQLite database (another kind of file); nothing was changed. {fix}")
    try:
        return sqlite_table_names(path)
    except sqlite3.Error as exc:
        raise error(f"{path}: is not a readable SQLite database ({exc}); nothing was changed. {fix}") from exc


def check_log_path(path: Path) -> bool:
    """True if ``path`` is a bedside log, False if it does not exist yet (or is an empty file).

    Raises :class:`StoreError`, having changed nothing, for anything else: a directory, device or FIFO,
    a file that is not SQLite, or another application's SQLite database (:func:`existing_sqlite_tables`).
    """
    fix = "Pass --db a new file name or a log that `bedside replay` or `bedside monitor` wrote."
    tables = existing_sqlite_tables(path, "alarm log", fix, StoreError)
    if not tables:
        return False
    if not BEDSIDE_TABLES <= tables:
        shown = ", ".join(sorted(tables)[:5]) + (", ..." if len(tables) > 5 else "")
        raise StoreError(f"{path}: is another application's SQLite database (tables {shown}), not a bedside "
                         f"alarm log; nothing was changed. {fix}")
    return True


class Store:
    """One SQLite log file; every write goes through :meth:`commit` (one transaction).

    ``outbox`` (bedside.hl7.outbox.Outbox, with ``--hl7``): writes the HL7 messages reporting a commit's
    windows and transitions in that same transaction; :meth:`close` closes it too (stops its sender).
    """

    def __init__(self, path: str | os.PathLike[str], outbox: OutboxWriter | None = None):
        self.outbox = outbox
        if not os.fspath(path):
            raise StoreError("--db is empty: give the alarm log's file name (for example bedside.db).")
        self.path = Path(path)
        existing = check_log_path(self.path)  # raises StoreError before anything is changed
        try:
            if not existing:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            create_private_file(self.path)
            conn = sqlite3.connect(str(self.path), check_same_thread=False, timeout=BUSY_TIMEOUT_S)
            self.db = Database(conn)
            self.db.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            self._initialise()
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"{self.path}: cannot open the alarm log: {exc}. Check that the folder exists, "
                             "is writable by this user and the disk is not full; or pass another --db.") from exc

    def _initialise(self) -> None:
        """WAL, FULL sync, the schema: waits for another process creating the same log (busy_timeout)."""
        deadline = time.monotonic() + BUSY_TIMEOUT_S
        while True:
            try:
                self.db.enable_wal()
                self.db.execute("PRAGMA synchronous = FULL")
                self.db.execute("PRAGMA foreign_keys = ON")
                with self.transaction():  # one process at a time decides which migrations are pending
                    MIGRATIONS.apply(self.db)
                return
            except sqlite3.OperationalError as exc:  # "database is locked" when the busy handler is bypassed
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def transaction(self) -> contextlib.AbstractContextManager[None]:
        """One write transaction (:func:`write_transaction`)."""
        return write_transaction(self.db)

    def close(self) -> None:
        if self.outbox is not None:
            self.outbox.close()
        self.db.close()

    # -- sessions ----------------------------------------------------------------------------------

    def open_session(self, *, bed_id: str, source_kind: str, device: str, fs_hz: float | None,
                     bundle_sha256: str | None, bundle_version: str | None, provider: str | None, hop_s: float,
                     config_sha256: str, resume_key: str | None, engine_version: str,
                     encounter_id: str | None = None, wall_time: float) -> int:
        row = dict(bed_id=bed_id, encounter_id=encounter_id, source_kind=source_kind, device=device, fs_hz=fs_hz,
                   bundle_sha256=bundle_sha256, bundle_version=bundle_version, provider=provider, hop_s=hop_s,
                   config_sha256=config_sha256, resume_key=resume_key, engine_version=engine_version,
                   started_wall=wall_time, started_utc=utc(wall_time))
        with self.transaction():
            return int(self.db["sessions"].insert(row).last_pk)

    def end_session(self, session_id: int, reason: str, wall_time: float) -> None:
        with self.transaction():
            self.db["sessions"].update(session_id, {"ended_wall": wall_time, "ended_utc": utc(wall_time),
                                                    "end_reason": reason})

    def latest_session(self, resume_key: str) -> dict[str, Any] | None:
        """The newest session with this resume key (a replay of the same record and settings), if any."""
        rows = list(self.db["sessions"].rows_where("resume_key = ?", [resume_key], order_by="id desc", limit=1))
        return rows[0] if rows else None

    def close_interrupted(self, bed_id: str, wall_time: float, keep: int | None = None) -> list[int]:
        """Mark unfinished sessions of this bed (the process died) as ended 'interrupted'; their ids."""
        ids = [r["id"] for r in self.db["sessions"].rows_where("bed_id = ? and ended_wall is null", [bed_id])
               if r["id"] != keep]
        for session_id in ids:
            last = self.db.execute("select max(wall_time) from windows where session_id = ?", [session_id]).fetchone()[0]
            self.end_session(session_id, "interrupted", last or wall_time)
        return ids

    # -- what a session wrote --------------------------------------------------------------------

    def windows(self, session_id: int) -> list[WindowResult]:
        """The committed windows of a session, in order, as the engine analysed them."""
        out = []
        for r in self.db["windows"].rows_where("session_id = ?", [session_id], order_by="idx"):
            out.append(WindowResult(
                t_s=r["t_s"], index=r["idx"], scored=bool(r["scored"]), reason=r["reason"] or "",
                scores=json.loads(r["scores"] or "{}"), smoothed=json.loads(r["smoothed"] or "{}"),
                hr_bpm=r["hr_bpm"], quality=json.loads(r["quality"] or "{}"),
                lead_off=json.loads(r["lead_off"] or "{}"), detail=r["detail"] or "",
                **_conditions_fields(r.get("conditions"))))
        return out

    def transitions(self, session_id: int) -> list[tuple[int, AlarmChange]]:
        """(window index, change) of every committed transition of a session, in order."""
        out = []
        for r in self.db["alarm_transitions"].rows_where("session_id = ?", [session_id], order_by="seq"):
            out.append((r["window_index"], AlarmChange(
                t_s=r["t_s"], wall_time=r["wall_time"], alarm=r["alarm"], kind=AlarmKind(r["kind"]),
                priority=Priority(r["priority"]), state=AlarmState(r["state"]),
                previous=AlarmState(r["previous"]) if r["previous"] else None, message=r["message"] or "",
                score=r["score"], threshold=r["threshold"], who=r["who"],
                audio_paused_until_s=r["audio_paused_until_s"], cause=r["cause"], seq=r["seq"],
                carried_over_from=r.get("carried_over_from"))))
        return out

    def carry_over_candidates(self, bed_id: str, before_session_id: int, since_wall: float
                              ) -> tuple[int, list[AlarmChange]] | None:
        """The bed's previous session if it was active at or after ``since_wall`` (unix s), with the
        last transition of each of its alarms that was not cleared (an engine restart carries some over)."""
        row = self.db.execute(
            "select s.id, max(coalesce(s.ended_wall, 0), s.started_wall, "
            "coalesce((select max(wall_time) from windows where session_id = s.id), 0), "
            "coalesce((select max(wall_time) from alarm_transitions where session_id = s.id), 0)) "
            "from sessions s where s.bed_id = ? and s.id < ? order by s.id desc limit 1",
            [bed_id, before_session_id]).fetchone()
        if row is None or row[1] < since_wall:
            return None
        latest: dict[str, AlarmChange] = {}
        for _, change in self.transitions(row[0]):
            latest[change.alarm] = change
        return row[0], [c for c in latest.values() if c.state != AlarmState.CLEARED]

    def max_seq(self, table: str, session_id: int) -> int:
        return int(self.db.execute(f"select coalesce(max(seq), 0) from [{table}] where session_id = ?",
                                   [session_id]).fetchone()[0])

    # -- the one write path ----------------------------------------------------------------------

    def commit(self, session_id: int, windows: list[WindowResult], wall_time: float,
               changes: list[tuple[int, AlarmChange]], events: list[tuple[int, TechnicalEvent]]) -> None:
        """Write windows, (window index, transition) pairs and (seq, event) pairs in one transaction."""
        win_rows = [{
            "session_id": session_id, "idx": w.index, "t_s": w.t_s, "wall_time": wall_time, "scored": int(w.scored),
            "reason": w.reason, "detail": w.detail, "scores": _json(w.scores), "smoothed": _json(w.smoothed),
            "hr_bpm": None if w.hr_bpm is None else round(w.hr_bpm, 2),
            "quality_min": round(min(w.quality.values()), 4) if w.quality else None,
            "quality": _json(w.quality, 3), "lead_off": json.dumps(w.lead_off),
            "conditions": None if w.conditions is None else json.dumps(
                {"present": w.conditions, "unknown": list(w.unknown), "gap_s": w.gap_s}),
        } for w in windows]
        change_rows = [{
            "session_id": session_id, "seq": c.seq, "window_index": idx, "t_s": c.t_s, "wall_time": c.wall_time,
            "utc": utc(c.wall_time), "alarm": c.alarm, "kind": c.kind.value, "priority": c.priority.value,
            "state": c.state.value, "previous": c.previous.value if c.previous else None, "cause": c.cause,
            "score": c.score, "threshold": c.threshold, "who": c.who, "message": c.message,
            "audio_paused_until_s": c.audio_paused_until_s, "carried_over_from": c.carried_over_from,
        } for idx, c in changes]
        event_rows = [{
            "session_id": session_id, "seq": seq, "t_s": e.t_s, "wall_time": e.wall_time, "utc": utc(e.wall_time),
            "kind": e.kind, "sample_index": e.sample_index, "length": e.length, "detail": e.detail,
        } for seq, e in events]
        try:
            with self.transaction():
                if win_rows:
                    self.db["windows"].insert_all(win_rows)
                if change_rows:
                    self.db["alarm_transitions"].insert_all(change_rows)
                if event_rows:
                    self.db["technical_events"].insert_all(event_rows)
                if self.outbox is not None:
                    self.outbox.write(self.db, session_id, windows, wall_time, changes)
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: write failed: {exc}") from exc
