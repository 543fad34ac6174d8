"""Soak benchmark: an hour of signal replayed as fast as possible with the terminal UI attached.

Each phase runs in its own process so resident memory is its own:

- ``engine``: the headless engine alone (the baseline, measured in the same run);
- ``ui``: the same replay with ``MonitorApp`` attached (headless Textual ``run_test``, 160x48).

Both sample resident memory (VmRSS) and tracemalloc's traced Python memory about once a second of
wall time, against signal time; the UI phase also records its frame rate and how late its frames
are (event-loop lag: the UI thread never blocks). The record is s0010_re (real PTB 12-lead ECG,
../shared/data) tiled to ``--hours`` and resampled to 500 Hz, written to a temporary folder.

    .venv/bin/python scripts/bench_ui_soak.py [--hours 1] [--model BUNDLE] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RECORD = REPO.parent / "shared" / "data" / "records" / "s0010_re"
FS_HZ = 500.0
SIZE = (160, 48)  # terminal of the UI phases (--size)


def rss_mb() -> float:
    """Resident set size of this process (MiB), from /proc."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def make_record(out_dir: Path, hours: float) -> str:
    """s0010_re tiled to ``hours`` at 500 Hz, 12 canonical leads, as a WFDB record; returns its path."""
    import wfdb
    from scipy.signal import resample_poly

    sys.path.insert(0, str(REPO))
    from bedside.leads import CANONICAL_LEADS
    from bedside.records import open_record

    rec = open_record(RECORD)
    x = resample_poly(rec.read(0, rec.n_samples), 1, int(rec.fs_hz // FS_HZ), axis=1)
    reps = int(np.ceil(hours * 3600 * FS_HZ / x.shape[1]))
    n = int(hours * 3600 * FS_HZ)
    signal = np.tile(x, (1, reps))[:, :n]
    wfdb.wrsamp("soak", fs=FS_HZ, units=["mV"] * 12, sig_name=list(CANONICAL_LEADS), p_signal=signal.T,
                fmt=["16"] * 12, adc_gain=[1000.0] * 12, baseline=[0] * 12, write_dir=str(out_dir))
    return str(out_dir / "soak")


class Sampler:
    """Memory samples (wall s, signal s, RSS MiB, traced MiB) about every ``every_s`` seconds."""

    def __init__(self, signal_s, every_s: float = 1.0) -> None:
        self.signal_s, self.every_s = signal_s, every_s
        self.rows: list[tuple[float, float, float, float]] = []
        self.t0 = time.perf_counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> None:
        self.rows.append((time.perf_counter() - self.t0, float(self.signal_s()), rss_mb(),
                          tracemalloc.get_traced_memory()[0] / 2**20))

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            self.sample()

    def __enter__(self) -> Sampler:
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()


def build(record: str, model: str, db: str, speed: float | None = None):
    from bedside.replay import ReplayOptions, build_replay_engine

    from bedside.trust import TrustSettings

    trust_dir = os.environ.get("BEDSIDE_TRUST_DIR")  # the parent trusts its test bundle's key only here
    trust = TrustSettings(Path(trust_dir)) if trust_dir else None
    return build_replay_engine(ReplayOptions(record=record, model=model, db=db, speed=speed, bed_id="soak",
                                             resume=False, trust=trust))


def phase_realtime(record: str, model: str, db: str, seconds: float, ui: bool) -> dict:
    """CPU share of the whole process (all threads) over ``seconds`` of a real-time (1x) replay."""
    warmup_s = 5.0
    if not ui:
        engine = build(record, model, db, speed=1.0)
        engine.start()
        time.sleep(warmup_s)
        c0, t0 = time.process_time(), time.perf_counter()
        time.sleep(seconds)
        cpu, wall = time.process_time() - c0, time.perf_counter() - t0
        engine.stop()
        engine.close()
        return {"cpu_share": cpu / wall, "rss_mb": rss_mb()}
    from bedside.ui.app import MonitorApp

    app = MonitorApp(lambda: build(record, model, db, speed=1.0), bed_id="soak", user="bench")

    async def main() -> dict:
        async with app.run_test(headless=True, size=SIZE) as pilot:
            await pilot.pause(warmup_s)
            c0, t0, f0 = time.process_time(), time.perf_counter(), app.frames
            await pilot.pause(seconds)
            cpu, wall, frames = time.process_time() - c0, time.perf_counter() - t0, app.frames - f0
            result = {"cpu_share": cpu / wall, "rss_mb": rss_mb(), "fps": frames / wall,
                      "tick_ms": 1e3 * app.tick_total_s / max(1, app.frames)}
            await pilot.press("ctrl+q")
        return result

    return asyncio.run(main())


def phase_engine(record: str, model: str, db: str, trace: bool) -> dict:
    if trace:
        tracemalloc.start()
    engine = build(record, model, db)
    with Sampler(lambda: engine.summary.signal_s) as s:
        summary = engine.run()
    engine.close()
    return {"wall_s": s.rows[-1][0], "signal_s": summary.signal_s, "windows": summary.windows, "samples": s.rows}


def phase_ui(record: str, model: str, db: str, trace: bool) -> dict:
    from bedside.ui.app import MonitorApp

    if trace:
        tracemalloc.start()
    holder: dict = {}

    def factory():
        holder["engine"] = build(record, model, db)
        return holder["engine"]

    app = MonitorApp(factory, bed_id="soak", user="bench", fps=15)
    lags: list[float] = []
    idle_lags: list[float] = []

    async def measure_lag(out: list[float], done) -> None:
        """How late the UI's event loop wakes from 0.1 s sleeps (it never blocks, or this grows)."""
        loop = asyncio.get_running_loop()
        expected = loop.time() + 0.1
        while not done():
            await asyncio.sleep(0.1)
            now = loop.time()
            out.append(max(0.0, now - expected))
            expected = now + 0.1

    async def main() -> dict:
        async with app.run_test(headless=True, size=SIZE) as pilot:
            with Sampler(lambda: app.state.now_s) as s:
                await measure_lag(lags, lambda: bool(holder) and app._engine_thread is not None
                                  and not app._engine_thread.is_alive())
                await pilot.pause(0.5)
            frames, history = app.frames, len(app.state.history)
            tick_ms = (1e3 * app.tick_total_s / max(1, frames), 1e3 * app.tick_max_s)
            t_idle = time.perf_counter()
            await measure_lag(idle_lags, lambda: time.perf_counter() - t_idle > 3.0)  # same UI, engine done
            buffer = {"capacity": app.buffer.capacity, "blocks": app.buffer.blocks}
            await pilot.press("ctrl+q")
        engine = holder["engine"]
        return {"wall_s": s.rows[-1][0], "signal_s": engine.summary.signal_s, "windows": engine.summary.windows,
                "frames": frames, "history": history, "buffer": buffer, "samples": s.rows, "tick_ms": tick_ms,
                "lag_ms": lag_stats(lags), "idle_lag_ms": lag_stats(idle_lags),
                "engine_failed": app.engine_failed, "listener_errors": engine.summary.listener_errors}

    return asyncio.run(main())


def lag_stats(lags: list[float]) -> dict[str, float]:
    a = 1e3 * np.asarray(lags or [0.0])
    return {"p50": float(np.median(a)), "p99": float(np.percentile(a, 99)), "max": float(a.max())}


def flatness(rows: list) -> dict:
    """RSS and traced memory at each quarter of the run and the slope over its second half (MiB per hour of signal)."""
    a = np.asarray(rows, dtype=float)
    sig, rss, traced = a[:, 1], a[:, 2], a[:, 3]
    end = sig.max()
    quarters = {f"{int(q * 100)}%": (float(np.interp(q * end, sig, rss)), float(np.interp(q * end, sig, traced)))
                for q in (0.25, 0.5, 0.75, 1.0)}
    half = sig >= end / 2
    slope = lambda y: float(np.polyfit(sig[half] / 3600, y[half], 1)[0]) if half.sum() > 2 else float("nan")
    return {"quarters": quarters, "rss_slope_mb_per_h": slope(rss), "traced_slope_mb_per_h": slope(traced),
            "rss_peak": float(rss.max()), "traced_peak": float(traced.max())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hours", type=float, default=1.0, help="hours of signal to replay [1]")
    ap.add_argument("--model", help="model bundle (.onnx); default: a small real test bundle built here")
    ap.add_argument("--json", help="write all results (with every memory sample) to this file")
    ap.add_argument("--tracemalloc", action="store_true",
                    help="also trace Python allocations (slows both phases several times)")
    ap.add_argument("--realtime-s", type=float, default=30.0,
                    help="also measure the CPU share of a real-time (1x) replay for this long, with and without "
                         "the UI (0: skip) [30]")
    ap.add_argument("--size", default="160x48", help="terminal size of the UI phases, COLSxROWS [160x48]")
    ap.add_argument("--phase", choices=["engine", "ui", "rt-engine", "rt-ui"], help=argparse.SUPPRESS)
    ap.add_argument("--record", help=argparse.SUPPRESS)
    args = ap.parse_args()
    global SIZE
    SIZE = tuple(int(v) for v in args.size.lower().split("x"))  # type: ignore[assignment]
    if args.phase:  # child process: one phase, JSON on stdout
        db = tempfile.mktemp(suffix=".db", dir=Path(args.record).parent)
        if args.phase.startswith("rt-"):
            result = phase_realtime(args.record, args.model, db, args.realtime_s, args.phase == "rt-ui")
        else:
            result = (phase_engine if args.phase == "engine" else phase_ui)(args.record, args.model, db,
                                                                            args.tracemalloc)
        print(json.dumps(result))
        return
    if not (RECORD.with_suffix(".hea")).is_file():
        sys.exit(f"the real record {RECORD} is missing (see ../shared/data/README.md)")
    from rich.console import Console
    from rich.table import Table

    console = Console()
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        with console.status(f"writing {args.hours:g} h of 12-lead signal at {FS_HZ:g} Hz"):
            record = make_record(tmp_path, args.hours)
        model = args.model
        env = dict(os.environ)
        if not model:
            sys.path.insert(0, str(REPO / "tests"))
            from bundles import make_bundle

            from bundles import fixture_signing_key
            from cryptography.hazmat.primitives import serialization

            model = str(make_bundle(tmp_path / "model.onnx"))
            trusted = tmp_path / "trusted"  # the bundle is signed with the tests' key: trust it, and only here
            trusted.mkdir()
            (trusted / "test-signing.pub").write_bytes(fixture_signing_key().public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
            env["BEDSIDE_TRUST_DIR"] = str(trusted)
            console.print("model: a small real test bundle (tests/bundles.make_bundle), its key trusted for this run")
        results = {}
        phases = ["engine", "ui"] + (["rt-engine", "rt-ui"] if args.realtime_s > 0 else [])
        for phase in phases:
            what = (f"{args.realtime_s:g} s in real time" if phase.startswith("rt-")
                    else f"{args.hours:g} h as fast as possible")
            with console.status(f"phase {phase}: replaying {what}"):
                cmd = [sys.executable, __file__, "--phase", phase, "--record", record, "--model", model,
                       "--realtime-s", str(args.realtime_s), "--size", args.size]
                out = subprocess.run(cmd + ["--tracemalloc"] * args.tracemalloc, capture_output=True, text=True,
                                     cwd=REPO, env=env)
            if out.returncode:
                sys.exit(f"phase {phase} failed:\n{out.stderr[-3000:]}")
            results[phase] = json.loads(out.stdout.strip().splitlines()[-1])
            if "samples" in results[phase]:
                results[phase]["memory"] = flatness(results[phase]["samples"])
    e, u = results["engine"], results["ui"]
    traced = "tracemalloc on" if args.tracemalloc else "tracemalloc off: traced column 0"
    t = Table(title=f"Soak: {args.hours:g} h of signal, fast replay, {os.cpu_count()} CPUs, UI {args.size}, {traced}")
    for col in ("", "engine alone (baseline)", "engine + UI", "ratio"):
        t.add_column(col)
    t.add_row("wall time (s)", f"{e['wall_s']:.1f}", f"{u['wall_s']:.1f}", f"{u['wall_s'] / e['wall_s']:.2f}x")
    t.add_row("speed (x real time)", f"{e['signal_s'] / e['wall_s']:.0f}", f"{u['signal_s'] / u['wall_s']:.0f}", "")
    t.add_row("windows", str(e["windows"]), str(u["windows"]), "")
    for q in ("25%", "50%", "75%", "100%"):
        er, et = e["memory"]["quarters"][q]
        ur, ut = u["memory"]["quarters"][q]
        t.add_row(f"RSS / traced MiB at {q} of signal", f"{er:.0f} / {et:.1f}", f"{ur:.0f} / {ut:.1f}", "")
    t.add_row("RSS slope, 2nd half (MiB/h)", f"{e['memory']['rss_slope_mb_per_h']:+.1f}",
              f"{u['memory']['rss_slope_mb_per_h']:+.1f}", "")
    t.add_row("traced slope, 2nd half (MiB/h)", f"{e['memory']['traced_slope_mb_per_h']:+.2f}",
              f"{u['memory']['traced_slope_mb_per_h']:+.2f}", "")
    t.add_row("UI frames drawn (fps)", "", f"{u['frames']} ({u['frames'] / u['wall_s']:.1f})", "")
    lag, idle = u["lag_ms"], u["idle_lag_ms"]
    t.add_row("UI event-loop lag p50 / p99 / max (ms)", "",
              f"{lag['p50']:.0f} / {lag['p99']:.0f} / {lag['max']:.0f}", "")
    t.add_row("  same, UI idle after the replay (ms)", "",
              f"{idle['p50']:.0f} / {idle['p99']:.0f} / {idle['max']:.0f}", "")
    t.add_row("UI frame work: mean / max per frame (ms)", "", f"{u['tick_ms'][0]:.1f} / {u['tick_ms'][1]:.0f}", "")
    t.add_row("engine failed / listener errors", "", f"{u['engine_failed']} / {u['listener_errors']}", "")
    if "rt-ui" in results:
        re_, ru = results["rt-engine"], results["rt-ui"]
        t.add_row(f"real time (1x), {args.realtime_s:g} s: CPU share of one core", f"{100 * re_['cpu_share']:.1f}%",
                  f"{100 * ru['cpu_share']:.1f}%", f"{ru['cpu_share'] / max(re_['cpu_share'], 1e-9):.1f}x")
        t.add_row("real time (1x): RSS (MiB)", f"{re_['rss_mb']:.0f}", f"{ru['rss_mb']:.0f}", "")
        t.add_row("real time (1x): frames/s, frame work (ms)", "", f"{ru['fps']:.1f}, {ru['tick_ms']:.1f}", "")
    console.print(t)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
