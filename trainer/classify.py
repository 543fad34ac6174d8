"""Supervised classification shared by fine-tuning (ECG) and the CXR classifier: BCE, AUROC selection.

:func:`final_evaluation` is the one place that reads the test split: once per model, after
training has finished and the best validation epoch has been restored.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from trainer.augment import Augment3KG
from trainer.checks import base_rate_loss
from trainer.context import RunContext
from trainer.data import eval_loader
from trainer.evaluate import bce, classification_metrics, predict, selection_score, sigmoid

#: Which cached modality each classifier reads, and how a batch becomes its input.
INPUTS = {"ecg": lambda batch: batch["ecg"][:, 0], "cxr": lambda batch: batch["cxr"]}


class ClassificationTask:
    """BCE on the chosen labels; validation score = mean AUROC over them (minus loss if undefined).

    ``indices`` restricts training to the labelled subset of the low-label protocol; every
    evaluation also records the base-rate loss (trainer.checks) the classifier must beat.
    """

    def __init__(self, ctx: RunContext, stage_id: str, model: nn.Module, *, modality: str, seed: int,
                 target: str | None, augment: Augment3KG | None, batch_size: int, scaling: str | None = None,
                 indices: np.ndarray | None = None) -> None:
        self.ctx, self.stage_id, self.model = ctx, stage_id, model
        self.modality, self.target = modality, target
        self.labels = ctx.labels if target is None else (target,)
        self.train_data = ctx.dataset("train", fields=(modality,), augment=augment, seed=seed, target=target,
                                      scaling=scaling, indices=indices)
        val = ctx.dataset("val", fields=(modality,), target=target, scaling=scaling)
        self.val_loader = eval_loader(val, batch_size, ctx.rt.workers)
        self.scaling = scaling
        self.base_rate_loss = base_rate_loss(self.train_data.labels, val.labels)
        self.encoder_lr_scale = 1.0  # fine-tuning of a pretrained encoder sets [finetune] encoder_lr_scale

    def param_groups(self, lr: float) -> list[dict[str, Any]]:
        """The encoder at ``lr x encoder_lr_scale``, everything else at ``lr`` (trainable parameters only)."""
        encoder = getattr(self.model, "encoder", None)
        if encoder is None or self.encoder_lr_scale == 1.0:
            return [{"params": [p for p in self.model.parameters() if p.requires_grad]}]
        ids = {id(p) for p in encoder.parameters()}
        enc = [p for p in encoder.parameters() if p.requires_grad]
        rest = [p for p in self.model.parameters() if p.requires_grad and id(p) not in ids]
        return [{"params": enc, "lr": lr * self.encoder_lr_scale}, {"params": rest}]

    def forward(self, model: nn.Module, batch: dict[str, Any]) -> torch.Tensor:
        return model(INPUTS[self.modality](batch))

    def loss(self, model: nn.Module, batch: dict[str, Any]) -> torch.Tensor:
        logits = self.forward(model, batch).float()
        return F.binary_cross_entropy_with_logits(logits, batch["labels"].float())

    def validate(self, model: nn.Module) -> tuple[float, dict[str, Any]]:
        logits, targets = predict(lambda b: self.forward(model, b), model, self.val_loader, self.ctx.rt.env.device,
                                  self.ctx.rt.precision)
        metrics = classification_metrics(targets, sigmoid(logits), self.labels)
        loss = bce(logits, targets)
        return selection_score(metrics, loss), {"loss": loss, "base_rate_loss": self.base_rate_loss,
                                                "mean_auroc": metrics["mean_auroc"], "mean_ap": metrics["mean_ap"],
                                                "logit_sd": float(logits.std(axis=0).mean())}


def final_evaluation(task: ClassificationTask, model: nn.Module) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Metrics on validation and test (the test split's only read) and the arrays behind them."""
    ctx = task.ctx
    batch_size = task.val_loader.batch_size
    test_loader = eval_loader(ctx.dataset("test", fields=(task.modality,), target=task.target, scaling=task.scaling),
                              batch_size, ctx.rt.workers)
    out: dict[str, np.ndarray] = {"labels": np.array(task.labels), "val_groups": ctx.groups("val"),
                                  "test_groups": ctx.groups("test")}
    metrics: dict[str, Any] = {}
    for split, loader in (("val", task.val_loader), ("test", test_loader)):
        logits, targets = predict(lambda b: task.forward(model, b), model, loader, ctx.rt.env.device, ctx.rt.precision)
        out[f"{split}_logits"], out[f"{split}_targets"] = logits.astype(np.float32), targets.astype(np.float32)
        metrics[split] = classification_metrics(targets, sigmoid(logits), task.labels)
    return metrics, out
