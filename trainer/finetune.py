"""Stage 4: fine-tuning the ECG encoder and the MLP head with BCE; evaluation on the test split.

Where each method's encoder starts:

| method | encoder before fine-tuning |
|---|---|
| ``supervised`` | random initialisation (supervised from scratch) |
| ``ssl`` | the self-supervised 3KG encoder (``pretrain``) |
| ``clip``, ``supcon``, ``cromotex`` | the aligned encoder (``align-<method>[-<label>]``), from ``pretrain`` |

Protocols: ``multilabel`` trains one model with one output per label (what the bedside deploys);
``binary`` trains one single-output model per label (the paper's protocol). Each finished model
is written in the classifier format of docs/checkpoints.md, with its validation logits so the
exporter can calibrate and pick thresholds without touching the test split.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from trainer.align import ALIGN_METHODS, run_align, stage_id as align_stage_id
from trainer.checkpoint import classifier_checkpoint, seed_everything
from trainer.checks import fit_summary
from trainer.classify import ClassificationTask, final_evaluation
from trainer.context import RunContext, variant_suffix
from trainer.ecg_model import EcgClassifier
from trainer.engine import fit, unwrap
from trainer.pretrain import stage_id as pretrain_stage_id


def model_id(method: str, protocol: str, target: str | None, suffix: str = "") -> str:
    """``<method>-multilabel`` or ``<method>-binary-<label>``, then the variant suffix (trainer.context)."""
    return (f"{method}-{protocol}" if target is None else f"{method}-{protocol}-{target}") + suffix


def stage_id(method: str, protocol: str, target: str | None, suffix: str = "") -> str:
    return f"finetune-{model_id(method, protocol, target, suffix)}"


def initial_encoder(ctx: RunContext, seed: int, method: str, target: str | None, sid: str,
                    scaling: str) -> dict[str, torch.Tensor] | None:
    """The encoder weights fine-tuning starts from (None: random initialisation)."""
    if method == "supervised":
        return None
    if method == "ssl":
        return ctx.require(seed, pretrain_stage_id(ctx, scaling), sid)["state_dict"]
    if method in ALIGN_METHODS:
        suffix = variant_suffix(scaling, ctx.primary_scaling)
        return ctx.require(seed, align_stage_id(method, target, suffix), sid)["state_dict"]
    raise ValueError(f"unknown method {method!r}")


def run_finetune(ctx: RunContext, seed: int, method: str, protocol: str, target: str | None = None,
                 scaling: str | None = None, fraction: float = 1.0) -> dict[str, Any]:
    """Fine-tune (or resume, or reuse) one model and evaluate it; returns its summary."""
    if (protocol == "binary") != (target is not None):
        raise ValueError(f"protocol {protocol!r} with target {target!r}: binary models need a label, multilabel none")
    scaling = scaling or ctx.primary_scaling
    suffix = variant_suffix(scaling, ctx.primary_scaling, fraction)
    sid = stage_id(method, protocol, target, suffix)
    summary = ctx.done(seed, sid)
    if summary is not None:
        return summary
    init = initial_encoder(ctx, seed, method, target, sid, scaling)
    seed_everything(seed)
    labels = ctx.labels if target is None else (target,)
    head_cfg = dataclasses.replace(ctx.cfg.head, outputs=len(labels))
    model = EcgClassifier(ctx.cfg.ecg, head_cfg)
    if init is not None:
        model.encoder.load_state_dict(init, strict=True)
    optim = ctx.cfg.finetune.optim
    task = ClassificationTask(ctx, sid, model, modality="ecg", seed=seed, target=target,
                              augment=ctx.cfg.augment if ctx.cfg.finetune.augment else None,
                              batch_size=optim.batch_size, scaling=scaling,
                              indices=ctx.labelled_subset(seed, fraction))
    if init is not None:
        task.encoder_lr_scale = ctx.cfg.finetune.encoder_lr_scale
    result = fit(task, optim, seed=seed, ckpt_dir=ctx.ckpt_dir(seed), rt=ctx.rt, tracker=ctx.tracker,
                 config_sha256=ctx.config_sha256, log_tag=ctx.log_tag(seed, sid))
    trained = unwrap(task.model)
    metrics, arrays = final_evaluation(task, trained) if ctx.rt.env.is_main else ({}, None)
    val_outputs = {} if arrays is None else {"logits": torch.from_numpy(arrays["val_logits"]),
                                             "targets": torch.from_numpy(arrays["val_targets"])}
    payload = classifier_checkpoint(trained.cpu(), head_cfg, labels=labels, recipe=ctx.recipe(scaling).to_dict(),
                                    cache_dir=ctx.cache.root, manifest_sha256=ctx.cache.manifest_sha256,
                                    config=ctx.cfg.to_dict(), config_sha256=ctx.config_sha256, method=method,
                                    protocol=protocol, seed=seed, metrics=metrics, val_outputs=val_outputs)
    trained.to(ctx.rt.env.device)
    return ctx.finish(seed, sid, payload, {
        "model_id": model_id(method, protocol, target, suffix), "method": method, "protocol": protocol,
        "target": target, "scaling": scaling, "label_fraction": fraction, "modality": "ecg",
        "labelled_train_items": len(task.train_data), **fit_summary(result, "classifier", ctx.cfg.checks),
        "metrics": metrics}, predictions=arrays)


def run_method(ctx: RunContext, seed: int, method: str, protocol: str, scaling: str | None = None,
               fraction: float = 1.0) -> list[dict[str, Any]]:
    """Every model of one method and protocol for a seed (aligning first where the method needs it)."""
    if method == "features":
        from trainer.floor import run_features

        return [run_features(ctx, seed, protocol, scaling or ctx.primary_scaling, fraction)]
    targets: list[str | None] = [None] if protocol == "multilabel" else list(ctx.labels)
    out = []
    for target in targets:
        if method in ALIGN_METHODS:
            run_align(ctx, seed, method, target, scaling)
        out.append(run_finetune(ctx, seed, method, protocol, target, scaling, fraction))
    return out
