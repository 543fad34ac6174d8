"""Benchmark of the alignment stage at the paper's sizes: samples/s, peak GPU memory, epoch time.

    python scripts/bench_align_gpu.py [--batch 256] [--steps 20] [--pairs 100000 377000]

On a CUDA machine: the paper-sized ECG transformer (trainer.ecg_model, 196 tokens, d 256, 4
layers), torchxrayvision's DenseNet121 frozen in eval mode, both projections and
``cross_modal_supcon`` (top-k hard negatives), trained with AdamW exactly as ``trainer.align``
does (trainer.align.align_loss), at batch 256 under bf16 autocast. The float32 baseline is
measured in the same run at the same batch, and the ratio printed. Inputs are random tensors of
the cache's shapes, so the numbers are the model's compute; the data loader is not in them.

The epoch time is extrapolated to MIMIC-sized cohorts: ``--pairs`` (default 100 000 ECG-CXR
pairs, the order of the paper's ED-stay pairing of MIMIC-IV-ECG with MIMIC-CXR, and 377 000,
one per MIMIC-CXR image, as an upper bound).

Without CUDA it says so, runs two tiny steps on the CPU to show the code path works, and exits 0.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from trainer.align import AlignModel, align_loss  # noqa: E402
from trainer.cxr_model import XrvDenseNetEncoder, freeze  # noqa: E402
from trainer.distributed import DistEnv  # noqa: E402
from trainer.ecg_model import EcgEncoder, EcgEncoderConfig  # noqa: E402
from trainer.engine import autocast  # noqa: E402

LOSS = dict(temperature=0.01, weighting="topk", alpha=5.0, topk_fraction=0.1, direct_pair_weight=3.0)


def build(device: torch.device) -> tuple[AlignModel, torch.optim.Optimizer]:
    model = AlignModel(EcgEncoder(EcgEncoderConfig()), freeze(XrvDenseNetEncoder()), 1024, 256).to(device)
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, weight_decay=1e-5)
    return model, optimizer


def measure(device: torch.device, batch: int, steps: int, warmup: int, precision: str) -> dict[str, float]:
    """Samples per second and peak memory of ``steps`` timed training steps after ``warmup`` steps."""
    torch.manual_seed(0)
    model, optimizer = build(device)
    env = DistEnv(device=device)
    ecg = torch.randn(batch, 12, 1000, device=device)
    cxr = torch.rand(batch, 1, 224, 224, device=device) * 2048 - 1024
    labels = torch.randint(0, 2, (batch, 3), device=device).float()

    def step() -> float:
        with autocast(device, precision):
            loss = align_loss(model, ecg, cxr, labels, env, LOSS)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 2.5)
        optimizer.step()
        return float(loss)

    for _ in range(warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    for _ in range(steps):
        last = step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
    del model, optimizer
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return {"samples_per_s": batch * steps / seconds, "step_s": seconds / steps, "peak_gib": peak, "loss": last}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--pairs", type=int, nargs="+", default=[100_000, 377_000])
    args = parser.parse_args(argv)

    if not torch.cuda.is_available():
        print("CUDA is absent: the GPU benchmark cannot run here (it is owed on a CUDA machine).")
        r = measure(torch.device("cpu"), batch=4, steps=2, warmup=1, precision="fp32")
        print(f"tiny CPU run of the same code path (batch 4, paper sizes, float32): "
              f"{r['samples_per_s']:.2f} samples/s, {r['step_s']:.2f} s/step, loss {r['loss']:.3f}. Not a GPU number.")
        return 0

    name = torch.cuda.get_device_name()
    print(f"device: {name}, torch {torch.__version__}, batch {args.batch}, {args.steps} timed steps after "
          f"{args.warmup} warm-up steps; paper-sized ECG transformer + frozen DenseNet121, top-k loss")
    results = {p: measure(torch.device("cuda"), args.batch, args.steps, args.warmup, p) for p in ("bf16", "fp32")}
    for precision, r in results.items():
        print(f"{precision:>5}: {r['samples_per_s']:8.1f} samples/s  {r['step_s'] * 1000:7.1f} ms/step  "
              f"peak {r['peak_gib']:5.2f} GiB")
    print(f"bf16 / fp32 throughput: {results['bf16']['samples_per_s'] / results['fp32']['samples_per_s']:.2f}x")
    for pairs in args.pairs:
        epoch = pairs / results["bf16"]["samples_per_s"]
        print(f"epoch of {pairs:,} pairs at bf16: {epoch / 60:.1f} min ({pairs // args.batch:,} steps; compute only)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
