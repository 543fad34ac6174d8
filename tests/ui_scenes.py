"""Fixed sequences of engine events for the UI's tests, snapshots and screenshots (no clocks, no threads).

The waveforms are the real PTB record s0010_re (../shared/data); risks, heart rate and alarms are
fixed values chosen to show each state of the screen. Times are frozen: wall times start at
``T0_WALL`` (+ signal time) and the app is given ``clock=lambda: FROZEN_NOW`` and ``tz=timezone.utc``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bedside.events import AlarmChange, AlarmKind, AlarmState, Priority, Samples, Status, WindowResult
from bedside.leads import CANONICAL_LEADS

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
RECORD = DATA / "records" / "s0010_re"
T0_WALL = 1_767_225_600.0  # 2026-01-01 00:00:00 UTC
SIGNAL_S = 30.0  # seconds of signal each scene streams (the last 30 s of its hour)
END_S = 3600.0  # signal time at the end of each scene (s): an hour of risk trend
HOP_S = 5.0
LABELS = ("edema", "pleural_effusion", "cardiomegaly")
MIN_SQI = 0.5  # the signal-quality limit of bedside/alarms.toml
THRESHOLDS = {"edema": 0.55, "pleural_effusion": 0.6, "cardiomegaly": 0.5}
ELECTRODES = ("RA", "LA", "LL", "V1", "V2", "V3", "V4", "V5", "V6")
BED = "ICU-07"


def record_signal(seconds: float = SIGNAL_S) -> tuple[np.ndarray, float]:
    """The first ``seconds`` of s0010_re, [12, n] canonical mV, and its rate (Hz)."""
    from bedside.records import open_record

    rec = open_record(RECORD)
    n = int(seconds * rec.fs_hz)
    return rec.read(0, n), float(rec.fs_hz)


def sample_blocks(x: np.ndarray, fs: float, start_s: float, block_s: float = 0.25) -> list[Samples]:
    """Cut a [12, n] signal into the blocks a source would publish, the first at signal time ``start_s``."""
    step, first = int(block_s * fs), int(round(start_s * fs))
    return [Samples(t_s=(first + i) / fs, fs_hz=fs, first_index=first + i, data_mv=x[:, i:i + step].copy())
            for i in range(0, x.shape[1], step)]


def status(link: str = "replay", frames_lost: int = 0, db: str = "ok") -> Status:
    return Status(bed_id=BED, device=str(RECORD), link=link, frames_lost=frames_lost, bundle="cromotex-ecg 1.2.0",
                  bundle_sha256="3f9a1c0d5e7b2a64" + "0" * 48, provider="CPUExecutionProvider", db=db, session_id=1)


def window(t_s: float, risks: dict[str, float], hr: float | None = 72.0, scored: bool = True, reason: str = "",
           lead_off: dict[str, bool | None] | None = None, quality: float = 0.96) -> WindowResult:
    """The window ending at ``t_s`` (window number from the 5 s hop) with the given smoothed risks."""
    return WindowResult(
        t_s=t_s, index=int(round((t_s - 10.0) / HOP_S)), scored=scored, reason=reason,
        scores=dict(risks) if scored else {}, smoothed=dict(risks) if scored else {}, hr_bpm=hr,
        quality={lead: round(quality - 0.01 * (k % 3), 2) for k, lead in enumerate(CANONICAL_LEADS)},
        lead_off=dict(lead_off) if lead_off is not None else {e: False for e in ELECTRODES})


def change(t_s: float, alarm: str, state: AlarmState, previous: AlarmState | None, message: str,
           priority: Priority = Priority.MEDIUM, kind: AlarmKind = AlarmKind.PHYSIOLOGICAL,
           score: float | None = None, threshold: float | None = None, who: str | None = None,
           paused_until_s: float | None = None) -> AlarmChange:
    return AlarmChange(t_s=t_s, wall_time=T0_WALL + t_s, alarm=alarm, kind=kind, priority=priority, state=state,
                       previous=previous, message=message, score=score, threshold=threshold, who=who,
                       audio_paused_until_s=paused_until_s)


def _stream(risk_at, hr: float, alarms_at: dict[float, list[AlarmChange]] | None = None) -> list[object]:
    """An hour of windows (risks from ``risk_at(t)``, None = not scored) with the last 30 s of samples."""
    x, fs = record_signal()
    start = END_S - SIGNAL_S
    events: list[object] = []
    windows = {t: risk_at(t) for t in np.arange(10.0, END_S + 0.1, HOP_S)}

    def emit_window(t: float) -> None:
        r = windows[t]
        if r is None:
            events.append(window(t, {}, hr=None, scored=False, reason="lead off",
                                 lead_off={e: e == "LA" for e in ELECTRODES}))
        else:
            events.append(window(t, r, hr=hr))
        events.extend((alarms_at or {}).get(t, []))

    for t in windows:
        if t <= start:
            emit_window(t)
    for b in sample_blocks(x, fs, start):
        events.append(b)
        t_end = b.t_s + b.data_mv.shape[1] / fs
        if t_end in windows and t_end > start:
            emit_window(t_end)
    return events


def normal_scene() -> list[object]:
    """An hour of low risks (with 10 minutes of lead off 25 minutes ago), the last 30 s of signal, no alarm."""
    def risk_at(t: float) -> dict[str, float] | None:
        if END_S - 1800 < t <= END_S - 1200:
            return None
        ph = 2 * np.pi * t / 1800
        return {"edema": round(0.22 + 0.05 * np.sin(ph), 3), "pleural_effusion": round(0.14 + 0.03 * np.cos(ph), 3),
                "cardiomegaly": round(0.33 - 0.04 * np.sin(ph), 3)}
    return [status("replay")] + _stream(risk_at, hr=72.0)


def alarm_scene() -> list[object]:
    """Edema rising over its threshold (ACTIVE), pleural effusion audio-paused, a low technical alarm."""
    def risk_at(t: float) -> dict[str, float]:
        f = max(0.0, (t - (END_S - 2400)) / 2400)  # rises over the last 40 minutes
        return {"edema": round(0.25 + 0.45 * f, 3), "pleural_effusion": round(0.30 + 0.35 * f, 3),
                "cardiomegaly": round(0.31 + 0.02 * np.sin(t / 300), 3)}
    alarms = {
        END_S - 600: [change(END_S - 600, "pleural_effusion", AlarmState.ACTIVE, None,
                             "Pleural effusion risk 0.61 > 0.60", score=0.61, threshold=0.6)],
        END_S - 300: [change(END_S - 300, "edema", AlarmState.ACTIVE, None, "Edema risk 0.66 > 0.55",
                             score=0.66, threshold=0.55)],
        END_S - 15: [change(END_S - 15, "poor_signal", AlarmState.ACTIVE, None, "Poor signal V2 (SQI 0.41)",
                            priority=Priority.LOW, kind=AlarmKind.TECHNICAL)],
        END_S - 10: [change(END_S - 10, "pleural_effusion", AlarmState.AUDIO_PAUSED, AlarmState.ACTIVE,
                            "Pleural effusion risk 0.64 > 0.60", score=0.64, threshold=0.6, who="nurse.kim",
                            paused_until_s=END_S + 110)],
    }
    return [status("replay")] + _stream(risk_at, hr=88.0, alarms_at=alarms)


def disconnected_scene() -> list[object]:
    """The alarm-free scene on a live link, then the device disconnects: technical alarm, blank traces."""
    events = [status("connected")] + [e for e in normal_scene() if not isinstance(e, Status)]
    events.append(status("disconnected", frames_lost=37))
    events.append(change(END_S + 1.0, "device_disconnected", AlarmState.ACTIVE, None,
                         "Device disconnected: /dev/ttyUSB0, no frames for 1 s", kind=AlarmKind.TECHNICAL))
    return events


#: Wall clock the app sees when a scene is drawn: 4 s after the last sample block arrived.
FROZEN_NOW = T0_WALL + END_S + 4.0


def reconnected_scene() -> list[object]:
    """The disconnected scene, then the log clears device_disconnected (the device is back) while the
    last Status still says "disconnected": the status bar follows the log."""
    events = disconnected_scene()
    events.append(change(END_S + 6.0, "device_disconnected", AlarmState.CLEARED, AlarmState.ACTIVE,
                         "Device disconnected: /dev/ttyUSB0, no frames for 1 s", kind=AlarmKind.TECHNICAL))
    return events


def undrawn_lead_off_scene() -> list[object]:
    """The normal scene, then electrode V3 comes off (a lead not drawn with II V1 V5): the window is not
    scored but lead II is clean, so the heart rate stays; the lead_off alarm names V3."""
    events = normal_scene()
    off = {e: e == "V3" for e in ELECTRODES}
    events.append(window(END_S, {}, hr=71.0, scored=False, reason="lead off", lead_off=off))
    events.append(change(END_S, "lead_off", AlarmState.ACTIVE, None,
                         "Lead off: lead V3 without signal for 5 s (electrode V3 off)", kind=AlarmKind.TECHNICAL))
    return events


def near_threshold_scene(edema: float = 0.251) -> list[object]:
    """Edema hovering at its threshold (0.25 here) with its alarm active: 0.251 is above, 0.249 below;
    the alarm (latching) stays either way."""
    thresholds = dict(THRESHOLDS, edema=0.25)

    def risk_at(t: float) -> dict[str, float]:
        return {"edema": edema if t > END_S - 600 else 0.2, "pleural_effusion": 0.14, "cardiomegaly": 0.33}
    alarms = {END_S - 300: [change(END_S - 300, "edema", AlarmState.ACTIVE, None, "Edema risk 0.252 > 0.250",
                                   score=0.252, threshold=thresholds["edema"])]}
    return [status("replay")] + _stream(risk_at, hr=80.0, alarms_at=alarms)


#: Thresholds of ``near_threshold_scene`` (edema's is 0.25).
NEAR_THRESHOLDS = dict(THRESHOLDS, edema=0.25)


#: Why the engine refused a record in the failure snapshot (the Pilot test uses a real refused header).
FAILURE_REASON = ("/wards/icu/s0099.hea: sampling frequency 0 Hz is not a positive number; "
                  "fix the record header (line 1, field 3) or export the record again")
