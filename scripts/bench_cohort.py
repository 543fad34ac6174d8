"""Benchmark of the cohort tools: `trainer synth` and `trainer prepare` on the default cohort.

Prints wall and CPU seconds, and ratios against baselines measured in the same run:
- the ECG writer (wfdb's own writers with a cached field list) against `wfdb.wrsamp` per record;
- `prepare` with N worker processes against 1.

Usage: python scripts/bench_cohort.py [--subjects 200] [--workers 2] [--keep DIR]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np


def cpu_s() -> float:
    """CPU seconds of this process and its waited-for children."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def timed(fn, *args, **kwargs):
    w0, c0 = time.perf_counter(), cpu_s()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - w0, cpu_s() - c0


def bench_writer(tmp: Path, n: int = 40) -> tuple[float, float]:
    from trainer import synth_ecg

    rng = np.random.default_rng(0)
    x = synth_ecg.synth_ecg(synth_ecg.ecg_state(synth_ecg.draw_traits(rng), 0.3, 0.2, 0.1, rng), rng)
    when = dt.datetime(2150, 1, 1, 12)
    synth_ecg.write_ecg(tmp / "fast", 39999999, x, when)  # the first record takes the full wrsamp path
    t0 = time.perf_counter()
    for k in range(n):
        synth_ecg.write_ecg(tmp / "fast", 40000000 + k, x, when)
    fast = (time.perf_counter() - t0) / n
    t0 = time.perf_counter()
    for k in range(n):
        synth_ecg.write_ecg_wrsamp(tmp / "ref", 40000000 + k, x, when)
    ref = (time.perf_counter() - t0) / n
    return fast * 1e3, ref * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--subjects", type=int, default=200)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--keep", type=Path, default=None, help="write the cohort and cache here and keep them")
    args = ap.parse_args()
    from trainer.cache import CohortCache
    from trainer.prepare import prepare_cohort
    from trainer.synth import write_cohort

    base = args.keep or Path(tempfile.mkdtemp(prefix="bench_cohort_"))
    base.mkdir(parents=True, exist_ok=True)
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start; workers={args.workers}")
    fast_ms, ref_ms = bench_writer(base / "writer")
    print(f"ECG writer: {fast_ms:.1f} ms/record vs wfdb.wrsamp {ref_ms:.1f} ms/record ({ref_ms / fast_ms:.1f}x faster)")

    cohort = base / "cohort"
    shutil.rmtree(cohort, ignore_errors=True)
    summary, wall, cpu = timed(write_cohort, cohort, args.subjects, 0, workers=args.workers)
    print(f"synth {args.subjects} subjects: {wall:.1f} s wall, {cpu:.1f} s CPU ({summary['ecg_records']} ECGs, "
          f"{summary['cxr_images']} images)")

    results = {}
    for workers in (1, args.workers) if args.workers > 1 else (1,):
        out = base / f"cache_w{workers}"
        shutil.rmtree(out, ignore_errors=True)
        manifest, wall, cpu = timed(prepare_cohort, cohort, out, workers=workers, progress=False)
        pairs = sum(manifest["counts"].values())
        results[workers] = wall
        print(f"prepare, {workers} worker(s): {wall:.1f} s wall, {cpu:.1f} s CPU, {pairs} pairs, "
              f"{1e3 * wall / pairs:.1f} ms/pair wall; counts {manifest['counts']}")
    if len(results) == 2:
        print(f"prepare speed-up with {args.workers} workers: {results[1] / results[args.workers]:.2f}x")
    CohortCache(base / "cache_w1")
    print(f"load average {os.getloadavg()[0]:.1f} at end")
    if args.keep is None:
        shutil.rmtree(base)


if __name__ == "__main__":
    main()
