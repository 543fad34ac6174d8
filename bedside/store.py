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

import json
import os
import sqlite3
import stat
import warnings
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sqlite_utils import Database, Migrations

from bedside.errors import BedsideError, BedsideWarning
from bedside.events import AlarmChange, AlarmKind, AlarmState, Priority, WindowResult

MIGRATIONS = Migrations("bedside")


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


class StoreError(BedsideError):
    """The database cannot be opened or written."""


@dataclass(frozen=True)
class TechnicalEvent:
    """Something about the equipment worth keeping (device gaps, resyncs, reconnects, engine events)."""

    t_s: float
    wall_time: float
    kind: str
    detail: str = ""
    sample_index: int | None = None
    length: int | None = None


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


class Store:
    """One SQLite log file; every write goes through :meth:`commit` (one transaction)."""

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            create_private_file(self.path)
            conn = sqlite3.connect(str(self.path), check_same_thread=False, timeout=10.0)
            self.db = Database(conn)
            self.db.execute("PRAGMA busy_timeout = 10000")
            self.db.enable_wal()
            self.db.execute("PRAGMA synchronous = FULL")
            self.db.execute("PRAGMA foreign_keys = ON")
            MIGRATIONS.apply(self.db)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"{self.path}: cannot open the alarm log: {exc}. Check that the folder exists, "
                             "is writable by this user and the disk is not full; or pass another --db.") from exc

    def close(self) -> None:
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
        with self.db.atomic():
            return int(self.db["sessions"].insert(row).last_pk)

    def end_session(self, session_id: int, reason: str, wall_time: float) -> None:
        with self.db.atomic():
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
                lead_off=json.loads(r["lead_off"] or "{}"), detail=r["detail"] or ""))
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
                audio_paused_until_s=r["audio_paused_until_s"], cause=r["cause"], seq=r["seq"])))
        return out

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
        } for w in windows]
        change_rows = [{
            "session_id": session_id, "seq": c.seq, "window_index": idx, "t_s": c.t_s, "wall_time": c.wall_time,
            "utc": utc(c.wall_time), "alarm": c.alarm, "kind": c.kind.value, "priority": c.priority.value,
            "state": c.state.value, "previous": c.previous.value if c.previous else None, "cause": c.cause,
            "score": c.score, "threshold": c.threshold, "who": c.who, "message": c.message,
            "audio_paused_until_s": c.audio_paused_until_s,
        } for idx, c in changes]
        event_rows = [{
            "session_id": session_id, "seq": seq, "t_s": e.t_s, "wall_time": e.wall_time, "utc": utc(e.wall_time),
            "kind": e.kind, "sample_index": e.sample_index, "length": e.length, "detail": e.detail,
        } for seq, e in events]
        try:
            with self.db.atomic():
                if win_rows:
                    self.db["windows"].insert_all(win_rows)
                if change_rows:
                    self.db["alarm_transitions"].insert_all(change_rows)
                if event_rows:
                    self.db["technical_events"].insert_all(event_rows)
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: write failed: {exc}") from exc


def query_transitions(db_path: str | os.PathLike[str], since_wall: float | None = None,
                      session_id: int | None = None, bed_id: str | None = None) -> list[dict[str, Any]]:
    """Alarm transitions with their bed, oldest first, for review and export (read-only)."""
    path = Path(db_path)
    if not path.is_file():
        raise StoreError(f"{path}: no such alarm log. Give the --db file that `bedside replay` or "
                         "`bedside monitor` wrote.")
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        where, args = ["1"], []
        if since_wall is not None:
            where.append("t.wall_time >= ?")
            args.append(since_wall)
        if session_id is not None:
            where.append("t.session_id = ?")
            args.append(session_id)
        if bed_id is not None:
            where.append("s.bed_id = ?")
            args.append(bed_id)
        conn.row_factory = sqlite3.Row
        rows = conn.execute(
            "select t.utc, s.bed_id, t.session_id, t.seq, t.t_s, t.alarm, t.kind, t.priority, t.state, "
            "t.previous, t.cause, t.score, t.threshold, t.who, t.message from alarm_transitions t "
            f"join sessions s on s.id = t.session_id where {' and '.join(where)} "
            "order by t.wall_time, t.session_id, t.seq", args).fetchall()
    except sqlite3.Error as exc:
        raise StoreError(f"{path}: not a bedside alarm log ({exc})") from exc
    finally:
        conn.close()
    return [dict(r) for r in rows]
