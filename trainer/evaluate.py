"""Predictions and classification metrics (scikit-learn's AUROC and average precision).

AUPRC is scikit-learn's ``average_precision_score`` (step-wise, not the optimistic trapezoidal
``auc(recall, precision)`` of the public code). A label with a single class in the evaluated split
has no AUROC: it is reported as None and counted, never silently replaced.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch
from sklearn.metrics import average_precision_score, roc_auc_score
from torch.utils.data import DataLoader

from trainer.engine import autocast, to_device


@torch.no_grad()
def predict(forward: Callable[[dict[str, Any]], torch.Tensor], model: torch.nn.Module, loader: DataLoader,
            device: torch.device, precision: str) -> tuple[np.ndarray, np.ndarray]:
    """(logits [N, K], targets [N, K]) of ``forward(batch)`` over a loader, in the loader's order."""
    model.eval()
    logits, targets = [], []
    for batch in loader:
        batch = to_device(batch, device)
        with autocast(device, precision):
            out = forward(batch)
        logits.append(out.float().cpu().numpy())
        targets.append(batch["labels"].float().cpu().numpy())
    return np.concatenate(logits), np.concatenate(targets)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def classification_metrics(targets: np.ndarray, probs: np.ndarray,
                           labels: tuple[str, ...] | list[str]) -> dict[str, Any]:
    """Per-label AUROC and average precision, their means over defined labels, and the counts."""
    out: dict[str, Any] = {"n": int(targets.shape[0]), "auroc": {}, "ap": {}, "positives": {}}
    for k, label in enumerate(labels):
        y = targets[:, k]
        out["positives"][label] = int(y.sum())
        if 0 < y.sum() < len(y):
            out["auroc"][label] = float(roc_auc_score(y, probs[:, k]))
            out["ap"][label] = float(average_precision_score(y, probs[:, k]))
        else:
            out["auroc"][label] = None
            out["ap"][label] = None
    defined = [v for v in out["auroc"].values() if v is not None]
    out["mean_auroc"] = float(np.mean(defined)) if defined else None
    defined_ap = [v for v in out["ap"].values() if v is not None]
    out["mean_ap"] = float(np.mean(defined_ap)) if defined_ap else None
    return out


def selection_score(metrics: dict[str, Any], loss: float) -> float:
    """Validation score for model selection: mean AUROC, or -loss when no label has both classes."""
    return metrics["mean_auroc"] if metrics["mean_auroc"] is not None else -loss


def bce(logits: np.ndarray, targets: np.ndarray) -> float:
    """Mean binary cross-entropy of logits (numerically stable)."""
    return float(np.mean(np.maximum(logits, 0) - logits * targets + np.log1p(np.exp(-np.abs(logits)))))

