"""What the screen takes from the engine: the settings read once, and the engine thread's own notes.

``engine_settings`` and ``engine_display`` read the engine (bundle, alarm settings) on the engine's
thread right after it is built; ``EngineReady`` and ``EngineExit`` carry that, or the failure, to the
UI thread through the app's queue. No Textual here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol


class EngineLike(Protocol):
    """What the UI needs of ``bedside.engine.Engine``."""

    def subscribe(self, callback: Callable[[Any], None]) -> Any: ...
    def acknowledge(self, alarm: str, who: str) -> Any: ...
    def pause_audio(self, who: str) -> Any: ...
    def run(self) -> Any: ...
    def stop(self) -> Any: ...


def engine_settings(engine: Any) -> tuple[list[str], dict[str, float], float | None, list[str]]:
    """What the screen reads once from the engine: the bundle's labels, thresholds and not-validated
    labels (never alarmed, shown greyed), and the quality limit."""
    bundle = getattr(engine, "bundle", None)
    labels, thresholds = (list(bundle.labels), dict(bundle.thresholds)) if bundle is not None else ([], {})
    not_validated = list(getattr(bundle, "unvalidated_labels", ())) if bundle is not None else []
    quality = getattr(getattr(engine, "config", None), "quality", None)
    return labels, thresholds, getattr(quality, "min_sqi", None), not_validated


def engine_display(config: Any, audio: bool | None, labels: Sequence[str] = ()) -> dict[str, Any]:
    """What the screen shows from the alarm settings: action texts (of ``labels`` too), HR limits, audio."""
    out: dict[str, Any] = {"actions": {}, "hr_limits": None, "audio": None}
    if config is None:
        return out
    out["actions"] = dict(config.actions(tuple(labels)))
    out["hr_limits"] = (config.heart_rate.low_bpm, config.heart_rate.high_bpm)
    if audio is not None:
        out["audio"] = "on" if audio and config.audio.output != "off" else "off"
    return out


class EngineExit:
    """Queued by the engine thread when ``run`` returns or raises."""

    def __init__(self, error: BaseException | None) -> None:
        self.error = error


class EngineReady:
    """Queued by the engine thread once the engine is built: the bundle's labels and thresholds."""

    def __init__(self, labels: list[str], thresholds: dict[str, float], min_sqi: float | None,
                 not_validated: list[str], display: dict[str, Any] | None = None) -> None:
        self.labels, self.thresholds, self.min_sqi = labels, thresholds, min_sqi
        self.not_validated = not_validated
        self.display = display or {}


def failure_text(error: BaseException) -> str:
    """The full reason an engine stopped: the exception's type and message (every line of it)."""
    text = str(error).strip()
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
