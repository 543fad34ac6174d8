"""Alarm settings (priorities, persistence, limits, audio): parsed once from a TOML file.

The manufacturer's risk analysis lives in ``bedside/alarms.toml`` (the packaged default) or a copy
passed with ``--alarms``; this module turns it into frozen dataclasses of plain values that the
engine hands down. Unknown keys and bad values are refused with the file, the key and the fix.
"""

from __future__ import annotations

import hashlib
import importlib.util
import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

try:  # Python 3.11+
    import tomllib
except ModuleNotFoundError:  # Python 3.10 (Jetson JetPack 6): the same parser as a package
    import tomli as tomllib  # type: ignore[no-redef]

from bedside.errors import BedsideError
from bedside.events import Priority
from bedside.leads import LEAD_INDEX

#: Technical alarms the engine raises, in display order (see docs/alarms.md).
TECHNICAL_ALARMS: tuple[str, ...] = (
    "lead_off", "poor_signal", "signal_gap", "device_disconnected", "no_data", "inference_stale",
    "inference_failed", "bundle_refused", "settings_refused", "storage_failing", "analysis_behind",
    "central_unreachable", "device_refused",
)
#: Technical alarms decided per analysis window (the others follow the link, the model or the disk).
WINDOW_TECHNICAL: tuple[str, ...] = ("lead_off", "poor_signal", "signal_gap", "inference_failed")
QRS_DETECTORS: tuple[str, ...] = ("gradient", "neurokit", "xqrs")
AUDIO_OUTPUTS: tuple[str, ...] = ("bell", "command", "off")
#: Longest action text (the banner at 80 columns has room for this much beside the alarm's name).
ACTION_MAX_CHARS = 28
#: Action shown for a technical alarm whose table has no ``action`` key.
DEFAULT_TECHNICAL_ACTION = "Check equipment"


class AlarmConfigError(BedsideError):
    """The alarm settings file cannot be used."""


@dataclass(frozen=True)
class Persistence:
    """Raise when ``raise_n`` of the last ``raise_m`` windows meet the condition; clear after ``clear_n`` clean."""

    raise_n: int
    raise_m: int
    clear_n: int


@dataclass(frozen=True)
class RiskSettings:
    priority: Priority
    latching: bool
    persistence: Persistence
    clear_margin: float  # probability below the raise threshold at which the alarm clears
    action: str = "Assess patient"  # what the nurse should do, shown with the alarm


@dataclass(frozen=True)
class HeartRateSettings:
    high_bpm: float
    low_bpm: float
    clear_hysteresis_bpm: float
    priority: Priority
    latching: bool
    persistence: Persistence
    lead: str
    detector: str
    rr_count: int
    rr_count_slow: int
    slow_bpm: float
    max_rr_s: float
    action: str = "Check patient"


@dataclass(frozen=True)
class QualitySettings:
    """Bounds (bad, good) of each signal-quality feature; see bedside.quality."""

    min_sqi: float
    flat_mv: tuple[float, float]
    clip_fraction: tuple[float, float]
    hf_ratio: tuple[float, float]
    hf_hz: float
    kurtosis: tuple[float, float]
    max_mv: tuple[float, float]


@dataclass(frozen=True)
class TechnicalSettings:
    priority: Priority
    persistence: Persistence  # for window conditions
    after_s: float  # for link conditions: how long it must last
    action: str = DEFAULT_TECHNICAL_ACTION  # may name {electrodes}: the electrodes that are off


@dataclass(frozen=True)
class AudioPattern:
    pulses_s: tuple[float, ...]  # offsets of the pulses within one burst, s
    repeat_s: float  # a burst starts every repeat_s seconds while the priority sounds


@dataclass(frozen=True)
class AudioSettings:
    pause_s: float
    output: str
    command: str
    patterns: dict[Priority, AudioPattern]


@dataclass(frozen=True)
class AlarmConfig:
    """Every alarm setting, as plain values; ``sha256`` identifies the file it came from."""

    source: str
    sha256: str
    smoothing_windows: int
    risk: RiskSettings
    risk_labels: dict[str, RiskSettings]
    heart_rate: HeartRateSettings
    quality: QualitySettings
    technical: dict[str, TechnicalSettings]
    audio: AudioSettings

    def risk_for(self, label: str) -> RiskSettings:
        """Settings of one pathology label (its override, else the [risk] defaults)."""
        return self.risk_labels.get(label, self.risk)

    def actions(self, labels: tuple[str, ...] | list[str] = ()) -> dict[str, str]:
        """The short action text of every alarm this file configures (risk labels: those given)."""
        out = {name: t.action for name, t in self.technical.items()}
        out.update({"hr_high": self.heart_rate.action, "hr_low": self.heart_rate.action})
        out.update({label: self.risk_for(label).action for label in (*labels, *self.risk_labels)})
        return out


def _offset(v: Any) -> bool:
    """A finite number >= 0 that is not a bool (TOML's nan, inf and true are not offsets or bounds)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0


class _Reader:
    """Typed access to one TOML table that names the file and key in every error."""

    def __init__(self, source: str, table: dict[str, Any], where: str):
        self.source, self.table, self.where = source, table, where
        self.used: set[str] = set()

    def fail(self, key: str, problem: str) -> AlarmConfigError:
        return AlarmConfigError(f"{self.source}: [{self.where}] {key}: {problem}. "
                                "Fix the value (bedside/alarms.toml documents every key).")

    def get(self, key: str, default: Any = None) -> Any:
        self.used.add(key)
        if key not in self.table:
            if default is None:
                raise self.fail(key, "missing")
            return default
        return self.table[key]

    def number(self, key: str, lo: float = 0.0, hi: float = float("inf"), default: float | None = None) -> float:
        v = self.get(key, default)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not lo <= v <= hi:
            raise self.fail(key, f"must be a number in [{lo:g}, {hi:g}], got {v!r}")
        return float(v)

    def integer(self, key: str, lo: int = 1, hi: int = 10_000, default: int | None = None) -> int:
        v = self.get(key, default)
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            raise self.fail(key, f"must be an integer in [{lo}, {hi}], got {v!r}")
        return v

    def boolean(self, key: str, default: bool | None = None) -> bool:
        v = self.get(key, default)
        if not isinstance(v, bool):
            raise self.fail(key, f"must be true or false, got {v!r}")
        return v

    def action(self, default: str) -> str:
        """A short action text ("Check electrode {electrodes}") of at most ACTION_MAX_CHARS characters."""
        v = self.get("action", default)
        if not isinstance(v, str) or not v.strip() or len(v) > ACTION_MAX_CHARS or "\n" in v:
            raise self.fail("action", f"must be a one-line text of 1-{ACTION_MAX_CHARS} characters, got {v!r}")
        return v.strip()

    def choice(self, key: str, choices: tuple[str, ...], default: str | None = None) -> str:
        v = self.get(key, default)
        if v not in choices:
            raise self.fail(key, f"must be one of {list(choices)}, got {v!r}")
        return str(v)

    def priority(self, default: Priority | None = None) -> Priority:
        return Priority(self.choice("priority", tuple(p.value for p in Priority),
                                    default.value if default else None))

    def bounds(self, key: str) -> tuple[float, float]:
        v = self.get(key)
        if not isinstance(v, list) or len(v) != 2 or not all(_offset(b) for b in v) or not v[0] < v[1]:
            raise self.fail(key, f"must be two increasing finite numbers >= 0 [bad, good], got {v!r}")
        return float(v[0]), float(v[1])

    def persistence(self, defaults: Persistence | None = None) -> Persistence:
        m = self.integer("raise_m", 1, 1000, defaults.raise_m if defaults else None)
        n = self.integer("raise_n", 1, m, defaults.raise_n if defaults else None)
        c = self.integer("clear_n", 1, 1000, defaults.clear_n if defaults else None)
        return Persistence(n, m, c)

    def done(self, allowed_tables: tuple[str, ...] = ()) -> None:
        unknown = sorted(set(self.table) - self.used - set(allowed_tables))
        if unknown:
            raise self.fail(", ".join(unknown), "unknown key(s)")


def _table(source: str, parent: dict[str, Any], key: str, where: str) -> _Reader:
    value = parent.get(key, {})
    if not isinstance(value, dict):
        raise AlarmConfigError(f"{source}: [{where}] must be a table")
    return _Reader(source, value, where)


def _risk(r: _Reader, defaults: RiskSettings | None = None) -> RiskSettings:
    return RiskSettings(
        priority=r.priority(defaults.priority if defaults else None),
        latching=r.boolean("latching", defaults.latching if defaults else None),
        persistence=r.persistence(defaults.persistence if defaults else None),
        clear_margin=r.number("clear_margin", 0.0, 1.0, defaults.clear_margin if defaults else None),
        action=r.action(defaults.action if defaults else RiskSettings.action),
    )


def parse_alarm_config(data: dict[str, Any], source: str, sha256: str) -> AlarmConfig:
    """Build an AlarmConfig from parsed TOML (``source`` names the file in errors)."""
    top = _Reader(source, data, "top level")
    sm = _table(source, data, "smoothing", "smoothing")
    top.used.add("smoothing")
    smoothing = sm.integer("windows", 1, 100)
    sm.done()

    rk = _table(source, data, "risk", "risk")
    top.used.add("risk")
    risk = _risk(rk)
    labels_table = _table(source, rk.table, "labels", "risk.labels").table
    risk_labels: dict[str, RiskSettings] = {}
    for label in labels_table:
        reader = _table(source, labels_table, label, f"risk.labels.{label}")
        risk_labels[label] = _risk(reader, risk)
        reader.done()
    rk.done(("labels",))

    hr = _table(source, data, "heart_rate", "heart_rate")
    top.used.add("heart_rate")
    heart_rate = HeartRateSettings(
        high_bpm=hr.number("high_bpm", 30, 350), low_bpm=hr.number("low_bpm", 10, 200),
        clear_hysteresis_bpm=hr.number("clear_hysteresis_bpm", 0, 50), priority=hr.priority(),
        latching=hr.boolean("latching"), persistence=hr.persistence(), lead=str(hr.get("lead")),
        detector=hr.choice("detector", QRS_DETECTORS), rr_count=hr.integer("rr_count", 1, 100),
        rr_count_slow=hr.integer("rr_count_slow", 1, 100), slow_bpm=hr.number("slow_bpm", 10, 200),
        max_rr_s=hr.number("max_rr_s", 0.5, 10), action=hr.action(HeartRateSettings.action),
    )
    if heart_rate.low_bpm >= heart_rate.high_bpm:
        raise hr.fail("low_bpm", f"must be below high_bpm ({heart_rate.high_bpm:g})")
    if heart_rate.lead not in LEAD_INDEX:
        raise hr.fail("lead", f"must be one of {list(LEAD_INDEX)}, got {heart_rate.lead!r}")
    if heart_rate.detector == "neurokit" and importlib.util.find_spec("neurokit2") is None:
        raise hr.fail("detector", 'is "neurokit" but NeuroKit2 is not installed: install the `neurokit` extra '
                                  '(pip install "cromotex-bedside[neurokit]") or use "gradient" (the same peaks)')
    hr.done()

    q = _table(source, data, "quality", "quality")
    top.used.add("quality")
    quality = QualitySettings(
        min_sqi=q.number("min_sqi", 0, 1), flat_mv=q.bounds("flat_mv"), clip_fraction=q.bounds("clip_fraction"),
        hf_ratio=q.bounds("hf_ratio"), hf_hz=q.number("hf_hz", 1, 1000), kurtosis=q.bounds("kurtosis"),
        max_mv=q.bounds("max_mv"),
    )
    q.done()

    tech_all = _table(source, data, "technical", "technical").table
    top.used.add("technical")
    technical: dict[str, TechnicalSettings] = {}
    for name in TECHNICAL_ALARMS:
        t = _table(source, tech_all, name, f"technical.{name}")
        technical[name] = TechnicalSettings(
            priority=t.priority(Priority.MEDIUM),
            persistence=t.persistence(Persistence(1, 1, 1)),
            after_s=t.number("after_s", 0, 3600, 0.0),
            action=t.action(DEFAULT_TECHNICAL_ACTION),
        )
        t.done()
    unknown = sorted(set(tech_all) - set(TECHNICAL_ALARMS))
    if unknown:
        raise AlarmConfigError(f"{source}: [technical] unknown alarm(s) {unknown}; known: {list(TECHNICAL_ALARMS)}")

    au = _table(source, data, "audio", "audio")
    top.used.add("audio")
    patterns: dict[Priority, AudioPattern] = {}
    for p in Priority:
        pt = _table(source, au.table, p.value, f"audio.{p.value}")
        pulses = pt.get("pulses_s")
        if (not isinstance(pulses, list) or not pulses or not all(_offset(v) for v in pulses)
                or list(pulses) != sorted(pulses)):
            raise pt.fail("pulses_s", f"must be a non-empty increasing list of finite offsets >= 0 in s, got {pulses!r}")
        repeat = pt.number("repeat_s", 0.5, 3600)
        if repeat <= pulses[-1]:
            raise pt.fail("repeat_s", f"must exceed the last pulse offset {pulses[-1]:g} s")
        patterns[p] = AudioPattern(tuple(float(v) for v in pulses), repeat)
        pt.done()
    audio = AudioSettings(pause_s=au.number("pause_s", 1, 3600), output=au.choice("output", AUDIO_OUTPUTS),
                          command=str(au.get("command", "")), patterns=patterns)
    if audio.output == "command" and not audio.command.strip():
        raise au.fail("command", 'is empty but output = "command"')
    au.done(tuple(p.value for p in Priority))
    top.done()
    return AlarmConfig(source=source, sha256=sha256, smoothing_windows=smoothing, risk=risk,
                       risk_labels=risk_labels, heart_rate=heart_rate, quality=quality,
                       technical=technical, audio=audio)


def load_alarm_config(path: str | Path | None = None) -> AlarmConfig:
    """Read and check an alarm settings file; ``None`` reads the packaged ``bedside/alarms.toml``."""
    if path is None:
        data = resources.files("bedside").joinpath("alarms.toml").read_bytes()
        source = "bedside/alarms.toml (built-in)"
    else:
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise AlarmConfigError(f"{path}: cannot read the alarm settings: {exc}") from exc
        source = str(path)
    try:
        parsed = tomllib.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise AlarmConfigError(f"{source}: not valid TOML: {exc}") from exc
    return parse_alarm_config(parsed, source, hashlib.sha256(data).hexdigest())
