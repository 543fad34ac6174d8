"""Per-window cost of each signal-core stage, old vs new measured side by side in the same run.

The engine analyses a 10 s 12-lead window every 5 s. Stages, in ms per window (12 leads, 500 Hz by default):

- resample: scipy's resample_poly designing its FIR per call (old) vs the cached design (new, same taps);
- baseline: the cascaded median filters on the 1000 resampled samples, old (np.pad) vs new (manual edge pad);
- quality: window_quality with the old ``d ** 4`` kurtosis and boolean-mask spectrum sums vs the new;
- heart rate: QRS detection on the conditioned lead II, NeuroKit2 (old) vs bedside.qrs (new, the same peaks);
- condition: batch ``condition()`` per window, old (firwin per call) and new (cached), vs the streaming
  conditioner (bedside.stream_condition: each sample conditioned once, the hop pushed, the window cut);
- non-inference total: condition + quality + heart rate, old vs new.

Every variant runs over the same windows of a synthetic 12-lead record (trainer.synth_ecg); variants are
interleaved and repeated, and the median repeat is reported, so load from other jobs hits both sides alike.
The CPU flags and the load average are printed first.

    .venv/bin/python scripts/bench_stages.py [--fs 500] [--minutes 3] [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from bedside.alarm_config import load_alarm_config  # noqa: E402
from bedside.heart_rate import detect_qrs  # noqa: E402
from bedside.leads import LEAD_INDEX  # noqa: E402
from bedside.preprocess import (DEFAULT_RECIPE, condition, input_samples_for_window, remove_baseline,  # noqa: E402
                                resample, resample_ratio)
from bedside.quality import window_quality  # noqa: E402
from bedside.stream_condition import StreamConditioner  # noqa: E402
from cpu_flags import cpu_line  # noqa: E402  (scripts/cpu_flags.py)

# -- the previous implementations, kept here only as the baseline ---------------------------------------
def old_resample(x: np.ndarray, fs_in: float, fs_out: float) -> np.ndarray:
    """resample() before the cached design: resample_poly redesigns its firwin on every call."""
    from scipy.signal import resample_poly

    up, down = resample_ratio(fs_in, fs_out)
    return resample_poly(x, up, down, axis=-1).astype(np.float32)


def old_remove_baseline(y: np.ndarray, fs: float) -> np.ndarray:
    """remove_baseline() before this change: np.pad per median and copying casts (same values)."""
    from scipy.ndimage import median_filter

    from bedside.preprocess import median_kernel

    baseline = y
    for duration_s in DEFAULT_RECIPE.baseline_filters_s:
        k = median_kernel(duration_s, fs)
        h = k // 2
        padded = np.pad(baseline, ((0, 0), (h, h)), mode="edge")
        baseline = median_filter(padded.ravel(), size=k, mode="nearest").reshape(padded.shape)[:, h:h + y.shape[1]]
    return (y - baseline).astype(np.float32)


def old_condition(x: np.ndarray, fs: float) -> np.ndarray:
    """condition() before this change (the same values: checked in main)."""
    need = input_samples_for_window(fs)
    y = old_resample(x[:, :need], fs, DEFAULT_RECIPE.fs_hz)[:, :DEFAULT_RECIPE.window_samples]
    return old_remove_baseline(y, DEFAULT_RECIPE.fs_hz)


def old_window_quality(x, fs, c, settings):
    """window_quality with the old kurtosis (d ** 4) and the old boolean-mask spectrum sums."""
    import bedside.quality as q

    def kurtosis(v):
        d = v - v.mean(axis=1, keepdims=True)
        var = (d * d).mean(axis=1)
        return np.where(var > 0, (d ** 4).mean(axis=1) / np.maximum(var, 1e-30) ** 2, 0.0)

    def hf_power_ratio(v, fs_hz, hf_hz):
        import scipy.fft
        d = v - v.mean(axis=1, keepdims=True)
        spectrum = scipy.fft.rfft(d, axis=1)
        power = spectrum.real ** 2 + spectrum.imag ** 2
        f = np.fft.rfftfreq(v.shape[1], 1.0 / fs_hz)
        total = power[:, f > 0.5].sum(axis=1, dtype=np.float64)
        return power[:, f > hf_hz].sum(axis=1, dtype=np.float64) / np.maximum(total, 1e-12)

    saved = q.kurtosis, q.hf_power_ratio
    q.kurtosis, q.hf_power_ratio = kurtosis, hf_power_ratio
    try:
        return q.window_quality(x, fs, c, settings)
    finally:
        q.kurtosis, q.hf_power_ratio = saved


# -- measurement ------------------------------------------------------------------------------------------
def per_window_ms(run: Callable[[], int], results: dict[str, list[float]], name: str) -> None:
    """CPU ms per window of one pass (process time: every stage is single-threaded, and CPU time is what
    other jobs on a shared 2-core machine disturb least)."""
    t = time.process_time()
    n = run()
    results.setdefault(name, []).append((time.process_time() - t) / n * 1e3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fs", type=float, default=500.0, help="source rate, Hz")
    parser.add_argument("--minutes", type=float, default=3.0, help="length of the synthetic record")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved repeats (the median is shown)")
    args = parser.parse_args()
    print(cpu_line())
    print(f"Python {platform.python_version()}, numpy {np.__version__}, scipy {__import__('scipy').__version__}")

    from trainer.synth_ecg import draw_traits, ecg_state, synth_ecg

    rng = np.random.default_rng(13)
    fs = args.fs
    x = synth_ecg(ecg_state(draw_traits(rng), 0.1, 0.1, 0.2, rng), rng, n=int(args.minutes * 60 * fs), fs_hz=fs)
    need = input_samples_for_window(fs)
    hop = int(round(5 * fs))
    starts = list(range(0, x.shape[1] - need + 1, hop))
    windows = [np.ascontiguousarray(x[:, s:s + need]) for s in starts]
    q = load_alarm_config().quality
    conditioned = [condition(w, fs) for w in windows]
    assert all(np.array_equal(c, old_condition(w, fs)) for w, c in zip(windows, conditioned)), "old != new"
    resampled = [resample(w, fs, 100.0)[:, :1000] for w in windows]
    lead_ii = LEAD_INDEX["II"]
    for method in ("neurokit", "gradient"):  # imports outside the timing; both give the same peaks
        detect_qrs(conditioned[0][lead_ii], 100.0, method, clean=False)
    assert all(np.array_equal(detect_qrs(c[lead_ii], 100.0, "neurokit", clean=False),
                              detect_qrs(c[lead_ii], 100.0, "gradient", clean=False)) for c in conditioned)
    print(f"{len(windows)} windows of {need} samples x 12 leads at {fs:g} Hz, hop {hop}; "
          f"{args.repeats} interleaved repeats, median shown\n")

    def stream_run() -> int:
        sc = StreamConditioner(fs, capacity=x.shape[1])
        sc.push(0, x[:, :need - hop])
        for s in starts:  # the engine's rhythm: one hop of new samples, then the window that completes
            sc.push(s + need - hop, x[:, s + need - hop:s + need])
            sc.window(s)
        return len(starts)

    def stream_live_run() -> int:
        sc = StreamConditioner(fs, capacity=x.shape[1])
        block = int(round(0.1 * fs))  # paced replay's 0.1 s blocks (RecordSource.block_s), as live
        sc.push(0, x[:, :need - hop])
        i = need - hop
        for s in starts:
            while i < s + need:
                sc.push(i, x[:, i:min(i + block, s + need)])
                i = min(i + block, s + need)
            sc.window(s)
        return len(starts)

    def each(items, f) -> Callable[[], int]:
        """A pass of ``f`` over every window's item; returns the window count."""
        return lambda: sum(1 for item in items if f(*item) is not None)

    wc = list(zip(windows, conditioned))
    hr_old = [(c[lead_ii], 100.0, "neurokit", False) for c in conditioned]
    hr_new = [(c[lead_ii], 100.0, "gradient", False) for c in conditioned]
    stages: dict[str, tuple[str, Callable[[], int]]] = {
        "rs_old": ("resample, old (firwin per call)", each([(w, fs, 100.0) for w in windows], old_resample)),
        "rs_new": ("resample, new (cached design)", each([(w, fs, 100.0) for w in windows], resample)),
        "base_old": ("baseline, old (np.pad, copies)", each([(y, 100.0) for y in resampled], old_remove_baseline)),
        "base_new": ("baseline, new (medians 0.2 s + 0.6 s)", each([(y, 100.0) for y in resampled], remove_baseline)),
        "q_old": ("quality, old (d ** 4, masks)", each([(w, fs, c, q) for w, c in wc], old_window_quality)),
        "q_new": ("quality, new", each([(w, fs, c, q) for w, c in wc], window_quality)),
        "hr_old": ("heart rate, old (NeuroKit2 on lead II)", each(hr_old, detect_qrs)),
        "hr": ("heart rate, new (bedside.qrs on lead II)", each(hr_new, detect_qrs)),
        "c_old": ("condition, batch old", each([(w, fs) for w in windows], old_condition)),
        "c_new": ("condition, batch new (cached design)", each([(w, fs) for w in windows], condition)),
        "c_stream": ("condition, streaming (hop blocks)", stream_run),
        "c_live": ("condition, streaming (0.1 s blocks)", stream_live_run),
    }
    results: dict[str, list[float]] = {}
    for _ in range(args.repeats):
        for key, (_, run) in stages.items():
            per_window_ms(run, results, key)
    m = {key: float(np.median(v)) for key, v in results.items()}
    width = max(len(name) for name, _ in stages.values())
    print(f"{'stage':<{width}}  CPU ms/window  (min..max over repeats)")
    for key, v in results.items():
        print(f"{stages[key][0]:<{width}}  {m[key]:13.3f}  ({min(v):.3f}..{max(v):.3f})")
    old_total, new_total = m["c_old"] + m["q_old"] + m["hr_old"], m["c_stream"] + m["q_new"] + m["hr"]
    print()
    print(f"resample new/old {m['rs_new'] / m['rs_old']:.2f}; baseline new/old {m['base_new'] / m['base_old']:.2f}; "
          f"quality new/old {m['q_new'] / m['q_old']:.2f}; "
          f"condition streaming/batch-old {m['c_stream'] / m['c_old']:.2f}, streaming/batch-new "
          f"{m['c_stream'] / m['c_new']:.2f}, live-blocks/batch-old {m['c_live'] / m['c_old']:.2f}")
    print(f"non-inference per window (condition + quality + heart rate): old {old_total:.2f} ms, "
          f"new {new_total:.2f} ms (new/old {new_total / old_total:.2f}); "
          f"without heart rate: old {old_total - m['hr_old']:.2f} ms, "
          f"new {new_total - m['hr']:.2f} ms")
    load = os.getloadavg()
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} at the end")


if __name__ == "__main__":
    main()
