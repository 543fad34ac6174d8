"""Headless replay of a 24-hour 12-lead 500 Hz record: time, real-time factor, share per stage, memory.

The record is generated once (synthetic ECG from trainer.synth_ecg, one hour per segment written with
wfdb.wrsamp, a multi-segment header on top) under /tmp/bedside_bench, about 1 GB. The replay is the
engine exactly as `bedside replay --fast` runs it (chunks, batched inference, SQLite log). Baseline,
measured in the same run on the first windows: the naive loop (read one window, preprocess it, score it
alone) extrapolated to the whole record.

    .venv/bin/python scripts/bench_replay.py [--hours 24] [--model paper|paper-int8|linear|PATH] [--baseline-windows 400]

``--model paper`` (default) exports an untrained network of the paper's size (5.5 M parameters,
trainer.ecg_model; needs torch) to a bundle: the inference cost of the real model. ``linear`` is the
tiny test bundle (the pipeline without model cost).
"""

from __future__ import annotations

import argparse
import io
import resource
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from cpu_flags import cpu_line  # noqa: E402  (scripts/cpu_flags.py)

from bedside.leads import CANONICAL_LEADS  # noqa: E402

BENCH = Path("/tmp/bedside_bench")
FS = 500


def make_record(hours: int, folder: Path = BENCH) -> Path:
    """A multi-segment 12-lead record of ``hours`` one-hour segments (written once, reused)."""
    import wfdb
    from rich.progress import track

    from trainer.synth_ecg import draw_traits, ecg_state, synth_ecg

    name = f"holter{hours}h"
    if (folder / f"{name}.hea").is_file():
        return folder / name
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(24)
    traits = draw_traits(rng)
    segs = []
    for h in track(range(hours), description=f"writing {hours} h record"):
        state = ecg_state(traits, 0.1, 0.1, 0.2 + 0.2 * np.sin(h / 4), rng)  # heart rate drifts over the day
        x = synth_ecg(state, rng, n=3600 * FS, fs_hz=FS)
        seg = f"{name}_{h:02d}"
        wfdb.wrsamp(seg, fs=FS, units=["mV"] * 12, sig_name=list(CANONICAL_LEADS), p_signal=x.T.astype(np.float64),
                    fmt=["16"] * 12, adc_gain=[200.0] * 12, baseline=[0] * 12, write_dir=str(folder))
        segs.append(seg)
    multi = wfdb.MultiRecord(record_name=name, fs=FS, n_sig=12, sig_len=hours * 3600 * FS, seg_name=segs,
                             seg_len=[3600 * FS] * hours)
    multi.n_seg = hours
    multi.wrheader(write_dir=str(folder))
    return folder / name


def paper_bundle(folder: Path = BENCH, int8: bool = False) -> Path:
    """An untrained paper-size classifier exported to a bundle (the inference cost of the real model);
    ``int8``: its default static INT8 variant (export.quantize, calibrated on random windows: speed and
    memory are those of the real INT8 bundle, accuracy is not measured here)."""
    out = folder / ("paper_size.int8.onnx" if int8 else "paper_size.onnx")
    if out.is_file():
        return out
    import onnx
    import onnxruntime as ort
    import torch

    from export.bundle_writer import write_bundle
    from tests.bundles import make_bundle
    from trainer.ecg_model import EcgClassifier, EcgEncoderConfig, HeadConfig, ProbabilityModel

    torch.manual_seed(0)
    model = ProbabilityModel(EcgClassifier(EcgEncoderConfig(), HeadConfig())).eval()
    buf = io.BytesIO()
    torch.onnx.export(model, (torch.zeros(2, 12, 1000),), buf, input_names=["ecg"], output_names=["probs"],
                      dynamic_axes={"ecg": {0: "batch"}, "probs": {0: "batch"}}, opset_version=17, dynamo=False)
    proto = onnx.load_from_string(buf.getvalue())
    if int8:
        from export.quantize import quantize_int8

        calib = np.random.default_rng(1).uniform(-1, 1, (64, 12, 1000)).astype(np.float32)
        proto = quantize_int8(proto, calib)
    make_bundle(folder / "template.onnx")  # metadata of the test bundle, golden output of this model
    import json

    from bedside.bundle import METADATA_KEY, encode_array

    meta = json.loads({p.key: p.value for p in onnx.load(folder / "template.onnx").metadata_props}[METADATA_KEY])
    golden = np.random.default_rng(0).uniform(-1, 1, (2, 12, 1000)).astype(np.float32)
    expected = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {"ecg": golden})[0]
    meta.update(model_name="paper-size-untrained", model_version="bench", variant="int8" if int8 else "fp32",
                golden={"input_b64": encode_array(golden), "input_shape": list(golden.shape),
                        "expected": expected.tolist(), "atol": 5e-3 if int8 else 1e-4})
    write_bundle(proto, meta, out)
    return out


def resolve_model(name: str) -> Path:
    """'paper' (the paper-size export), 'paper-int8' (its INT8 variant), 'linear' (the tiny test bundle)
    or a bundle path."""
    if name in ("paper", "paper-int8"):
        return paper_bundle(int8=name == "paper-int8")
    if name == "linear":
        from tests.bundles import make_bundle
        return make_bundle(BENCH / "linear.onnx")
    return Path(name)


def rss_now_mb() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024


def baseline(record_path: Path, bundle, n_windows: int) -> float:
    """Seconds per window of the naive loop: read one window, preprocess, score it alone."""
    from bedside.preprocess import input_samples_for_window, preprocess_window
    from bedside.records import open_record

    record = open_record(record_path, bundle.recipe)
    need = input_samples_for_window(record.fs_hz)
    hop = int(5 * record.fs_hz)
    t = time.perf_counter()
    for k in range(n_windows):
        x = record.read(k * hop, k * hop + need)
        bundle.predict(preprocess_window(x, record.fs_hz)[None])
    return (time.perf_counter() - t) / n_windows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=int, default=24)
    parser.add_argument("--model", default="paper", help="paper, paper-int8, linear, or a bundle path")
    parser.add_argument("--baseline-windows", type=int, default=400)
    parser.add_argument("--db", default=str(BENCH / "bench.db"))
    parser.add_argument("--generate-only", action="store_true", help="write the record and the bundle, then stop")
    args = parser.parse_args()
    print(cpu_line(), flush=True)

    from rich.console import Console
    from rich.table import Table

    from bedside.bundle import load_bundle
    from bedside.trust import TrustSettings
    from bedside.replay import ReplayOptions, build_replay_engine

    console = Console()
    record = make_record(args.hours)
    model = resolve_model(args.model)
    if args.generate_only:
        return
    bundle = load_bundle(model, trust=TrustSettings(None, allow_unsigned=True))  # a bundle this script wrote
    console.print(f"record {record} ({args.hours} h, 12 leads, {FS} Hz), model {bundle.version} on {bundle.provider}")
    per_window = baseline(record, bundle, args.baseline_windows)
    Path(args.db).unlink(missing_ok=True)
    engine = build_replay_engine(ReplayOptions(record=str(record), model=str(model), db=args.db, resume=False,
                                               trust=TrustSettings(None, allow_unsigned=True)))
    rss: list[float] = []
    engine.subscribe(lambda e: rss.append(rss_now_mb()) if getattr(e, "index", 1) % 500 == 0 and
                     type(e).__name__ == "WindowResult" else None)
    t = time.perf_counter()
    summary = engine.run()
    wall = time.perf_counter() - t
    engine.close()
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    windows = summary.windows
    baseline_s = per_window * windows
    table = Table(title=f"Replay of {args.hours} h: {windows} windows ({summary.scored} scored)")
    table.add_column("stage")
    table.add_column("seconds", justify="right")
    table.add_column("share", justify="right")
    total = sum(summary.timings.values())
    for stage, seconds in summary.timings.items():
        table.add_row(stage, f"{seconds:.1f}", f"{100 * seconds / total:.1f}%")
    table.add_row("(other: loop, ring, windows)", f"{wall - total:.1f}", "")
    console.print(table)
    console.print(f"wall {wall:.1f} s = {args.hours * 3600 / wall:,.0f}x real time (goal: <= 120 s, 720x); "
                  f"{1000 * wall / windows:.2f} ms per window")
    console.print(f"baseline (naive per-window loop, {args.baseline_windows} windows measured): "
                  f"{1000 * per_window:.2f} ms per window -> {baseline_s:.0f} s for the record; "
                  f"engine is {baseline_s / wall:.2f}x faster")
    console.print(f"RSS during the replay: {min(rss):.0f} MB at the first window, {max(rss):.0f} MB at most "
                  f"(process peak {rss_mb:.0f} MB; the record is {args.hours * 3600 * FS * 12 * 2 / 1e9:.2f} GB on disk)")
    console.print(f"transitions {len(summary.transitions)}, not scored {dict(summary.not_scored)}")


if __name__ == "__main__":
    main()
