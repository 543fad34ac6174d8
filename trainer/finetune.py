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
from trainer.classify import ClassificationTask, final_evaluation
from trainer.context import RunContext
from trainer.ecg_model import EcgClassifier
from trainer.engine import fit, unwrap
from trainer.pretrain import STAGE as PRETRAIN_STAGE


def model_id(method: str, protocol: str, target: str | None) -> str:
    """``<method>-multilabel`` or ``<method>-binary-<label>``."""
    return f"{method}-{protocol}" if target is None else f"{method}-{protocol}-{target}"


def stage_id(method: str, protocol: str, target: str | None) -> str:
    return f"finetune-{model_id(method, protocol, target)}"


def initial_encoder(ctx: RunContext, seed: int, method: str, target: str | None,
                    sid: str) -> dict[str, torch.Tensor] | None:
    """The encoder weights fine-tuning starts from (None: random initialisation)."""
    if method == "supervised":
        return None
    if method == "ssl":
        return ctx.require(seed, PRETRAIN_STAGE, sid)["state_dict"]
    if method in ALIGN_METHODS:
        return ctx.require(seed, align_stage_id(method, target), sid)["state_dict"]
    raise ValueError(f"unknown method {method!r}")


def run_finetune(ctx: RunContext, seed: int, method: str, protocol: str, target: str | None = None) -> dict[str, Any]:
    """Fine-tune (or resume, or reuse) one model and evaluate it; returns its summary."""
    if (protocol == "binary") != (target is not None):
        raise ValueError(f"protocol {protocol!r} with target {target!r}: binary models need a label, multilabel none")
    sid = stage_id(method, protocol, target)
    summary = ctx.done(seed, sid)
    if summary is not None:
        return summary
    init = initial_encoder(ctx, seed, method, target, sid)
    seed_everything(seed)
    labels = ctx.labels if target is None else (target,)
    head_cfg = dataclasses.replace(ctx.cfg.head, outputs=len(labels))
    model = EcgClassifier(ctx.cfg.ecg, head_cfg)
    if init is not None:
        model.encoder.load_state_dict(init, strict=True)
    optim = ctx.cfg.finetune.optim
    task = ClassificationTask(ctx, sid, model, modality="ecg", seed=seed, target=target,
                              augment=ctx.cfg.augment if ctx.cfg.finetune.augment else None,
                              batch_size=optim.batch_size)
    result = fit(task, optim, seed=seed, ckpt_dir=ctx.ckpt_dir(seed), rt=ctx.rt, tracker=ctx.tracker,
                 config_sha256=ctx.config_sha256, log_tag=ctx.log_tag(seed, sid))
    trained = unwrap(task.model)
    metrics, arrays = final_evaluation(task, trained) if ctx.rt.env.is_main else ({}, None)
    val_outputs = {} if arrays is None else {"logits": torch.from_numpy(arrays["val_logits"]),
                                             "targets": torch.from_numpy(arrays["val_targets"])}
    payload = classifier_checkpoint(trained.cpu(), head_cfg, labels=labels, recipe=ctx.cache.recipe.to_dict(),
                                    cache_dir=ctx.cache.root, manifest_sha256=ctx.cache.manifest_sha256,
                                    config=ctx.cfg.to_dict(), config_sha256=ctx.config_sha256, method=method,
                                    protocol=protocol, seed=seed, metrics=metrics, val_outputs=val_outputs)
    trained.to(ctx.rt.env.device)
    return ctx.finish(seed, sid, payload, {
        "model_id": model_id(method, protocol, target), "method": method, "protocol": protocol, "target": target,
        "modality": "ecg", "seconds": result.seconds, "epochs": result.epochs_run, "best_epoch": result.best_epoch,
        "val_score": result.best_score, "stopped_early": result.stopped_early, "resumed_from": result.resumed_from,
        "metrics": metrics}, predictions=arrays)


def run_method(ctx: RunContext, seed: int, method: str, protocol: str) -> list[dict[str, Any]]:
    """Every model of one method and protocol for a seed (aligning first where the method needs it)."""
    targets: list[str | None] = [None] if protocol == "multilabel" else list(ctx.labels)
    out = []
    for target in targets:
        if method in ALIGN_METHODS:
            run_align(ctx, seed, method, target)
        out.append(run_finetune(ctx, seed, method, protocol, target))
    return out
