"""The encoder checks of pretraining and alignment, measured at every evaluation (trainer.checks).

:class:`EncoderProbe` embeds a fixed, evenly spread subset of the training split and the whole
validation split (no augmentation, the run's scaling) with the encoder being trained, then records
the embedding spread, the effective rank and a linear probe per label. The probe reads labels,
but only to measure: pretraining and alignment select their weights on their own losses.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from trainer.checks import encoder_metrics
from trainer.context import RunContext
from trainer.data import eval_loader
from trainer.engine import to_device


class EncoderProbe:
    """Embeds fixed training and validation items with an ECG encoder and measures them."""

    def __init__(self, ctx: RunContext, scaling: str, batch_size: int) -> None:
        n_train = len(ctx.cache.split("train"))
        keep = min(n_train, ctx.cfg.checks.probe_max_train)
        rows = np.unique(np.linspace(0, n_train - 1, keep).round().astype(np.int64))
        train = ctx.dataset("train", fields=("ecg",), scaling=scaling, indices=rows)
        val = ctx.dataset("val", fields=("ecg",), scaling=scaling)
        self.loaders = {"train": eval_loader(train, batch_size, ctx.rt.workers),
                        "val": eval_loader(val, batch_size, ctx.rt.workers)}
        self.labels = ctx.labels
        self.device = ctx.rt.env.device

    @torch.no_grad()
    def embed(self, encoder: nn.Module, split: str) -> tuple[np.ndarray, np.ndarray]:
        """(embeddings [N, D], labels [N, K]) of a split's probe items."""
        was_training = encoder.training
        encoder.eval()
        zs, ys = [], []
        for batch in self.loaders[split]:
            batch = to_device(batch, self.device)
            zs.append(encoder(batch["ecg"][:, 0]).float().cpu().numpy())
            ys.append(batch["labels"].cpu().numpy())
        encoder.train(was_training)
        return np.concatenate(zs), np.concatenate(ys)

    def measure(self, encoder: nn.Module) -> dict[str, Any]:
        """Spread, effective rank and linear-probe AUROC per label of the encoder's embeddings."""
        train_z, train_y = self.embed(encoder, "train")
        val_z, val_y = self.embed(encoder, "val")
        return encoder_metrics(train_z, train_y, val_z, val_y, self.labels)
