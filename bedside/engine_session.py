"""The engine's session: opened in the log (a replay resumed when it can be), closed with its reason.

:class:`SessionMixin` is part of :class:`bedside.engine.Engine`.
"""

from __future__ import annotations

import logging

from bedside import __version__
from bedside.bundle_alarms import alarm_system_for
from bedside.engine_commit import Pending
from bedside.resume import carry_over, rebuild, resume_key
from bedside.store import StoreError

log = logging.getLogger("bedside.engine")


class SessionMixin:
    """Open (or resume) and close the engine's session in the log."""

    def _resume_key(self) -> str | None:
        record = getattr(self.source, "record", None)
        if record is None or not self.settings.resume:
            return None
        return resume_key(record, self.bundle.sha256 if self.bundle else None, self.hop_s, self.config.sha256,
                          self.settings.bed_id, self.settings.encounter_id)

    def _open_session(self) -> None:
        key = self._resume_key()
        now = self.clock()
        previous = self.store.latest_session(key) if key else None
        if previous is not None and previous["end_reason"] == "complete":
            self.session_id = self.summary.session_id = previous["id"]  # replayed before: nothing to add
            self.already_complete = True
            return
        carried: list = []
        if previous is not None and self._resume(previous["id"]):
            self.session_id = previous["id"]
        else:
            if self.source.kind == "live":
                closed = self.store.close_interrupted(self.settings.bed_id, now)
                if closed:
                    log.warning("sessions %s of bed %s ended without closing (process killed?): marked interrupted",
                                closed, self.settings.bed_id)
            self.session_id = self.store.open_session(
                bed_id=self.settings.bed_id, encounter_id=self.settings.encounter_id, source_kind=self.source.kind,
                device=self.source.description, fs_hz=self.source.fs_hz,
                bundle_sha256=self.bundle.sha256 if self.bundle else None,
                bundle_version=self.bundle.version if self.bundle else None,
                provider=self.bundle.provider if self.bundle else None, hop_s=self.hop_s,
                config_sha256=self.config.sha256, resume_key=key, engine_version=__version__, wall_time=now)
            if self.source.kind == "live" and self.settings.carry_over_s > 0:
                carried = self._carry_over(now)
        self.summary.session_id = self.session_id
        pending = Pending()
        self._changes(pending, -1, carried)
        if self.bundle is None and not self.alarms.is_present("bundle_refused"):
            self._changes(pending, -1, self.alarms.set_condition(
                "bundle_refused", True, 0.0, self.bundle_error or "no model bundle given"))
        if self.settings_error and not self.alarms.is_present("settings_refused"):
            self._changes(pending, -1, self.alarms.set_condition("settings_refused", True, 0.0, self.settings_error))
        self._flush(pending)
        self._publish(self._status())

    def _carry_over(self, now: float) -> list:
        """Latched, unacknowledged alarms of the bed's previous session, if it was active within
        ``carry_over_s``: restored LATCHED and marked with the session they came from."""
        assert self.session_id is not None
        previous_id, restored = carry_over(self.alarms, self.store, self.settings.bed_id, self.session_id,
                                           now - self.settings.carry_over_s)
        if restored:
            log.warning("bed %s: %d alarm(s) carried over from session %s: %s", self.settings.bed_id, len(restored),
                        previous_id, ", ".join(c.alarm for c in restored))
        return restored

    def _resume(self, session_id: int) -> bool:
        """Continue an unfinished replay: rebuild its alarm state from the log (False: start anew)."""
        logged = self.store.transitions(session_id)
        windows = self.store.windows(session_id)
        if not rebuild(self.alarms, windows, logged, self.bundle_error if self.bundle is None else None):
            log.warning("session %s does not replay to its logged transitions: starting a new session", session_id)
            self.alarms = alarm_system_for(self.config, self.bundle, self.hop_s)
            return False
        for _, c in logged:
            self._note_active(c)
        self._seq["alarm_transitions"] = self.store.max_seq("alarm_transitions", session_id)
        self._seq["technical_events"] = self.store.max_seq("technical_events", session_id)
        self.next_window = len(windows)
        self.summary.resumed_at_window = self.next_window
        return True

    def _without_path(self, text: str) -> str:
        """``text`` with the replayed record's folder removed: the log names a record, never a path."""
        record = getattr(self.source, "record", None)
        path = getattr(record, "path", None)
        return text.replace(str(path), self.source.description) if path else text

    def _close_session(self, reason: str) -> None:
        self.summary.end_reason = reason
        if self.session_id is None or self.already_complete:
            return
        try:
            if self._backlog:
                self.store.commit(self.session_id, self._backlog.windows, self.clock(), self._backlog.changes,
                                  self._backlog.events)
                self._backlog = Pending()
            self.store.end_session(self.session_id, reason, self.clock())
        except StoreError as exc:
            log.error("could not close session %s in the log: %s", self.session_id, exc)
        self.summary.unsaved_windows = len(self._backlog.windows) + self.summary.dropped_windows
        self.summary.unsaved_transitions = len(self._backlog.changes)
        self._link = "ended"
        self._publish(self._status())
