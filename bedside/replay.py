"""``bedside replay``: the engine on a WFDB record (any rate, multi-segment, read in chunks).

A replay refuses what it cannot use before it starts (a record without the model's leads or too
short, a bundle that fails verification, an unusable alarm settings file) with the reason and the
fix. An interrupted replay of the same record, bundle and settings into the same database resumes
its session where the log ends instead of writing its events twice.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import Any

from bedside.alarm_config import load_alarm_config
from bedside.bundle import REPLAY_SESSION, SessionSettings, load_bundle
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
    # windows per inference call, and calls in flight at once on their own worker threads (each with
    # REPLAY_SESSION's one onnxruntime thread): chosen by measurement on 2 cores (BENCHMARKS.md, "Replay
    # scheduling": 1.05-1.06x faster than 1 worker with 2 threads, for the paper-size and the demo bundle;
    # batches of 4 gain 4 % more on the paper-size model but lose 10 % on the small demo model)
    max_batch: int = 16
    overlap_inference: bool = True  # EngineSettings.overlap_inference (inference on a worker thread)
    inference_workers: int = 2  # EngineSettings.inference_workers
    stream_condition: bool = True  # EngineSettings.stream_condition (each sample conditioned once)
    trust: TrustSettings | None = None  # None: the default trust directory, nothing unsigned
    hl7: Any = None  # bedside.hl7.link.Hl7Settings: send HL7 to the central station (--hl7 HOST:PORT)
    session_settings: SessionSettings | None = None  # None: replay_session(), from the options above


def replay_session(opts: ReplayOptions) -> SessionSettings:
    """onnxruntime settings of a replay: REPLAY_SESSION's one thread per call when several calls run at once
    (a replay read as fast as possible on several inference workers); the bedside's default thread count when
    each batch is scored alone (a paced replay, or overlap off)."""
    if opts.speed is None and opts.overlap_inference and opts.inference_workers > 1:
        return REPLAY_SESSION
    return replace(REPLAY_SESSION, intra_op_threads=SessionSettings().intra_op_threads)


def build_replay_engine(opts: ReplayOptions) -> Engine:
    """Check everything, then build the engine (raises BedsideError subclasses with the fix)."""
    config = load_alarm_config(opts.alarms)
    bundle = load_bundle(opts.model, trust=opts.trust, session_settings=opts.session_settings or replay_session(opts))
    record = open_record(opts.record, bundle.recipe)
    source = RecordSource(record, speed=opts.speed, chunk_s=opts.chunk_s)
    outbox = None
    if opts.hl7 is not None:
        from bedside.hl7.link import open_outbox, start_link
        outbox = open_outbox(opts.hl7, bundle)
    store = Store(os.fspath(opts.db), outbox=outbox)
    settings = EngineSettings(bed_id=opts.bed_id, encounter_id=opts.encounter_id, hop_s=opts.hop_s,
                              resume=opts.resume, max_batch=opts.max_batch,
                              overlap_inference=opts.overlap_inference, inference_workers=opts.inference_workers,
                              stream_condition=opts.stream_condition)
    engine = Engine(source, store, config, settings, bundle=bundle)
    if outbox is not None:
        start_link(engine, outbox, opts.hl7)  # engine.close() drains the outbox (opts.hl7.drain_s) and stops
    return engine
