"""Replay scheduling compared in one run: streaming conditioning and overlapped inference on and off, batch sizes.

Each configuration replays the same synthetic 12-lead 500 Hz record (scripts/bench_replay.py's
``make_record``, one-hour segments) through the engine exactly as ``bedside replay --fast`` runs it, into a
fresh SQLite log; configurations are interleaved over ``--rounds`` rounds (the shared machine's load drifts)
and the fastest round of each is reported. The baseline, measured in the same run: the engine with both
off (every window conditioned by ``condition()``, scored on the engine's thread), and the model alone
(``Bundle.predict`` on conditioned windows in batches of ``max_batch``). A 1-2 h record is enough: the
engine's cost per window is flat over a record (120 s chunks), so 24 h = 24 x the 1 h figure.

    .venv/bin/python scripts/bench_replay_sched.py [--hours 1] [--model linear|paper|paper-int8|PATH ...]
        [--rounds 2] [--batches 8,16,32] [--intra-op 1,2] [--configs ff16,tf16,ft16,tt16]

A configuration ``<stream t/f><overlap t/f><max_batch>[w<workers>][i<intra-op threads>]``: ``tf16`` = streaming
on, overlap off, batches of 16; ``tt16w2i1`` = both on, 2 inference workers of 1 onnxruntime thread each
(without ``i``: ``--intra-op``).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from bench_replay import BENCH, make_record, resolve_model  # noqa: E402  (scripts/bench_replay.py)
from cpu_flags import cpu_line  # noqa: E402  (scripts/cpu_flags.py)

#: stages on the engine's thread (its wall time); inference runs on the worker when overlapped
ENGINE_STAGES = ("read", "preprocess", "heart_rate", "alarms", "logging", "publish")


def load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def session(threads: int, arena: bool = True):
    """bedside.bundle.REPLAY_SESSION with ``threads`` onnxruntime intra-op threads and the arena on or off."""
    from dataclasses import replace

    from bedside.bundle import REPLAY_SESSION

    return replace(REPLAY_SESSION, intra_op_threads=threads, memory_arena=arena)


def parse_config(text: str, intra_op: int) -> tuple[bool, bool, int, int, int, bool]:
    """``tt16w2i1a0`` -> (stream, overlap, max_batch, inference workers, intra-op threads, memory arena)."""
    m = re.fullmatch(r"([tf])([tf])(\d+)(?:w(\d+))?(?:i(\d+))?(?:a([01]))?", text)
    if m is None:
        raise SystemExit(f"--configs: {text!r} is not <t|f><t|f><batch>[w<workers>][i<threads>][a<0|1>], "
                         "e.g. tt16w2i1a0")
    return (m[1] == "t", m[2] == "t", int(m[3]), int(m[4] or 1), int(m[5] or intra_op), m[6] != "0")


def replay_once(record: Path, model: Path, stream: bool, overlap: bool, max_batch: int, workers: int,
                intra_op: int, arena: bool) -> dict:
    from bedside.replay import ReplayOptions, build_replay_engine
    from bedside.trust import TrustSettings

    db = BENCH / "sched.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    engine = build_replay_engine(ReplayOptions(record=str(record), model=str(model), db=str(db), resume=False,
                                               max_batch=max_batch, stream_condition=stream, overlap_inference=overlap,
                                               inference_workers=workers, session_settings=session(intra_op, arena),
                                               trust=TrustSettings(None, allow_unsigned=True)))
    t, cpu = time.perf_counter(), time.process_time()
    summary = engine.run()
    wall, cpu = time.perf_counter() - t, time.process_time() - cpu
    engine.close()
    return dict(wall=wall, cpu=cpu, windows=summary.windows, scored=summary.scored, timings=summary.timings,
                transitions=[(c.alarm, c.state.value, round(c.t_s, 3)) for c in summary.transitions],
                signal_s=summary.signal_s)


def inference_only(model: Path, record: Path, max_batch: int, threads: int, n_windows: int = 256) -> float:
    """ms per window of Bundle.predict alone (``threads`` intra-op threads) on conditioned windows of the record,
    batches of max_batch."""
    from bedside.bundle import load_bundle
    from bedside.preprocess import input_samples_for_window, preprocess_window
    from bedside.records import open_record
    from bedside.trust import TrustSettings

    bundle = load_bundle(model, trust=TrustSettings(None, allow_unsigned=True), session_settings=session(threads))
    rec = open_record(record, bundle.recipe)
    need, hop = input_samples_for_window(rec.fs_hz, bundle.recipe), int(5 * rec.fs_hz)
    x = np.stack([preprocess_window(rec.read(k * hop, k * hop + need), rec.fs_hz, bundle.recipe)
                  for k in range(max_batch)])
    bundle.predict(x)  # warm-up
    assert bundle.session.get_session_options().intra_op_num_threads == threads
    t = time.perf_counter()
    for _ in range(n_windows // max_batch):
        bundle.predict(x)
    return 1000 * (time.perf_counter() - t) / (n_windows // max_batch * max_batch)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=int, default=1)
    parser.add_argument("--model", nargs="+", default=["linear"], help="linear, paper, paper-int8 or bundle paths")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batches", default="16", help="max_batch values tried with both on, e.g. 8,16,32")
    parser.add_argument("--intra-op", default="2", help="onnxruntime intra-op threads tried, e.g. 1,2")
    parser.add_argument("--configs", default="", help="instead of the default set: e.g. ff16,tf16,ft16,tt16 "
                                                      "(stream t/f, overlap t/f, max_batch); the first is the baseline")
    args = parser.parse_args()
    print(cpu_line(), flush=True)
    print(f"start: {load()}", flush=True)
    record = make_record(args.hours)
    hours_s = args.hours * 3600
    batches = [int(b) for b in args.batches.split(",")]
    for name in args.model:
        model = resolve_model(name)
        for threads in [int(t) for t in args.intra_op.split(",")]:
            configs = [(False, False, 16, 1, threads, True), (True, False, 16, 1, threads, True),
                       (False, True, 16, 1, threads, True)]
            configs += [(True, True, b, 1, threads, True) for b in batches]
            if args.configs:
                configs = [parse_config(c, threads) for c in args.configs.split(",")]
            best: dict[tuple, dict] = {}
            replay_once(record, model, False, False, 16, 1, threads, True)  # warm-up: imports, detector, page cache (not counted)
            for r in range(args.rounds):
                for cfg in configs:
                    out = replay_once(record, model, *cfg)
                    print(f"  round {r} {name} stream={cfg[0]} overlap={cfg[1]} batch={cfg[2]} workers={cfg[3]} "
                          f"intra-op {cfg[4]} arena={cfg[5]}: "
                          f"{out['wall']:.1f} s wall, {out['cpu']:.1f} s CPU ({load()})", flush=True)
                    if cfg not in best or out["wall"] < best[cfg]["wall"]:
                        best[cfg] = out
            ref = best[configs[0]]
            infer_ms = {b: inference_only(model, record, b, threads) for b in sorted({16, *batches})}
            print(f"\n== {name} ({model.name}), intra-op threads {threads} (unless a row says), {ref['windows']} windows "
                  f"({ref['scored']} scored) of a {args.hours} h record, fastest of {args.rounds} rounds; {load()}")
            print("inference alone (Bundle.predict, same run): "
                  + ", ".join(f"batch {b}: {ms:.2f} ms/window" for b, ms in infer_ms.items()))
            head = (f"{'stream':>6} {'overlap':>7} {'batch':>5} {'wk':>2} {'th':>2} {'arena':>5} {'wall s':>7} {'x real':>7} {'24 h s':>7} "
                    f"{'vs base':>7} {'CPU s':>6} | ")
            print(head + " ".join(f"{s[:10]:>10}" for s in (*ENGINE_STAGES, "inference", "infer_wait"))
                  + " | non-inference ms/window")
            for cfg, out in best.items():
                n = out["windows"]
                tm = out["timings"]
                same = "" if out["transitions"] == ref["transitions"] and out["scored"] == ref["scored"] else " DIFFERS"
                cells = []
                for stage in (*ENGINE_STAGES, "inference", "inference_wait"):
                    cells.append(f"{1000 * tm.get(stage, 0.0) / n:5.2f} {100 * tm.get(stage, 0.0) / out['wall']:3.0f}%")
                non_inf = 1000 * sum(tm.get(s, 0.0) for s in ENGINE_STAGES) / n
                print(f"{cfg[0]!s:>6} {cfg[1]!s:>7} {cfg[2]:>5} {cfg[3]:>2} {cfg[4]:>2} {cfg[5]!s:>5} {out['wall']:7.1f} {hours_s / out['wall']:7.0f} "
                      f"{out['wall'] * 24 / args.hours:7.0f} {ref['wall'] / out['wall']:6.2f}x {out['cpu']:6.1f} | "
                      + " ".join(cells)
                      + f" | {non_inf:.2f}{same}")
            print("(stage cells: ms per window and share of the wall time; inference overlaps the engine's "
                  "stages when overlap=True, and is the sum over the workers' calls, so over 100 % with 2 workers; "
                  "infer_wait is the engine waiting for it)", flush=True)
    print(f"end: {load()}")


if __name__ == "__main__":
    main()
