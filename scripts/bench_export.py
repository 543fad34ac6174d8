"""Benchmark of the exported ECG model on the CPU: PyTorch eager vs onnxruntime FP32 vs INT8.

For the paper-sized encoder (``EcgEncoderConfig()`` defaults, about 5.5 M parameters; weights are
random, which changes accuracy but not speed): per-window latency at batch 1 and throughput at
batch 32, every configuration measured side by side in interleaved rounds in one run (the machine
is shared, so only ratios measured together are meaningful), plus model file sizes. Goals on a
VNNI x86 CPU: onnxruntime FP32 >= 1.3x eager, INT8 >= 2.5x eager, at batch 1 and batch 32.
onnxruntime runs with the bedside's session settings (bedside.bundle.SessionSettings: explicit
intra-op threads, one inter-op thread, spinning off unless --spin). It prints the CPU flags first.

On a CUDA machine it also times the CUDA and TensorRT (FP16) providers at batch 1 and the engine
build; elsewhere it says why that part is skipped.

    .venv/bin/python scripts/bench_export.py [--rounds 5] [--reps 20] [--batch 32] [--threads 2] [--spin] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from cpu_flags import cpu_line  # noqa: E402  (scripts/cpu_flags.py)

from export.onnx_export import export_onnx
from export.quantize import QuantOptions, convert_fp16, quantize_int8
from trainer.ecg_model import EcgClassifier, EcgEncoderConfig, HeadConfig, ProbabilityModel

THREADS = 2
GOAL_FP32, GOAL_INT8 = 1.3, 2.5
#: INT8 settings compared (onnxruntime quantize_static options); the first is the export's default
INT8_OPTIONS: dict[str, QuantOptions] = {
    "int8 QDQ u8s8 (default)": QuantOptions(),
    "int8 QDQ s8s8": QuantOptions(activations="int8"),
    "int8 QDQ u8s8 per-channel": QuantOptions(per_channel=True),
    "int8 QDQ u8s8 + attention": QuantOptions(attention=True),
    "int8 QDQ u8s8 requantized": QuantOptions(float_outputs=False),
    "int8 QOperator (old default)": QuantOptions(quant_format="QOperator", attention=True, float_outputs=False),
}
SPIN = False


def session(model: onnx.ModelProto, level: ort.GraphOptimizationLevel = ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
            threads: int | None = None, providers: list | None = None) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.graph_optimization_level = level
    so.intra_op_num_threads = threads or torch.get_num_threads()  # the same count as torch
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.add_session_config_entry("session.intra_op.allow_spinning", "1" if SPIN else "0")
    so.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), so, providers=providers or ["CPUExecutionProvider"])


def ort_fn(sess: ort.InferenceSession) -> Callable[[np.ndarray], object]:
    return lambda x: sess.run(None, {"ecg": x})


def eager_fn(model: torch.nn.Module) -> Callable[[np.ndarray], object]:
    def run(x: np.ndarray):
        with torch.inference_mode():
            return model(torch.from_numpy(x))
    return run


def interleaved(fns: dict[str, Callable[[np.ndarray], object]], x: np.ndarray, rounds: int, reps: int,
                advance: Callable[[], None]) -> dict[str, list[float]]:
    """Seconds per call of each function, interleaved call by call (one call of each configuration in turn,
    ``rounds`` x ``reps`` turns, the order rotated each turn) so that the load of other processes, which
    changes from second to second on a shared machine, hits every configuration alike."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for fn in fns.values():  # warm-up
        for _ in range(3):
            fn(x)
    names = list(fns)
    for r in range(rounds):
        for k in range(reps):
            shift = (r * reps + k) % len(names)
            for name in names[shift:] + names[:shift]:
                t0 = time.perf_counter()
                fns[name](x)
                times[name].append(time.perf_counter() - t0)
        for _ in names:
            advance()
    return times


def model_gflop(model: torch.nn.Module, x: np.ndarray) -> float:
    """FP32 arithmetic of one window (GFLOP, multiply-add = 2), counted by torch's FlopCounterMode. Attention
    runs through the math backend here: the counter has no formula for the CPU's fused flash kernel, which
    would count the attention products as zero (the same arithmetic either way)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), sdpa_kernel(SDPBackend.MATH), counter:
        model(torch.from_numpy(x[:1]))
    return counter.get_total_flops() / 1e9


def gemm_ceiling(threads: int, tokens: int, d_model: int, ff_dim: int, batch: int = 16,
                 repeats: int = 30) -> dict[str, float]:
    """The FP32 GEMM rate (GFLOP/s, best of ``repeats``) this CPU reaches on the model's largest product,
    activations [batch x tokens, d_model] times a constant weight [d_model, ff_dim]: through onnxruntime
    (MLAS, the weight prepacked, like the model's) and through torch.mm (PyTorch's GEMM, like eager). No
    FP32 runtime runs the model's arithmetic faster than this."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(1)
    a = rng.standard_normal((batch * tokens, d_model)).astype(np.float32)
    w = rng.standard_normal((d_model, ff_dim)).astype(np.float32)
    graph = helper.make_graph([helper.make_node("MatMul", ["a", "w"], ["y"])], "gemm",
                              [helper.make_tensor_value_info("a", TensorProto.FLOAT, list(a.shape))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [a.shape[0], ff_dim])],
                              [numpy_helper.from_array(w, "w")])
    sess = session(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), threads=threads)
    ta, tw = torch.from_numpy(a), torch.from_numpy(w)
    flop = 2.0 * a.shape[0] * d_model * ff_dim
    best = {"onnxruntime MLAS": float("inf"), "torch.mm": float("inf")}
    for _ in range(repeats):
        for name, fn in (("onnxruntime MLAS", lambda: sess.run(None, {"a": a})),
                         ("torch.mm", lambda: torch.mm(ta, tw))):
            t0 = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t0)
    return {name: flop / s / 1e9 for name, s in best.items()}


def size_mb(model: onnx.ModelProto) -> float:
    return len(model.SerializeToString()) / 1e6


def gpu_part(fp32: onnx.ModelProto, x1: np.ndarray) -> list[str]:
    """CUDA / TensorRT latency at batch 1 and the engine build, where a GPU is present."""
    avail = ort.get_available_providers()
    if "CUDAExecutionProvider" not in avail:
        return [f"GPU part skipped: this onnxruntime build has no CUDA provider ({', '.join(avail)}); "
                "the CUDA/TensorRT numbers are owed from a CUDA machine"]
    lines = []
    for name, providers in [("CUDA FP32", [("CUDAExecutionProvider", {}), "CPUExecutionProvider"]),
                            ("TensorRT FP16", [("TensorrtExecutionProvider", {"trt_fp16_enable": True}),
                                               "CUDAExecutionProvider", "CPUExecutionProvider"])]:
        if providers[0][0] not in avail:
            lines.append(f"{name}: provider not in this build")
            continue
        t0 = time.perf_counter()
        try:
            s = session(fp32, providers=providers)
            s.run(None, {"ecg": x1})  # TensorRT builds its engine on the first run
        except Exception as exc:  # report, do not hide
            lines.append(f"{name}: failed to start: {exc}")
            continue
        build = time.perf_counter() - t0
        ts = []
        for _ in range(200):
            t = time.perf_counter()
            s.run(None, {"ecg": x1})
            ts.append(time.perf_counter() - t)
        lines.append(f"{name} ({s.get_providers()[0]}): batch 1 median {statistics.median(ts) * 1e3:.3f} ms; "
                     f"session start + first run {build:.1f} s")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds")
    ap.add_argument("--reps", type=int, default=20, help="batch-1 calls per configuration per round")
    ap.add_argument("--batch", type=int, default=32, help="throughput batch size")
    ap.add_argument("--threads", type=int, default=THREADS, help="intra-op threads of torch and onnxruntime")
    ap.add_argument("--spin", action="store_true", help="onnxruntime worker threads spin (its default; off here)")
    ap.add_argument("--json", type=Path, default=None, help="write the numbers here too")
    args = ap.parse_args()
    global SPIN
    SPIN = args.spin
    print(cpu_line(), flush=True)

    from rich.console import Console
    from rich.progress import Progress

    console = Console()
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    model = ProbabilityModel(EcgClassifier(EcgEncoderConfig(), HeadConfig())).eval()
    params = sum(p.numel() for p in model.parameters())
    rng = np.random.default_rng(0)
    calib = rng.uniform(-1, 1, (64, 12, 1000)).astype(np.float32)
    x1 = calib[:1].copy()
    xb = rng.uniform(-1, 1, (args.batch, 12, 1000)).astype(np.float32)

    t0 = time.perf_counter()
    fp32 = export_onnx(model, 12, 1000)
    export_s = time.perf_counter() - t0
    models = {"ORT fp32": fp32}
    quant_s = {}
    for name, opts in INT8_OPTIONS.items():
        t0 = time.perf_counter()
        models[name] = quantize_int8(fp32, calib, opts)
        quant_s[name] = time.perf_counter() - t0
    fp16 = convert_fp16(fp32)
    sizes = {"PyTorch state_dict": None, **{k: size_mb(m) for k, m in models.items()}, "ORT fp16": size_mb(fp16)}
    with tempfile.TemporaryDirectory() as tmp:
        torch.save(model.state_dict(), Path(tmp) / "sd.pt")
        sizes["PyTorch state_dict"] = (Path(tmp) / "sd.pt").stat().st_size / 1e6

    fns = {"PyTorch eager": eager_fn(model)}
    for name, m in models.items():
        fns[name] = ort_fn(session(m))
    ref = model(torch.from_numpy(xb)).detach().numpy()
    agree = {name: float(np.max(np.abs(session(m).run(None, {"ecg": xb})[0] - ref))) for name, m in models.items()}

    load_before = os.getloadavg()[0]
    rounds_b = max(2, args.rounds // 2)
    total = len(fns) * (args.rounds + rounds_b)
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("timing", total=total)
        lat = interleaved(fns, x1, args.rounds, args.reps, lambda: progress.advance(task))
        thr = interleaved(fns, xb, rounds_b, 2, lambda: progress.advance(task))

    base_lat = statistics.median(lat["PyTorch eager"])
    base_min = min(lat["PyTorch eager"])
    base_thr = args.batch / statistics.median(thr["PyTorch eager"])
    rows = []
    for name in fns:
        ms = statistics.median(lat[name]) * 1e3
        wps = args.batch / statistics.median(thr[name])
        rows.append({"config": name, "batch1_ms": ms, "batch1_speedup": base_lat * 1e3 / ms,
                     "batch1_min_ms": min(lat[name]) * 1e3, "batch1_min_speedup": base_min / min(lat[name]),
                     f"batch{args.batch}_windows_per_s": wps, "throughput_speedup": wps / base_thr,
                     "size_mb": sizes.get(name, sizes["PyTorch state_dict"] if name == "PyTorch eager" else None),
                     "max_abs_diff_vs_eager": agree.get(name)})
    lines = [cpu_line(), f"{args.threads} thread(s) (torch and onnxruntime; onnxruntime spinning {'on' if SPIN else 'off'}), onnxruntime {ort.__version__}, torch {torch.__version__}; "
             f"paper-sized encoder, {params / 1e6:.2f} M parameters; {args.rounds} interleaved rounds x {args.reps} "
             f"batch-1 calls, {rounds_b} x 2 batch-{args.batch} calls; medians; 1-min load average "
             f"{load_before:.1f} before, {os.getloadavg()[0]:.1f} after (other processes share the cores)",
             "", f"| configuration | batch 1 ms/window (median) | vs eager | batch 1 best ms | vs eager | "
             f"batch {args.batch} windows/s | vs eager | file MB | max abs diff vs eager |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        size = f"{r['size_mb']:.1f}" if r["size_mb"] else ""
        diff = f"{r['max_abs_diff_vs_eager']:.1e}" if r["max_abs_diff_vs_eager"] is not None else ""
        lines.append(f"| {r['config']} | {r['batch1_ms']:.2f} | {r['batch1_speedup']:.2f}x | "
                     f"{r['batch1_min_ms']:.2f} | {r['batch1_min_speedup']:.2f}x | "
                     f"{r[f'batch{args.batch}_windows_per_s']:.1f} | {r['throughput_speedup']:.2f}x | {size} | {diff} |")
    lines += ["", f"ORT fp16 file: {sizes['ORT fp16']:.1f} MB (for GPU runtimes; not timed on the CPU)",
              f"export {export_s:.1f} s; INT8 quantization " + ", ".join(f"{k} {v:.1f} s" for k, v in quant_s.items())]
    fp = next(r for r in rows if r["config"] == "ORT fp32")
    cfg = EcgEncoderConfig()
    gflop = model_gflop(model, x1)
    ceiling = gemm_ceiling(args.threads, cfg.tokens + 1, cfg.d_model, cfg.ff_dim, batch=1)  # as at batch 1
    ceiling16 = gemm_ceiling(args.threads, cfg.tokens + 1, cfg.d_model, cfg.ff_dim, batch=16)
    top = max(ceiling.values())
    rate = {name: gflop / (r["batch1_min_ms"] / 1e3) for name, r in
            (("eager", rows[0]), ("ORT fp32", fp))}
    lines.append(f"FP32 ceiling: the model is {gflop:.2f} GFLOP per window (FlopCounterMode); this CPU's FP32 GEMM "
                 f"on its largest product at batch 1 ([{cfg.tokens + 1}, {cfg.d_model}] x [{cfg.d_model}, {cfg.ff_dim}], "
                 f"{args.threads} thread(s), best of 30): " + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in ceiling.items())
                 + " (at batch 16: " + ", ".join(f"{k} {v:.0f}" for k, v in ceiling16.items()) + ")"
                 + f". Batch-1 best: eager {rate['eager']:.0f} GFLOP/s ({100 * rate['eager'] / top:.0f} % of the "
                 f"ceiling), ORT fp32 {rate['ORT fp32']:.0f} GFLOP/s ({100 * rate['ORT fp32'] / top:.0f} %). A FP32 "
                 f"runtime doing nothing but GEMMs at the ceiling would be {top / rate['eager']:.2f}x eager "
                 f"(goal {GOAL_FP32}x: {'within' if top / rate['eager'] >= GOAL_FP32 else 'beyond'} what FP32 "
                 "arithmetic allows on this CPU)")
    int8_rows = [r for r in rows if r["config"].startswith("int8")]
    default8 = int8_rows[0]
    for key, what in (("batch1_speedup", "batch 1, medians"), ("batch1_min_speedup", "batch 1, best of"),
                      ("throughput_speedup", f"batch {args.batch} throughput")):
        best8 = max(int8_rows, key=lambda r: r[key])
        lines.append(f"goals ({what}): ORT fp32 {fp[key]:.2f}x eager "
                     f"({'met' if fp[key] >= GOAL_FP32 else 'NOT met'}, goal {GOAL_FP32}x); default INT8 "
                     f"{default8[key]:.2f}x ({'met' if default8[key] >= GOAL_INT8 else 'NOT met'}, goal {GOAL_INT8}x); "
                     f"best INT8 {best8['config']} {best8[key]:.2f}x")
    lines.append("")
    lines += gpu_part(fp32, x1)
    console.print("\n".join(lines), markup=False, highlight=False, soft_wrap=True)
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "sizes_mb": sizes, "gpu": gpu_part(fp32, x1)}, indent=2))


if __name__ == "__main__":
    main()
