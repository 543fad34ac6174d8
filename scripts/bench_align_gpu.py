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

Learning check (``--learn-steps``, default 300): the same model trained at bf16 for that many
steps on a fixed pool of 16 labelled batches (random ECGs and X-rays whose labels shift both
inputs, so there is something to align), printing the loss every 50 steps against its collapse
value: the loss of identical embeddings (``cross_modal_supcon`` of constant vectors, which is what
a collapsed encoder gives). Passing means the loss ends below the collapse value.

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
from trainer.engine import autocast, lr_lambda  # noqa: E402
from trainer.losses import cross_modal_supcon  # noqa: E402

LOSS = dict(temperature=0.01, weighting="topk", alpha=5.0, topk_fraction=0.1, direct_pair_weight=3.0)


def build(device: torch.device) -> tuple[AlignModel, torch.optim.Optimizer]:
    model = AlignModel(EcgEncoder(EcgEncoderConfig()), freeze(XrvDenseNetEncoder()), 1024, 256).to(device)
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, weight_decay=1e-5)
    return model, optimizer


def train_step(model: AlignModel, optimizer: torch.optim.Optimizer, env: DistEnv, ecg: torch.Tensor,
               cxr: torch.Tensor, labels: torch.Tensor, precision: str) -> float:
    """One alignment step as trainer.align trains it (autocast, loss, clip 2.5, AdamW); returns the loss."""
    with autocast(env.device, precision):
        loss = align_loss(model, ecg, cxr, labels, env, LOSS)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 2.5)
    optimizer.step()
    return float(loss)


def measure(device: torch.device, batch: int, steps: int, warmup: int, precision: str) -> dict[str, float]:
    """Samples per second and peak memory of ``steps`` timed training steps after ``warmup`` steps."""
    torch.manual_seed(0)
    model, optimizer = build(device)
    env = DistEnv(device=device)
    ecg = torch.randn(batch, 12, 1000, device=device)
    cxr = torch.rand(batch, 1, 224, 224, device=device) * 2048 - 1024
    labels = torch.randint(0, 2, (batch, 3), device=device).float()

    def step() -> float:
        return train_step(model, optimizer, env, ecg, cxr, labels, precision)

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


def collapse_value(labels: torch.Tensor) -> float:
    """The alignment loss when every embedding is the same vector (what a collapsed encoder gives)."""
    same = torch.ones(labels.shape[0], 8, device=labels.device)
    return float(cross_modal_supcon(same, same, labels, **LOSS))


def learn(device: torch.device, batch: int, steps: int, precision: str = "bf16") -> dict[str, object]:
    """Train ``steps`` steps on 16 fixed labelled batches; losses every 50 steps vs the collapse value."""
    torch.manual_seed(0)
    model, optimizer = build(device)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(max(1, steps // 20), steps))
    env = DistEnv(device=device)
    pool = []
    for _ in range(16):
        labels = torch.randint(0, 2, (batch, 3), device=device).float()
        shift = labels @ torch.tensor([0.5, 1.0, 1.5], device=device)
        ecg = torch.randn(batch, 12, 1000, device=device) + shift[:, None, None]
        cxr = torch.rand(batch, 1, 224, 224, device=device) * 2048 - 1024 + 300 * labels[:, :1, None, None]
        pool.append((ecg, cxr, labels))
    floor = collapse_value(pool[0][2])
    losses = []
    for i in range(steps):
        losses.append(train_step(model, optimizer, env, *pool[i % len(pool)], precision))
        scheduler.step()
    del model, optimizer
    return {"collapse": floor, "losses": losses}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--pairs", type=int, nargs="+", default=[100_000, 377_000])
    parser.add_argument("--learn-steps", type=int, default=300, help="bf16 learning check (0: skip)")
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
    if args.learn_steps:
        r = learn(torch.device("cuda"), args.batch, args.learn_steps)
        losses = r["losses"]
        shown = ", ".join(f"{i}: {losses[i]:.3f}" for i in range(0, len(losses), 50))
        end = sum(losses[-20:]) / min(20, len(losses))
        verdict = "below" if end < r["collapse"] else "NOT below"
        print(f"learning check, bf16, batch {args.batch}: loss by step {shown}; last 20 steps {end:.3f}, "
              f"{verdict} the collapse value {r['collapse']:.3f}")
        return 0 if end < r["collapse"] else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
