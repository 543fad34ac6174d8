"""Stage 3: cross-modal alignment of the ECG encoder to the frozen CXR encoder.

Both modalities are projected linearly to ``proj_dim`` (L2-normalised inside the loss); the loss
is :func:`trainer.losses.cross_modal_supcon` on the global batch. The methods differ only in it:

- ``cromotex`` (the full method): same-label positives, direct pair weighted ``direct_pair_weight``,
  hard negatives weighted by ``[align] weighting`` (topk by default);
- ``supcon``: the same without hard negatives (``weighting = "none"``);
- ``clip``: unsupervised, each study its own class (labels unused).

Under the binary protocol the supervised methods align per label (positives share that label);
``clip`` uses no labels, so one alignment serves every label.

The CXR encoder is frozen including its BatchNorm statistics: no gradients, and
:meth:`AlignModel.train` keeps it in eval mode whatever the rest of the model does.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from trainer.checkpoint import seed_everything
from trainer.checks import fit_summary
from trainer.context import RunContext, variant_suffix
from trainer.cxr_train import STAGE as CXR_STAGE, frozen_cxr_encoder
from trainer.data import eval_loader
from trainer.distributed import DistEnv, gather, gather_with_grad
from trainer.ecg_model import EcgEncoder
from trainer.engine import fit, to_device, unwrap
from trainer.losses import cross_modal_supcon
from trainer.pretrain import ENCODER_KIND, stage_id as pretrain_stage_id
from trainer.probe import EncoderProbe

ALIGN_METHODS: tuple[str, ...] = ("clip", "supcon", "cromotex")


def stage_id(method: str, target: str | None, suffix: str = "") -> str:
    """``align-<method>`` (multi-label, and clip always) or ``align-<method>-<label>`` (binary protocol),
    then ``suffix`` (``@<scaling>`` off the deployed scaling; alignment never depends on the label fraction)."""
    base = f"align-{method}" if target is None or method == "clip" else f"align-{method}-{target}"
    return base + suffix


class AlignModel(nn.Module):
    """Trainable ECG encoder and both projections around a frozen CXR encoder."""

    def __init__(self, ecg_encoder: EcgEncoder, cxr_encoder: nn.Module, cxr_dim: int, proj_dim: int) -> None:
        super().__init__()
        self.ecg_encoder = ecg_encoder
        self.ecg_proj = nn.Linear(ecg_encoder.dim, proj_dim)
        self.cxr_encoder = cxr_encoder
        self.cxr_proj = nn.Linear(cxr_dim, proj_dim)

    def train(self, mode: bool = True) -> "AlignModel":
        super().train(mode)
        self.cxr_encoder.eval()  # frozen: BatchNorm keeps using (and never updates) its running statistics
        return self

    def forward(self, ecg: torch.Tensor, cxr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            features = self.cxr_encoder(cxr)
        return self.ecg_proj(self.ecg_encoder(ecg)), self.cxr_proj(features)


def align_loss(model: nn.Module, ecg: torch.Tensor, cxr: torch.Tensor, labels: torch.Tensor, env: DistEnv,
               loss_kwargs: dict[str, Any]) -> torch.Tensor:
    """The alignment loss of one (per-rank) batch: forward under the caller's autocast, loss in float32
    on the global batch."""
    ze, zc = model(ecg, cxr)
    with torch.autocast(ze.device.type, enabled=False):
        return cross_modal_supcon(gather_with_grad(ze.float(), env), gather_with_grad(zc.float(), env),
                                  gather(labels.to(ze.device), env), **loss_kwargs)


class AlignTask:
    def __init__(self, ctx: RunContext, seed: int, method: str, target: str | None, model: AlignModel,
                 scaling: str) -> None:
        cfg = ctx.cfg.align
        self.ctx, self.model = ctx, model
        self.stage_id = stage_id(method, target, variant_suffix(scaling, ctx.primary_scaling))
        self.unsupervised = method == "clip"
        weighting = cfg.weighting if method == "cromotex" else "none"
        self.loss_kwargs = dict(temperature=cfg.temperature, weighting=weighting, alpha=cfg.alpha,
                                topk_fraction=cfg.topk_fraction, direct_pair_weight=cfg.direct_pair_weight)
        aug = ctx.cfg.augment if cfg.augment else None
        label_target = None if self.unsupervised else target
        self.train_data = ctx.dataset("train", fields=("ecg", "cxr"), augment=aug, seed=seed, target=label_target,
                                      scaling=scaling)
        self.val_loader = eval_loader(ctx.dataset("val", fields=("ecg", "cxr"), target=label_target, scaling=scaling),
                                      cfg.optim.batch_size, ctx.rt.workers)
        self.probe = EncoderProbe(ctx, scaling, cfg.optim.batch_size)

    def batch_loss(self, model: nn.Module, batch: dict[str, Any], env: DistEnv) -> torch.Tensor:
        labels = batch["index"] if self.unsupervised else batch["labels"]  # clip: one class per study
        return align_loss(model, batch["ecg"][:, 0], batch["cxr"], labels, env, self.loss_kwargs)

    def loss(self, model: nn.Module, batch: dict[str, Any]) -> torch.Tensor:
        return self.batch_loss(model, batch, self.ctx.rt.env)

    @torch.no_grad()
    def validate(self, model: nn.Module) -> tuple[float, dict[str, Any]]:
        model.eval()
        single = DistEnv(device=self.ctx.rt.env.device)
        total, n = 0.0, 0
        for batch in self.val_loader:
            batch = to_device(batch, single.device)
            size = batch["labels"].shape[0]
            if size >= 2:
                total, n = total + float(self.batch_loss(model, batch, single)) * size, n + size
        loss = total / max(1, n)
        return -loss, {"loss": loss, **self.probe.measure(model.ecg_encoder)}


def build_align(ctx: RunContext, seed: int, method: str, target: str | None = None,
                scaling: str | None = None) -> AlignTask:
    """The alignment task of one method: pretrained ECG encoder, frozen CXR encoder of the cxr stage."""
    if method not in ALIGN_METHODS:
        raise ValueError(f"method {method!r} has no alignment stage; choices: {list(ALIGN_METHODS)}")
    scaling = scaling or ctx.primary_scaling
    sid = stage_id(method, target, variant_suffix(scaling, ctx.primary_scaling))
    pre = ctx.require(seed, pretrain_stage_id(ctx, scaling), sid)
    cxr_saved = ctx.require(seed, CXR_STAGE, sid)
    seed_everything(seed)
    encoder = EcgEncoder(ctx.cfg.ecg)
    encoder.load_state_dict(pre["state_dict"], strict=True)
    cxr_encoder, cxr_dim = frozen_cxr_encoder(cxr_saved)
    model = AlignModel(encoder, cxr_encoder, cxr_dim, ctx.cfg.align.proj_dim)
    return AlignTask(ctx, seed, method, target, model, scaling)


def run_align(ctx: RunContext, seed: int, method: str, target: str | None = None,
              scaling: str | None = None) -> dict[str, Any]:
    """Align (or resume, or reuse) one method's ECG encoder; needs the pretrain and cxr stages of the seed."""
    scaling = scaling or ctx.primary_scaling
    sid = stage_id(method, target, variant_suffix(scaling, ctx.primary_scaling))
    summary = ctx.done(seed, sid)
    if summary is not None:
        return summary
    task = build_align(ctx, seed, method, target, scaling)
    result = fit(task, ctx.cfg.align.optim, seed=seed, ckpt_dir=ctx.ckpt_dir(seed), rt=ctx.rt, tracker=ctx.tracker,
                 config_sha256=ctx.config_sha256, log_tag=ctx.log_tag(seed, sid))
    trained = unwrap(task.model)
    payload = {"kind": ENCODER_KIND, "stage": sid, "method": method, "target": target,
               "encoder_config": trained.ecg_encoder.cfg.to_dict(),
               "state_dict": {k: v.detach().cpu() for k, v in trained.ecg_encoder.state_dict().items()},
               "loss": task.loss_kwargs, "scaling": scaling}
    return ctx.finish(seed, sid, payload, {"method": method, "target": target, "loss": task.loss_kwargs,
                                           "scaling": scaling, **fit_summary(result, "encoder", ctx.cfg.checks)})
