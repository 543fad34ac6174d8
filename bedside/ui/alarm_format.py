"""How an alarm is written on screen: marker, name, state with AUDIO PAUSED time left, clock time.

One place for these words, shared by the banner, the alarm list and the history.
"""

from __future__ import annotations

from datetime import datetime, tzinfo

from bedside.events import AlarmChange, AlarmState

#: Display names of the engine's alarm identifiers (others are shown as written).
ALARM_NAMES = {
    "edema": "EDEMA", "pleural_effusion": "PLEURAL EFFUSION", "cardiomegaly": "CARDIOMEGALY",
    "hr_high": "HR HIGH", "hr_low": "HR LOW", "lead_off": "LEAD OFF", "poor_signal": "POOR SIGNAL", "signal_gap": "SIGNAL GAP",
    "device_disconnected": "DEVICE DISCONNECTED", "no_data": "NO DATA", "inference_stale": "INFERENCE STALE",
    "inference_failed": "INFERENCE FAILED", "bundle_refused": "MODEL REFUSED",
    "settings_refused": "SETTINGS REFUSED", "storage_failing": "STORAGE FAILING",
    "engine_failed": "ENGINE STOPPED", "command_failed": "COMMAND FAILED",
    "analysis_behind": "ANALYSIS BEHIND", "central_unreachable": "CENTRAL UNREACHABLE",
    "device_refused": "DEVICE REFUSED",
}
#: Actions of the alarms the screen raises itself (the engine's come from the alarm settings file).
SCREEN_ACTIONS = {"engine_failed": "Call technician: see dialog", "command_failed": "Retry; call technician",
                  "ui_error": "Call technician"}
#: Tag of an alarm the engine restored after a restart (``AlarmChange.carried_over``).
CARRIED_OVER = "carried over"


def alarm_name(alarm: str) -> str:
    return ALARM_NAMES.get(alarm, alarm.replace("_", " ").upper())


def mmss(seconds: float) -> str:
    s = max(0, int(round(seconds)))
    return f"{s // 60}:{s % 60:02d}"


def age_text(age_s: float) -> str:
    """The age of stale values: ``(12 s)``, ``(3 min)``, ``(2 h)``."""
    s = int(age_s)
    return f"({s} s)" if s < 120 else f"({s // 60} min)" if s < 7200 else f"({s // 3600} h)"


def state_text(change: AlarmChange, paused_left_s: float | None) -> str:
    """The IEC 60601-1-8 state as shown: ACTIVE, AUDIO PAUSED m:ss, ACKNOWLEDGED, LATCHED, CLEARED."""
    if change.state is AlarmState.AUDIO_PAUSED:
        return "AUDIO PAUSED" if paused_left_s is None else f"AUDIO PAUSED {mmss(paused_left_s)}"
    return change.state.value.upper()


def one_line(text: str) -> str:
    """A message on one line (a multi-line reason would make a list row taller than the others)."""
    return " / ".join(part.strip() for part in text.splitlines() if part.strip())


def carried_over(change: AlarmChange) -> bool:
    """Whether the engine carried this alarm over from before a restart (absent on older engines)."""
    return bool(getattr(change, "carried_over", False))


def clock(wall_time: float, tz: tzinfo | None) -> str:
    """Wall-clock HH:MM:SS of a UNIX time in ``tz`` (None: the machine's local time zone)."""
    return datetime.fromtimestamp(wall_time, tz).strftime("%H:%M:%S")
