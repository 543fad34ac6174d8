"""``--hl7 HOST:PORT``: wire the outbox and the sender to an engine (replay, monitor, the UI).

    outbox = open_outbox(settings, bundle)            # before the Store: Store(db, outbox=outbox)
    engine = Engine(source, Store(db, outbox=outbox), ...)
    start_link(engine, outbox, settings)              # sender thread + central_unreachable
    ...
    engine.close()                                    # store.close() -> outbox.close() -> sender.stop(drain_s)
"""

from __future__ import annotations

from typing import Any

from bedside.hl7.outbox import Outbox
from bedside.hl7.sender import ALARM, Sender, SenderSettings
from bedside.hl7.settings import Hl7Settings


def open_outbox(settings: Hl7Settings, bundle: Any) -> Outbox:
    """The outbox for a Store (thresholds and validated labels from the bundle, or none)."""
    return Outbox.for_bundle(bundle, settings.outbox)


def start_link(engine: Any, outbox: Outbox, settings: Hl7Settings) -> Sender:
    """Start the sender for the engine's bed and register ``central_unreachable`` with the engine."""
    tech = engine.config.technical.get(ALARM)
    sender = Sender(engine.store.path, engine.settings.bed_id, SenderSettings(
        host=settings.host, port=settings.port, backoff_s=settings.backoff_s, max_backoff_s=settings.max_backoff_s,
        timeout_s=settings.timeout_s, unreachable_after_s=tech.after_s if tech is not None else 30.0,
        tls=settings.tls),
        outbox.settings)
    engine.add_condition_source(sender.condition)
    sender.start()
    outbox.on_close.append(lambda: sender.stop(settings.drain_s))
    return sender
