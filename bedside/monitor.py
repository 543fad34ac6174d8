"""``bedside monitor``: the engine live on a serial ECG device (what the systemd service runs).

Unlike a replay, a monitor never refuses to start over the model bundle: a bundle that fails
verification raises the technical alarm ``bundle_refused`` and the engine keeps monitoring what it
can without it (heart rate, signal quality, the link), because a bedside that stops is worse than
one that says what it cannot do.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

from bedside.alarm_config import AlarmConfig, AlarmConfigError, load_alarm_config
from bedside.bundle import Bundle, load_bundle
from bedside.engine import Engine, EngineSettings
from bedside.errors import BundleError
from bedside.sources import DeviceSource
from bedside.store import Store
from bedside.trust import TrustSettings
from bedside.watchdog import Notifier

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MonitorOptions:
    port: str
    protocol: str
    model: str | None
    db: str
    bed_id: str
    encounter_id: str | None = None
    baudrate: int | None = None
    lead_map: tuple[str, ...] | None = None  # canonical lead on CH1..CHn
    alarms: str | None = None
    hop_s: float | None = None
    trt_cache_dir: str | None = None
    reconnect: bool = True
    stable_port: bool = False  # port is a udev symlink only this board's tty can have (by-id links are anyway)
    trust: TrustSettings | None = None  # None: the default trust directory, nothing unsigned
    hl7: Any = None  # bedside.hl7.link.Hl7Settings: send HL7 to the central station (--hl7 HOST:PORT)


def default_db_path() -> str:
    """``$STATE_DIRECTORY/bedside.db`` under systemd (StateDirectory=), else ``bedside.db``."""
    state = os.environ.get("STATE_DIRECTORY", "").split(":")[0]
    return os.path.join(state, "bedside.db") if state else "bedside.db"


#: Longest refusal reason carried by the alarm message and each window's detail (the full text is logged).
MAX_REASON_CHARS = 200


def _short(text: str, limit: int = MAX_REASON_CHARS) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "\u2026"


def load_bundle_or_reason(path: str | None, trt_cache_dir: str | None,
                          trust: TrustSettings | None = None) -> tuple[Bundle | None, str | None]:
    """The verified bundle, or None and why it was refused (the engine raises bundle_refused).

    Never raises: any failure while loading (a BundleError naming its check, or anything unexpected such
    as a missing onnxruntime) becomes the reason, so a monitor never exits into a restart loop over its model.
    """
    if not path:
        return None, "no model bundle configured (--model or BEDSIDE_MODEL)"
    try:
        return load_bundle(path, trt_cache_dir=trt_cache_dir, trust=trust), None
    except BundleError as exc:
        log.error("%s", exc)
        return None, _short(str(exc))
    except Exception as exc:  # not a refusal we foresaw: still monitor without the model
        log.exception("model bundle %s could not be loaded", path)
        return None, _short(f"model bundle refused (load failed): {type(exc).__name__}: {exc}")


def load_config_or_reason(path: str | None) -> tuple[AlarmConfig, str | None]:
    """The configured alarm settings, or the packaged defaults and why the configured file was refused.

    A bedside must not exit into a restart loop over a settings file: the defaults (bedside/alarms.toml,
    the manufacturer's preset) stay in force and the technical alarm ``settings_refused`` says so
    until a restart with a good file.
    """
    try:
        return load_alarm_config(path), None
    except AlarmConfigError as exc:
        log.error("%s; the packaged default alarm settings are in force", exc)
        return load_alarm_config(None), _short(f"{exc}; default settings in force")


def build_monitor_engine(opts: MonitorOptions, notifier: Notifier | None = None) -> Engine:
    config, settings_refused = load_config_or_reason(opts.alarms)
    bundle, refused = load_bundle_or_reason(opts.model, opts.trt_cache_dir, opts.trust)
    outbox = None
    if opts.hl7 is not None:
        from bedside.hl7.link import open_outbox
        outbox = open_outbox(opts.hl7, bundle)
    store = Store(opts.db, outbox=outbox)
    source = DeviceSource(opts.port, opts.protocol, baudrate=opts.baudrate, lead_map=opts.lead_map,
                          reconnect=opts.reconnect, stable_port=opts.stable_port)
    settings = EngineSettings(bed_id=opts.bed_id, encounter_id=opts.encounter_id, hop_s=opts.hop_s,
                              resume=False, max_batch=8)
    engine = Engine(source, store, config, settings, bundle=bundle, bundle_error=refused,
                    notifier=notifier or Notifier.from_env(), settings_error=settings_refused)
    engine.add_condition_source(source.conditions)  # device_refused: a port opened and not used
    if outbox is not None:
        from bedside.hl7.link import start_link
        start_link(engine, outbox, opts.hl7)  # engine.close() stops the sender; the outbox keeps the rest
    return engine
