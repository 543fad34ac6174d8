"""The training loop every stage shares: resumable, distributed, early-stopped on validation.

A stage hands :func:`fit` a :class:`Task` (its model, training data, loss and validation score)
and plain optimisation values. The loop runs AdamW with linear warm-up and cosine decay, bf16
autocast on CUDA, gradient clipping, DDP when launched by torchrun, and:

- saves ``<stage>_last.pt`` every ``checkpoint_every_steps`` steps and at each evaluation with the
  model, optimizer and scheduler states and the global step (the epoch and batch follow from it);
  a rerun after a kill resumes there. The random state needs no saving: each step seeds torch from (seed, rank, global
  step), and the data order and augmentations are functions of (seed, epoch, index) (trainer.data),
  so a resumed run computes exactly what the uninterrupted one would have;
- validates every ``eval_every_steps`` on the validation split only (rank 0), keeps the best weights
  in ``<stage>_best.pt`` and stops after ``patience`` evaluations without improvement. Budgets are
  optimizer steps, whatever the cohort size; epochs are a derived figure in the logs. The test
  split is never seen here.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from trainer import checkpoint as ckpt
from trainer.config import OptimConfig
from trainer.data import CacheDataset, EpochSampler, train_loader
from trainer.distributed import DistEnv, barrier, broadcast_object
from trainer.tracking import Tracker


class Task(Protocol):
    """What a stage gives the loop."""

    stage_id: str
    model: nn.Module
    train_data: CacheDataset

    def loss(self, model: nn.Module, batch: dict[str, Any]) -> torch.Tensor:
        """Training loss of one batch (``model`` may be DDP-wrapped; batch already on the device)."""

    def validate(self, model: nn.Module) -> tuple[float, dict[str, Any]]:
        """(score, metrics) on the validation split; higher scores are better."""

    # optional: ``param_groups(lr) -> list[dict]`` for per-group learning rates (else one group)


@dataclass(frozen=True)
class Runtime:
    """Plain run-wide settings the loop needs."""

    env: DistEnv = DistEnv()
    precision: str = "bf16"
    workers: int = 0
    checkpoint_every_steps: int = 200
    log_every_steps: int = 20


@dataclass
class FitResult:
    best_score: float
    best_step: int
    steps_run: int
    stopped_early: bool
    seconds: float
    epochs: float  # derived: steps x global batch / training samples
    resumed_from: dict[str, int] | None = None
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def initial(self) -> dict[str, Any] | None:
        """The evaluation before the first step (None when the stage was resumed past it and lost it)."""
        return next((h for h in self.history if h["global_step"] == 0), None)

    @property
    def kept(self) -> dict[str, Any]:
        """The evaluation whose weights the stage keeps."""
        return next(h for h in self.history if h["global_step"] == self.best_step)


class TrainingError(RuntimeError):
    """Training cannot go on (a non-finite loss, a checkpoint from another config)."""


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA when configured; nothing on the CPU (float32)."""
    if device.type == "cuda" and precision == "bf16":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def lr_lambda(warmup_steps: int, total_steps: int) -> Callable[[int], float]:
    """Multiplier of the peak lr at a step: linear warm-up, then cosine decay to 0."""
    def f(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return f


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def step_seed(seed: int, rank: int, global_step: int) -> int:
    return (seed * 1_000_003 + rank * 7_919 + global_step) % (2**63 - 1)


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, DistributedDataParallel) else model


def _paths(ckpt_dir: Path, stage_id: str) -> tuple[Path, Path, Path]:
    return ckpt_dir / f"{stage_id}_last.pt", ckpt_dir / f"{stage_id}_last.json", ckpt_dir / f"{stage_id}_best.pt"


def fit(task: Task, optim: OptimConfig, *, seed: int, ckpt_dir: Path, rt: Runtime, tracker: Tracker,
        config_sha256: str, log_tag: str) -> FitResult:
    """Train ``task.model`` in place for ``optim.steps`` steps; on return it holds the best validation weights.

    The validation split is evaluated before the first step (the stage's starting point, which the
    learning checks compare against and which may itself be kept), every ``eval_every_steps`` and
    after the last step; ``patience`` counts evaluations.
    """
    env = rt.env
    started = time.perf_counter()
    model = task.model.to(env.device)
    trainable = [p for p in model.parameters() if p.requires_grad]
    groups = task.param_groups(optim.lr) if hasattr(task, "param_groups") else [{"params": trainable}]
    optimizer = torch.optim.AdamW(groups, lr=optim.lr, weight_decay=optim.weight_decay)
    batch_size = optim.batch_size
    if len(task.train_data) < batch_size * env.world:
        batch_size = max(2, len(task.train_data) // env.world)
        tracker.message(f"{log_tag}: {len(task.train_data)} training samples, fewer than one batch of "
                        f"{optim.batch_size} x {env.world} rank(s): batches of {batch_size} per rank instead")
    sampler = EpochSampler(len(task.train_data), batch_size, seed=seed, rank=env.rank, world=env.world)
    per_epoch = sampler.batches_per_epoch
    total = optim.steps
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(optim.warmup_steps, total))
    last_path, last_json, best_path = _paths(ckpt_dir, task.stage_id)

    state = {"global_step": 0, "best_score": -math.inf, "best_step": -1, "bad_evals": 0,
             "loss_sum": 0.0, "loss_n": 0, "history": []}  # loss_*: training loss since the last evaluation
    resumed = None
    if last_path.exists():
        saved = ckpt.load(last_path)
        if saved.get("config_sha256") != config_sha256:
            raise TrainingError(f"{last_path} was written by another configuration; delete it (or use a new run "
                                "directory) to start this stage again")
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        state = saved["loop"]
        resumed = {"global_step": state["global_step"]}
        tracker.message(f"{log_tag}: resuming at step {state['global_step']} of {total}")

    def save_last() -> None:
        if env.is_main:
            ckpt.save({"config_sha256": config_sha256, "model": unwrap(model).state_dict(),
                       "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "loop": state},
                      last_path)
            ckpt.atomic_write_json(last_json, {k: state[k] for k in ("global_step", "best_score", "best_step",
                                                                      "bad_evals")})
        barrier(env)

    ddp = model
    if env.distributed:
        ddp = DistributedDataParallel(model, device_ids=[env.device.index] if env.device.type == "cuda" else None)
    if env.is_main and sampler.dropped and state["global_step"] == 0:
        tracker.message_once(("dropped", sampler.n, batch_size, env.world),
                             f"{log_tag}: {sampler.dropped} of {sampler.n} training samples do not fill a last batch "
                             f"of {batch_size * env.world}; a different random few are left out of each epoch "
                             "(so in every stage with this batch size)")

    def epochs_at(step: int) -> float:
        return round(step / per_epoch, 2)

    def evaluate() -> None:
        step = state["global_step"]
        score, metrics = (task.validate(unwrap(model)) if env.is_main else (0.0, {}))
        score, metrics = broadcast_object((score, metrics), env)
        score = score if math.isfinite(score) else -math.inf
        if score > state["best_score"] or state["best_step"] < 0:
            state["best_score"], state["best_step"], state["bad_evals"] = score, step, 0
            if env.is_main:
                ckpt.save({"model": unwrap(model).state_dict()}, best_path)
        elif step > 0:
            state["bad_evals"] += 1
        record = {"split": "val", "global_step": step, "epoch": epochs_at(step), "score": score,
                  "train_loss": state["loss_sum"] / state["loss_n"] if state["loss_n"] else None, **metrics}
        state["history"].append(record)
        tracker.log(log_tag, record)
        state["loss_sum"], state["loss_n"] = 0.0, 0
        save_last()
        ddp.train()

    def patience_spent() -> bool:
        return bool(optim.patience) and state["bad_evals"] >= optim.patience

    bar = tracker.task(log_tag, total=total, completed=state["global_step"])
    if state["global_step"] == 0 and not state["history"]:
        evaluate()  # the starting point: what the checks compare the stage against
    ddp.train()
    while state["global_step"] < total and not patience_spent():
        epoch, first = divmod(state["global_step"], per_epoch)
        sampler.set_epoch(epoch, first)
        for batch in train_loader(task.train_data, sampler, rt.workers, pin_memory=env.device.type == "cuda"):
            torch.manual_seed(step_seed(seed, env.rank, state["global_step"]))
            batch = to_device(batch, env.device)
            with autocast(env.device, rt.precision):
                loss = task.loss(ddp, batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if optim.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(trainable, optim.grad_clip)
            optimizer.step()
            scheduler.step()
            value = float(loss.detach())
            if not math.isfinite(value):
                raise TrainingError(f"{log_tag}: loss is {value} at step {state['global_step']}; "
                                    "lower the learning rate or check the cache for bad samples")
            state["global_step"] += 1
            step = state["global_step"]
            state["loss_sum"], state["loss_n"] = state["loss_sum"] + value, state["loss_n"] + 1
            tracker.advance(bar, f"step {step}/{total} (epoch {epochs_at(step):.1f}) loss {value:.4f}")
            if step % rt.log_every_steps == 0:
                tracker.log(log_tag, {"split": "train", "global_step": step, "epoch": epochs_at(step),
                                      "loss": value, "lr": scheduler.get_last_lr()[0]})
            if step % optim.eval_every_steps == 0 or step == total:
                evaluate()
                if patience_spent() or step == total:
                    break
            elif step % rt.checkpoint_every_steps == 0:
                save_last()
        if patience_spent():
            tracker.message(f"{log_tag}: stopping early at step {state['global_step']}; best validation score "
                            f"{state['best_score']:.4f} at step {state['best_step']}")
    barrier(env)
    unwrap(model).load_state_dict(ckpt.load(best_path)["model"])
    tracker.finish(bar, f"best val {state['best_score']:.4f} @ step {state['best_step']}")
    return FitResult(best_score=state["best_score"], best_step=state["best_step"], steps_run=state["global_step"],
                     stopped_early=patience_spent(), seconds=time.perf_counter() - started,
                     epochs=epochs_at(state["global_step"]), resumed_from=resumed, history=state["history"])


def clear_resume_files(ckpt_dir: Path, stage_id: str) -> None:
    """Remove a finished stage's ``_last``/``_best`` files (the final ``<stage>.pt`` replaces them)."""
    for path in _paths(ckpt_dir, stage_id):
        path.unlink(missing_ok=True)
