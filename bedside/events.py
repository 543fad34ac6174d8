"""What the bedside engine tells its listeners (the SQLite log, the headless console, the UI).

"Attributes down, messages up": the engine publishes these immutable events; listeners never reach
into the engine's state. Commands go the other way through the engine's methods (acknowledge,
pause audio). Times are seconds: ``t_s`` on the signal's own clock (seconds since the session's
first sample, the same in replay and live), ``wall_time`` a UNIX timestamp.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # an annotation only: `bedside alerts` reads priorities from here without numpy
    import numpy as np


class AlarmKind(str, Enum):
    PHYSIOLOGICAL = "physiological"  # about the patient
    TECHNICAL = "technical"  # about the equipment


class Priority(str, Enum):
    HIGH = "high"  # respond immediately: ***
    MEDIUM = "medium"  # respond promptly: **
    LOW = "low"  # be aware: *

    @property
    def marker(self) -> str:
        return {"high": "***", "medium": "**", "low": "*"}[self.value]


class AlarmState(str, Enum):
    """IEC 60601-1-8 names of the states an alarm condition goes through."""

    ACTIVE = "active"
    AUDIO_PAUSED = "AUDIO PAUSED"
    ACKNOWLEDGED = "ACKNOWLEDGED"
    LATCHED = "latched"  # condition over, signal persists until acknowledged
    CLEARED = "cleared"


@dataclass(frozen=True)
class Samples:
    """A block of canonical-lead samples as received (for waveform display); NaN marks gaps."""

    t_s: float  # signal time of the first sample
    fs_hz: float
    first_index: int  # sample index since the session's first sample
    data_mv: np.ndarray  # [12, n] float32, canonical lead order (bedside.leads.CANONICAL_LEADS)


@dataclass(frozen=True)
class WindowResult:
    """One analysed window: scored, or the reason it was not."""

    t_s: float  # signal time of the window's end
    index: int  # window number in the session
    scored: bool
    reason: str  # "" when scored, else why not (gap, lead off, poor signal, inference failed...)
    scores: dict[str, float] = field(default_factory=dict)  # calibrated probability per label
    smoothed: dict[str, float] = field(default_factory=dict)  # smoothed risk per label
    hr_bpm: float | None = None
    quality: dict[str, float] = field(default_factory=dict)  # signal-quality index per lead, 0..1
    lead_off: dict[str, bool | None] = field(default_factory=dict)  # per electrode
    detail: str = ""  # what exactly was wrong (e.g. "lead V3 flat"), "" when scored
    # technical conditions of the window, each judged on its own: alarm name -> detail, for those present
    # (None: not recorded, as in logs older than this field; the alarm system then reads ``reason``)
    conditions: dict[str, str] | None = None
    unknown: tuple[str, ...] = ()  # window conditions this window could not judge (their alarms stay as they are)
    gap_s: float = 0.0  # signal missing (s): the whole link gap when one touches the window, else what is missing in it


@dataclass(frozen=True)
class AlarmChange:
    """A committed alarm state transition (published only after it is in the database)."""

    t_s: float
    wall_time: float
    alarm: str  # e.g. "edema", "hr_high", "lead_off"
    kind: AlarmKind
    priority: Priority
    state: AlarmState
    previous: AlarmState | None
    message: str  # text for the banner, e.g. "Edema risk 0.71 > 0.55"
    score: float | None = None
    threshold: float | None = None
    who: str | None = None  # who acknowledged / paused audio
    audio_paused_until_s: float | None = None
    cause: str = "condition"  # "condition", "acknowledge", "pause_audio", "timer"
    seq: int = 0  # order of the transition in its session (1, 2, ...), as in the database
    carried_over_from: int | None = None  # restored after a restart: the session it was raised in (docs/alarms.md)

    @property
    def carried_over(self) -> bool:
        """Restored by the engine from the bed's previous session after a restart (cause "carried_over")."""
        return self.carried_over_from is not None


@dataclass(frozen=True)
class Status:
    """Where the equipment stands, for the status bar."""

    bed_id: str
    device: str  # port URL or record path
    link: str  # "connected", "disconnected", "reconnecting", "replay", "ended"
    frames_lost: int
    bundle: str  # model name and version
    bundle_sha256: str
    provider: str  # onnxruntime execution provider
    db: str  # "ok", or what is failing
    session_id: int | None = None


EngineEvent = Samples | WindowResult | AlarmChange | Status
