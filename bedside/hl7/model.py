"""What the bed reports to the central station, independent of the HL7 encoding (see docs/hl7.md).

Times: ``t_s`` is signal time (seconds since the session's first sample), ``wall_time`` a UNIX
timestamp (seconds).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class AlarmReport:
    """One PCD-04 ORU^R40: one committed alarm transition."""

    bed_id: str
    session_id: int
    seq: int  # AlarmChange.seq: order of the transition in its session (as in the bed's log)
    alarm: str  # e.g. "edema", "lead_off"
    kind: str  # "physiological" | "technical"
    priority: str  # "high" | "medium" | "low"
    state: str  # AlarmState value: "active", "AUDIO PAUSED", "ACKNOWLEDGED", "latched", "cleared"
    previous: str | None
    cause: str  # "condition", "acknowledge", "pause_audio", "timer"
    text: str  # AlarmChange.message
    t_s: float
    wall_time: float
    score: float | None = None
    threshold: float | None = None


@dataclass(frozen=True)
class ObservationReport:
    """One PCD-01 ORU^R01: one analysed window."""

    bed_id: str
    session_id: int
    window_index: int
    t_s: float
    wall_time: float
    scored: bool
    reason: str  # "" when scored
    hr_bpm: float | None
    sqi_min: float | None  # lowest lead SQI of the window, 0..1
    risks: dict[str, float | None]  # smoothed risk per label, 0..1
    thresholds: dict[str, float]
    validated: dict[str, bool]


Report = AlarmReport | ObservationReport


@dataclass(frozen=True)
class Envelope:
    """A report with its transport identity."""

    control_id: str  # MSH-10, unique per message (the central de-duplicates on it)
    bed_seq: int  # MSH-13 sequence number: per-bed outbox order, strictly increasing
    report: AlarmReport | ObservationReport
