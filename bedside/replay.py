"""``bedside replay``: the engine on a WFDB record (any rate, multi-segment, read in chunks).

A replay refuses what it cannot use before it starts (a record without the model's leads or too
short, a bundle that fails verification, an unusable alarm settings file) with the reason and the
fix. An interrupted replay of the same record, bundle and settings into the same database resumes
its session where the log ends instead of writing its events twice.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from bedside.alarm_config import load_alarm_config
from bedside.bundle import load_bundle
from bedside.engine import Engine, EngineSettings
from bedside.records import open_record
from bedside.sources import RecordSource
from bedside.store import Store
from bedside.trust import TrustSettings


@dataclass(frozen=True)
class ReplayOptions:
    record: str
    model: str
    db: str
    speed: float | None = None  # None: as fast as possible
    hop_s: float | None = None
    bed_id: str = "replay"
    encounter_id: str | None = None
    alarms: str | None = None
    resume: bool = True
    chunk_s: float = 120.0
    max_batch: int = 16
    trust: TrustSettings | None = None  # None: the default trust directory, nothing unsigned


def build_replay_engine(opts: ReplayOptions) -> Engine:
    """Check everything, then build the engine (raises BedsideError subclasses with the fix)."""
    config = load_alarm_config(opts.alarms)
    bundle = load_bundle(opts.model, trust=opts.trust)
    record = open_record(opts.record, bundle.recipe)
    source = RecordSource(record, speed=opts.speed, chunk_s=opts.chunk_s)
    store = Store(os.fspath(opts.db))
    settings = EngineSettings(bed_id=opts.bed_id, encounter_id=opts.encounter_id, hop_s=opts.hop_s,
                              resume=opts.resume, max_batch=opts.max_batch)
    return Engine(source, store, config, settings, bundle=bundle)
