"""Process-group setup for ``torchrun`` and the collectives the trainer needs.

Under ``torchrun`` (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` set) the trainer runs one process per
GPU with NCCL, or per CPU process with gloo. Contrastive losses need the whole global batch as
negatives: :func:`gather_with_grad` concatenates every rank's embeddings and lets gradients flow
back to each rank's own rows, so a step on W ranks of batch b equals a single-process step on
batch W x b. Rank 0 alone writes files, validates and evaluates; the others wait at barriers.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn


@dataclass(frozen=True)
class DistEnv:
    """Where this process runs: its rank among ``world`` processes and its device."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


def pick_device(choice: str, local_rank: int = 0) -> torch.device:
    """``auto`` takes CUDA when present; ``cuda`` without a GPU is an error that says so."""
    if choice == "cpu" or (choice == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise RuntimeError("[run] device = \"cuda\" but torch sees no CUDA device; use device = \"auto\" or \"cpu\"")
    return torch.device("cuda", local_rank)


def init_distributed(device_choice: str) -> DistEnv:
    """Join the process group when launched by torchrun; a single process otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistEnv(device=pick_device(device_choice))
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(device_choice, local_rank)
    if not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return DistEnv(rank=rank, world=world, local_rank=local_rank, device=device)


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier(env: DistEnv) -> None:
    if env.distributed:
        dist.barrier()


def gather_with_grad(x: torch.Tensor, env: DistEnv) -> torch.Tensor:
    """Concatenate ``x`` of every rank along dim 0 (rank order); gradients reach each rank's rows."""
    if not env.distributed:
        return x
    return torch.cat(dist_fn.all_gather(x.contiguous()), dim=0)


def gather(x: torch.Tensor, env: DistEnv) -> torch.Tensor:
    """Concatenate ``x`` of every rank along dim 0, without gradient (labels, ids)."""
    if not env.distributed:
        return x
    parts = [torch.empty_like(x) for _ in range(env.world)]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts, dim=0)


def broadcast_object(obj: Any, env: DistEnv) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if not env.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]
