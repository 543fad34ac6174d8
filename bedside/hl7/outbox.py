"""The HL7 outbox: messages waiting for the central station, in the bed's SQLite log.

:class:`Outbox` is the hook :class:`bedside.store.Store` calls inside :meth:`Store.commit`, so a
message is written in the SAME transaction as the alarm transition or window it reports (both or
neither). The row id is the message's MSH-13 sequence number (AUTOINCREMENT: never reused, so the
per-bed order survives deletions and restarts); MSH-10 is a fresh UUID kept in the row, so a message
sent again after a crash carries the same control ID and the central can drop the duplicate.

The backlog is bounded (:attr:`OutboxSettings.max_messages` per bed): past it the OLDEST observation
messages are dropped and counted in ``hl7_outbox_state``; alarm transitions are never dropped (the
bound is exceeded rather than lose one).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

from sqlite_utils import Database

from bedside.events import AlarmChange, WindowResult
from bedside.hl7.messages import build, new_control_id
from bedside.hl7.model import AlarmReport, Envelope, ObservationReport
from bedside.hl7.schema import STATE_TABLE, TABLE
from bedside.hl7.settings import OutboxSettings

log = logging.getLogger(__name__)


def _finite(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None


def alarm_report(bed_id: str, session_id: int, c: AlarmChange) -> AlarmReport:
    return AlarmReport(bed_id=bed_id, session_id=session_id, seq=c.seq, alarm=c.alarm, kind=c.kind.value,
                       priority=c.priority.value, state=c.state.value,
                       previous=c.previous.value if c.previous else None, cause=c.cause, text=c.message,
                       t_s=c.t_s, wall_time=c.wall_time, score=_finite(c.score), threshold=_finite(c.threshold))


def observation_report(bed_id: str, session_id: int, w: WindowResult, wall_time: float,
                       thresholds: Mapping[str, float], validated: Mapping[str, bool]) -> ObservationReport:
    labels = sorted(set(thresholds) | set(w.smoothed))
    quality = [q for q in w.quality.values() if math.isfinite(q)]
    return ObservationReport(
        bed_id=bed_id, session_id=session_id, window_index=w.index, t_s=w.t_s, wall_time=wall_time,
        scored=w.scored, reason=w.reason, hr_bpm=_finite(w.hr_bpm), sqi_min=min(quality) if quality else None,
        risks={k: _finite(w.smoothed.get(k)) for k in labels}, thresholds=dict(thresholds),
        validated={k: bool(validated.get(k, False)) for k in labels})


class Outbox:
    """Writes one message per window and per alarm transition, inside the store's transaction."""

    def __init__(self, *, thresholds: Mapping[str, float] | None = None, validated: Mapping[str, bool] | None = None,
                 settings: OutboxSettings = OutboxSettings()):
        self.thresholds = dict(thresholds or {})
        self.validated = dict(validated or {})
        self.settings = settings
        self._beds: dict[int, str] = {}
        self.on_close: list[Any] = []  # callables run by close() (the sender's stop)

    @classmethod
    def for_bundle(cls, bundle: Any, settings: OutboxSettings = OutboxSettings()) -> Outbox:
        """Thresholds and validated labels from a model bundle (None: no risk observations)."""
        if bundle is None:
            return cls(settings=settings)
        validated = set(bundle.validated_labels)
        return cls(thresholds=bundle.thresholds, validated={k: k in validated for k in bundle.labels},
                   settings=settings)

    def _bed(self, db: Database, session_id: int) -> str:
        if session_id not in self._beds:
            row = db.execute("select bed_id from sessions where id = ?", [session_id]).fetchone()
            if row is None:
                raise ValueError(f"no session {session_id} in the log")
            self._beds[session_id] = row[0]
        return self._beds[session_id]

    def write(self, db: Database, session_id: int, windows: list[WindowResult], wall_time: float,
              changes: list[tuple[int, AlarmChange]]) -> None:
        """Called by Store.commit inside its transaction: observations first, then transitions."""
        if not windows and not changes:
            return
        bed = self._bed(db, session_id)
        reports: list[tuple[str, int, AlarmReport | ObservationReport]] = [
            ("observation", w.index, observation_report(bed, session_id, w, wall_time, self.thresholds, self.validated))
            for w in windows]
        reports += [("alarm", c.seq, alarm_report(bed, session_id, c)) for _, c in changes]
        next_id = int(db.execute(
            f"select max(coalesce((select seq from sqlite_sequence where name = '{TABLE}'), 0), "
            f"coalesce((select max(id) from [{TABLE}]), 0))").fetchone()[0]) + 1
        rows, errors = [], 0
        for kind, ref, report in reports:
            env = Envelope(control_id=new_control_id(), bed_seq=next_id, report=report)
            try:
                text = build(env)
            except Exception:  # a bug in encoding must never cost the bedside log its transaction
                errors += 1
                log.exception("HL7: could not encode %s %s of session %d; not sent", kind, ref, session_id)
                continue
            rows.append((next_id, bed, kind, session_id, ref, env.control_id, wall_time, text))
            next_id += 1
        db.conn.executemany(
            f"insert into [{TABLE}] (id, bed_id, kind, session_id, ref, control_id, created_wall, message) "
            "values (?, ?, ?, ?, ?, ?, ?, ?)", rows)
        dropped = self._enforce_bound(db, bed)
        if dropped or errors:
            db.execute(f"insert into [{STATE_TABLE}] (bed_id) values (?) on conflict(bed_id) do nothing", [bed])
            db.execute(f"update [{STATE_TABLE}] set dropped_observations = dropped_observations + ?, "
                       "build_errors = build_errors + ?, last_drop_wall = coalesce(?, last_drop_wall) where bed_id = ?",
                       [dropped, errors, wall_time if dropped else None, bed])

    def _enforce_bound(self, db: Database, bed: str) -> int:
        count = int(db.execute(f"select count(*) from [{TABLE}] where bed_id = ?", [bed]).fetchone()[0])
        over = count - self.settings.max_messages
        dropped = 0
        if over > 0:
            cur = db.execute(
                f"delete from [{TABLE}] where id in (select id from [{TABLE}] where bed_id = ? and kind = 'observation' "
                "order by id limit ?)", [bed, over])
            dropped = max(cur.rowcount, 0)
            if dropped < over:
                log.warning("HL7 outbox of bed %s holds %d messages, over its bound of %d: alarm transitions "
                            "are never dropped", bed, count - dropped, self.settings.max_messages)
            if dropped:
                log.warning("HL7 outbox of bed %s full (%d): dropped the %d oldest observation messages",
                            bed, self.settings.max_messages, dropped)
        return dropped

    def close(self) -> None:
        """Run the close hooks (the sender stops, after draining when it was asked to)."""
        hooks, self.on_close = self.on_close, []
        for fn in hooks:
            fn()


def outbox_stats(db: Database, bed_id: str) -> dict[str, Any]:
    """Waiting messages (by kind), delivered, dropped observations and encoding errors of one bed."""
    waiting = dict(db.execute(f"select kind, count(*) from [{TABLE}] where bed_id = ? group by kind", [bed_id]).fetchall())
    row = db.execute(f"select delivered, dropped_observations, build_errors from [{STATE_TABLE}] where bed_id = ?",
                     [bed_id]).fetchone()
    delivered, dropped, errors = row if row else (0, 0, 0)
    return {"waiting_alarms": waiting.get("alarm", 0), "waiting_observations": waiting.get("observation", 0),
            "delivered": delivered, "dropped_observations": dropped, "build_errors": errors}
