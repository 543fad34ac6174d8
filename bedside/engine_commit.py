"""The engine's commit path: what one loop iteration produced is committed to the log in ONE
transaction, and only then announced to listeners; a log that cannot be written keeps a bounded
backlog in memory (windows) or an unbounded one (transitions: never dropped) until it can.

:class:`CommitMixin` is part of :class:`bedside.engine.Engine` (it uses the engine's store, alarm
system and listeners); it lives here so that each module holds one concern.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from typing import Any

from bedside.events import AlarmChange, AlarmState, Status, WindowResult
from bedside.store import StoreError, TechnicalEvent

log = logging.getLogger("bedside.engine")

#: Windows kept in memory when the database fails, before the oldest are dropped (and counted).
BACKLOG_WINDOWS = 20_000


@dataclass
class Pending:
    """What one iteration produced, not yet committed."""

    windows: list[WindowResult] = field(default_factory=list)
    changes: list[tuple[int, AlarmChange]] = field(default_factory=list)  # (window index, change)
    events: list[tuple[int, TechnicalEvent]] = field(default_factory=list)  # (seq, event)

    def __bool__(self) -> bool:
        return bool(self.windows or self.changes or self.events)


class CommitMixin:
    """Sequence numbers, the one commit per iteration, announcing, the active-alarm list."""

    def _changes(self, pending: Pending, window_index: int, changes: list[AlarmChange]) -> None:
        for c in changes:
            self._seq["alarm_transitions"] += 1
            pending.changes.append((window_index, replace(c, seq=self._seq["alarm_transitions"])))

    def _event(self, pending: Pending, event: TechnicalEvent) -> None:
        self._seq["technical_events"] += 1
        pending.events.append((self._seq["technical_events"], event))
        self.summary.technical_events[event.kind] += 1

    def _flush(self, pending: Pending) -> None:
        """Commit the backlog and this iteration in one transaction, then announce them."""
        if not pending and not self._backlog:
            return
        wall = self.clock()
        pending.changes = [(i, replace(c, wall_time=wall)) for i, c in pending.changes]
        batch = Pending(self._backlog.windows + pending.windows, self._backlog.changes + pending.changes,
                         self._backlog.events + pending.events)
        t = time.perf_counter()
        try:
            assert self.session_id is not None
            self.store.commit(self.session_id, batch.windows, wall, batch.changes, batch.events)
            self._backlog = Pending()
            failed = None
        except StoreError as exc:
            self.summary.storage_failures += 1
            failed = str(exc)
            self._backlog = batch
            if len(batch.windows) > BACKLOG_WINDOWS:
                drop = len(batch.windows) - BACKLOG_WINDOWS
                self.summary.dropped_windows += drop
                del batch.windows[:drop]
                log.error("alarm log unwritable: %d analysed windows dropped from memory", drop)
        self.timings.logging += time.perf_counter() - t
        if (failed is not None) != self.alarms.is_present("storage_failing"):
            extra = Pending()
            self._changes(extra, self._last_window(),
                          self.alarms.set_condition("storage_failing", failed is not None, self._now_s(), failed or ""))
            extra.changes = [(i, replace(c, wall_time=wall)) for i, c in extra.changes]
            if failed is None:  # recovered: log the all-clear too before announcing it
                try:
                    self.store.commit(self.session_id, [], wall, extra.changes, [])
                except StoreError:
                    self._backlog.changes += extra.changes
            else:
                self._backlog.changes += extra.changes
            pending.changes += extra.changes
            self._db_state = "ok" if failed is None else f"failing: {failed}"
            self._publish(self._status())
        t = time.perf_counter()
        for w in pending.windows:
            self._publish(w)
        for _, c in pending.changes:
            self._note_active(c)
            self.summary.transitions.append(c)
            self._publish(c)
        self.timings.publish += time.perf_counter() - t

    def _note_active(self, c: AlarmChange) -> None:
        with self._lock:
            if c.state == AlarmState.CLEARED:
                self._active.pop(c.alarm, None)
            else:
                self._active[c.alarm] = c

    def _status(self) -> Status:
        return Status(bed_id=self.settings.bed_id, device=self.source.description, link=self._link,
                      frames_lost=self.source.frames_lost,
                      bundle=self.bundle.version if self.bundle else f"none ({self.bundle_error or 'not given'})",
                      bundle_sha256=self.bundle.sha256 if self.bundle else "", provider=self.bundle.provider if self.bundle else "",
                      db=self._db_state, session_id=self.session_id)

    def _publish(self, event: Any) -> None:
        for callback in self._subscribers:
            try:
                callback(event)
            except Exception:
                self.summary.listener_errors += 1
                if self.summary.listener_errors in (1, 10, 100, 1000):
                    log.exception("an engine listener failed (%d times); the engine carries on",
                                  self.summary.listener_errors)

