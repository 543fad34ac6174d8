"""QRS detection and heart rate on MIT-BIH record 100, scored the EC57 way (beat-by-beat, 150 ms, first 5 min out).

Compares the detectors run bare on the whole record (NeuroKit2 with its own cleaning, bedside.qrs with the
recipe's baseline filters, wfdb XQRS) with the engine's path (10 s windows every 5 s, the recipe's 100 Hz baseline-free lead, stitched beats),
and the engine's heart rate with the same RR rule applied to the reference beats. Goal: the engine path
finds at least as many beats as bare NeuroKit2, at >= 2,000x real time. Each detector is run once untimed
first (imports, first-call set-up), then timed ``--repeat`` times (the best and the median are printed).

    .venv/bin/python scripts/bench_qrs.py [--record ../shared/data/records/100] [--lead 0] [--repeat 3]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import wfdb
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from cpu_flags import cpu_line  # noqa: E402  (scripts/cpu_flags.py)

from bedside.alarm_config import load_alarm_config
from bedside.heart_rate import BEAT_SYMBOLS, detect_qrs, heart_rate_bpm, score_beats, windowed_beats

DEFAULT = Path(__file__).resolve().parents[2] / "shared" / "data" / "records" / "100"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--record", default=str(DEFAULT), help="WFDB record with .atr reference annotations")
    parser.add_argument("--lead", type=int, default=0, help="channel to detect on (0 = MLII for record 100)")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs of each detector")
    args = parser.parse_args()
    print(cpu_line())
    logging.getLogger("wfdb").setLevel(logging.ERROR)
    rec = wfdb.rdrecord(args.record, channels=[args.lead])
    ann = wfdb.rdann(args.record, "atr")
    x, fs = rec.p_signal[:, 0].astype(np.float32), float(rec.fs)
    duration_s = len(x) / fs
    ref = np.array([s for s, sym in zip(ann.sample, ann.symbol) if sym in BEAT_SYMBOLS])
    console = Console(width=200)
    console.print(f"{Path(args.record).name} lead {rec.sig_name[0]}: {duration_s / 60:.1f} min at {fs:g} Hz, "
                  f"{len(ref)} reference beats ({int((ref >= 300 * fs).sum())} scored after the first 5 min)")

    settings = load_alarm_config().heart_rate
    rows = []
    for name, run in [
        ("NeuroKit2 bare (ecg_clean + ecg_findpeaks, whole record)", lambda: detect_qrs(x, fs, "neurokit")),
        ("wfdb XQRS bare (whole record)", lambda: detect_qrs(x, fs, "xqrs")),
        ("engine path, gradient = bedside.qrs, the default (10 s windows, 100 Hz conditioned lead)",
         lambda: np.round(windowed_beats(x, fs, replace(settings, detector="gradient"))[0] * fs)),
        ("engine path, neurokit (NeuroKit2 itself, same windows)",
         lambda: np.round(windowed_beats(x, fs, replace(settings, detector="neurokit"))[0] * fs)),
        ("bedside.qrs bare (recipe baseline filters + gradient_r_peaks, whole record)",
         lambda: detect_qrs(x, fs, "gradient")),
        ("engine path, xqrs (10 s windows, 100 Hz conditioned lead)",
         lambda: np.round(windowed_beats(x, fs, replace(settings, detector="xqrs"))[0] * fs)),
    ]:
        beats = run()  # untimed: imports and first-call set-up
        times = []
        for _ in range(args.repeat):
            t = time.perf_counter()
            run()
            times.append(time.perf_counter() - t)
        s = score_beats(ref, beats, fs)
        rows.append((name, s, min(times), statistics.median(times), len(beats)))

    table = Table(title="EC57 beat-by-beat (150 ms window, first 5 min excluded, beats only)")
    for col in ("detector", "beats", "TP", "FP", "FN", "Se %", "+P %", "best s", "x real time (best)",
                "x real time (median)"):
        table.add_column(col, justify="right" if col != "detector" else "left")
    for name, s, best, median, n in rows:
        table.add_row(name, str(n), str(s.tp), str(s.fp), str(s.fn), f"{100 * s.sensitivity:.2f}",
                      f"{100 * s.positive_predictivity:.2f}", f"{best:.2f}", f"{duration_s / best:,.0f}",
                      f"{duration_s / median:,.0f}")
    console.print(table)
    bare, engine = rows[0], rows[2]
    console.print(f"goal: engine path TP {engine[1].tp} >= bare NeuroKit2 TP {bare[1].tp}: "
                  f"{'met' if engine[1].tp >= bare[1].tp else 'NOT met'}; engine path {duration_s / engine[2]:,.0f}x "
                  f"real time (best) >= 2,000x: {'met' if duration_s / engine[2] >= 2000 else 'NOT met'}")

    _, rates = windowed_beats(x, fs, settings)
    ref_t = ref / fs
    err = np.array([abs(bpm - heart_rate_bpm(ref_t[ref_t < t_end - 0.3])) for t_end, bpm in rates
                    if t_end >= 300 and bpm is not None])
    console.print(f"Heart rate (engine, every 5 s after the first 5 min, {len(err)} windows) against the same RR rule "
                  f"on the reference beats: mean |error| {err.mean():.2f} bpm, 95th percentile "
                  f"{np.percentile(err, 95):.2f} bpm, max {err.max():.2f} bpm")


if __name__ == "__main__":
    main()
