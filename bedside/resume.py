"""Resuming after an interruption: a replay continues its session with the alarm state rebuilt from the
log; a live monitor carries the bed's latched, unacknowledged alarms into its new session.

A replay killed mid-way (kill -9, power cut) leaves a session without an end. Run again with the same
record, bundle, hop, alarm settings and bed, the engine continues that session instead of writing its
events twice: :func:`rebuild` feeds the logged windows, and the acknowledgements and audio pauses at the
window they followed, through a fresh alarm system, and accepts the session only if that reproduces the
logged transitions exactly (the alarm logic is a pure function of these inputs).
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from typing import TYPE_CHECKING

from bedside.alarms import AlarmSystem
from bedside.events import AlarmChange, WindowResult

if TYPE_CHECKING:  # an annotation only: wfdb (and pandas) stay out of the engine's imports
    from bedside.records import EcgRecord
    from bedside.store import Store

COMMANDS = ("acknowledge", "pause_audio")


def resume_key(record: EcgRecord, bundle_sha256: str | None, hop_s: float, config_sha256: str, bed_id: str,
               encounter_id: str | None) -> str:
    """What must match for a replay to continue a session (stored as a hash: no path in the log)."""
    with open(record.path + ".hea", "rb") as f:
        header = hashlib.sha256(f.read()).hexdigest()
    parts = [record.path, header, str(record.n_samples), repr(record.fs_hz), bundle_sha256 or "no-bundle",
             repr(hop_s), config_sha256, bed_id, encounter_id or ""]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def rebuild(alarms: AlarmSystem, windows: list[WindowResult], logged: list[tuple[int, AlarmChange]],
            bundle_error: str | None) -> bool:
    """Drive ``alarms`` through a session's log; True when it reproduces the logged transitions.

    ``logged`` is (window index, change) in order; ``bundle_error`` is set when the session ran without a
    model (its first transition is then ``bundle_refused``).
    """
    if [w.index for w in windows] != list(range(len(windows))):
        return False
    commands = [(idx, c) for idx, c in logged if c.cause in COMMANDS]
    out: list[AlarmChange] = []
    if bundle_error is not None:
        out += alarms.set_condition("bundle_refused", True, 0.0, bundle_error)

    def run_commands(after: int) -> None:
        for idx, c in commands:
            if idx == after:
                out.extend(alarms.command(c.cause, c.alarm if c.cause == "acknowledge" else None, c.who or "", c.t_s))

    run_commands(-1)
    for w in windows:
        out.extend(alarms.tick(w.t_s))
        out.extend(alarms.on_window(replace(w, smoothed=alarms.smooth(w))))
        run_commands(w.index)
    return [(c.alarm, c.state, c.previous) for c in out] == [(c.alarm, c.state, c.previous) for _, c in logged]


def carry_over(alarms: AlarmSystem, store: Store, bed_id: str, session_id: int, since_wall: float
               ) -> tuple[int | None, list[AlarmChange]]:
    """A live restart: restore into ``alarms`` the latching alarms that the bed's previous session left
    LATCHED, ACTIVE or AUDIO PAUSED, if that session was active at or after ``since_wall`` (unix s).
    Returns (the previous session's id or None, the LATCHED transitions marked carried over)."""
    found = store.carry_over_candidates(bed_id, session_id, since_wall)
    if found is None:
        return None, []
    previous_id, last = found
    return previous_id, alarms.restore(last, previous_id, 0.0)
