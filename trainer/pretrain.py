"""Stage 1: self-supervised ECG pretraining with 3KG views and InfoNCE (the paper's temperature 0.01).

Two 3KG views of each training ECG go through the encoder and a projection MLP (dropped after this
stage); the loss is the symmetric InfoNCE between the views of a batch (``trainer.losses.clip_loss``,
on the global batch under DDP). The validation score is minus the same loss on fixed views of the
validation split (views seeded by index, identical every epoch). Every evaluation also records
the encoder checks (trainer.probe: embedding spread, effective rank, linear probes).

One encoder per input scaling: ``pretrain`` for the deployed scaling, ``pretrain@<scaling>`` for others.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from trainer.checkpoint import seed_everything
from trainer.checks import fit_summary
from trainer.context import RunContext, variant_suffix
from trainer.data import eval_loader
from trainer.distributed import DistEnv, gather_with_grad
from trainer.ecg_model import EcgEncoder, EcgEncoderConfig
from trainer.engine import fit, to_device, unwrap
from trainer.losses import clip_loss
from trainer.probe import EncoderProbe

STAGE = "pretrain"
ENCODER_KIND = "cromotex-ecg-encoder"


class PretrainModel(nn.Module):
    """ECG encoder + projection MLP (d -> d -> proj_dim) for the contrastive objective."""

    def __init__(self, cfg: EcgEncoderConfig, proj_dim: int) -> None:
        super().__init__()
        self.encoder = EcgEncoder(cfg)
        self.proj = nn.Sequential(nn.Linear(cfg.d_model, cfg.d_model), nn.GELU(), nn.Linear(cfg.d_model, proj_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.encoder(x))


def two_view_loss(model: nn.Module, ecg: torch.Tensor, temperature: float, env: DistEnv) -> torch.Tensor:
    """InfoNCE between the two views of ``ecg`` [B, 2, 12, n] (one forward pass for both views)."""
    b = ecg.shape[0]
    z = model(ecg.flatten(0, 1)).view(b, 2, -1).float()
    with torch.autocast(ecg.device.type, enabled=False):
        return clip_loss(gather_with_grad(z[:, 0], env), gather_with_grad(z[:, 1], env), temperature=temperature)


def stage_id(ctx: RunContext, scaling: str) -> str:
    """``pretrain`` for the deployed scaling, ``pretrain@<scaling>`` for another."""
    return STAGE + variant_suffix(scaling, ctx.primary_scaling)


class PretrainTask:
    def __init__(self, ctx: RunContext, seed: int, scaling: str) -> None:
        cfg = ctx.cfg
        self.stage_id = stage_id(ctx, scaling)
        self.ctx = ctx
        self.model = PretrainModel(cfg.ecg, cfg.pretrain.proj_dim)
        self.train_data = ctx.dataset("train", fields=("ecg",), augment=cfg.augment, views=2, seed=seed,
                                      scaling=scaling)
        self.val_loader = eval_loader(ctx.dataset("val", fields=("ecg",), augment=cfg.augment, views=2, seed=seed,
                                                  scaling=scaling),
                                      cfg.pretrain.optim.batch_size, ctx.rt.workers)
        self.probe = EncoderProbe(ctx, scaling, cfg.pretrain.optim.batch_size)
        self.temperature = cfg.pretrain.temperature

    def loss(self, model: nn.Module, batch: dict[str, Any]) -> torch.Tensor:
        return two_view_loss(model, batch["ecg"], self.temperature, self.ctx.rt.env)

    @torch.no_grad()
    def validate(self, model: nn.Module) -> tuple[float, dict[str, Any]]:
        model.eval()
        total, n = 0.0, 0
        single = DistEnv(device=self.ctx.rt.env.device)  # rank 0 validates alone
        for batch in self.val_loader:
            batch = to_device(batch, single.device)
            if batch["ecg"].shape[0] < 2:
                continue
            total += float(two_view_loss(model, batch["ecg"], self.temperature, single)) * batch["ecg"].shape[0]
            n += batch["ecg"].shape[0]
        loss = total / max(1, n)
        return -loss, {"loss": loss, **self.probe.measure(model.encoder)}


def run_pretrain(ctx: RunContext, seed: int, scaling: str | None = None) -> dict[str, Any]:
    """Train (or resume, or reuse) the self-supervised encoder of one seed and scaling; returns its summary."""
    scaling = scaling or ctx.primary_scaling
    sid = stage_id(ctx, scaling)
    summary = ctx.done(seed, sid)
    if summary is not None:
        return summary
    seed_everything(seed)
    task = PretrainTask(ctx, seed, scaling)
    result = fit(task, ctx.cfg.pretrain.optim, seed=seed, ckpt_dir=ctx.ckpt_dir(seed), rt=ctx.rt, tracker=ctx.tracker,
                 config_sha256=ctx.config_sha256, log_tag=ctx.log_tag(seed, sid))
    encoder = unwrap(task.model).encoder
    payload = {"kind": ENCODER_KIND, "stage": sid, "scaling": scaling, "encoder_config": encoder.cfg.to_dict(),
               "state_dict": {k: v.detach().cpu() for k, v in encoder.state_dict().items()}}
    return ctx.finish(seed, sid, payload, {"scaling": scaling,
                                           **fit_summary(result, "encoder", ctx.cfg.checks)})
