"""The feature floor: crude ECG features + logistic regression, on the same splits, scalings and seeds.

A deep model that does not beat this floor has not learnt anything a cardiologist's ruler could not
measure. The features (trainer.features) are computed from the very windows the networks see (the
run's scaling), once per split and scaling; the regression is fitted on the labelled training
subset of the seed and label fraction (the same subjects the networks' fine-tuning uses) and its
validation and test logits are written like every other model's predictions.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from trainer.context import RunContext, variant_suffix
from trainer.data import eval_loader

METHOD = "features"


def split_features(ctx: RunContext, split: str, scaling: str) -> tuple[np.ndarray, np.ndarray]:
    """(features [N, F], labels [N, K]) of a whole split at a scaling; computed once per run directory."""
    from trainer.features import crude_features

    key = f"features:{split}:{scaling}"
    if key in ctx.memo:
        return ctx.memo[key]
    path = ctx.run_dir / "features" / f"{split}-{scaling}.npz"
    if path.exists():
        with np.load(path) as z:
            ctx.memo[key] = (z["x"], z["y"])
        return ctx.memo[key]
    data = ctx.dataset(split, fields=("ecg",), scaling=scaling)
    xs, ys = [], []
    for batch in eval_loader(data, 256, ctx.rt.workers):
        xs.append(crude_features(batch["ecg"][:, 0].numpy(), ctx.cache.recipe.fs_hz))
        ys.append(batch["labels"].numpy())
    out = (np.concatenate(xs).astype(np.float32), np.concatenate(ys).astype(np.float32))
    if ctx.rt.env.is_main:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.stem}.tmp.npz")
        np.savez(tmp, x=out[0], y=out[1])
        tmp.replace(path)
    ctx.memo[key] = out
    return out


def run_features(ctx: RunContext, seed: int, protocol: str, scaling: str, fraction: float) -> dict[str, Any]:
    """Fit (or reuse) the floor of one seed, scaling and label fraction; returns its summary."""
    from trainer.evaluate import classification_metrics, sigmoid
    from trainer.features import FEATURE_NAMES, fit_feature_baseline

    suffix = variant_suffix(scaling, ctx.primary_scaling, fraction)
    model_id = f"{METHOD}-multilabel{suffix}"
    sid = f"floor-{model_id}"
    summary = ctx.done(seed, sid)
    if summary is not None:
        return summary
    train_x, train_y = split_features(ctx, "train", scaling)
    rows = ctx.labelled_subset(seed, fraction)
    if rows is not None:
        train_x, train_y = train_x[rows], train_y[rows]
    val_x, val_y = split_features(ctx, "val", scaling)
    test_x, test_y = split_features(ctx, "test", scaling)
    val_logits, test_logits = fit_feature_baseline(train_x, train_y, [val_x, test_x])
    labels = ctx.labels
    metrics = {"val": classification_metrics(val_y, sigmoid(val_logits), labels),
               "test": classification_metrics(test_y, sigmoid(test_logits), labels)}
    arrays = {"labels": np.array(labels), "val_logits": val_logits.astype(np.float32), "val_targets": val_y,
              "test_logits": test_logits.astype(np.float32), "test_targets": test_y,
              "val_groups": ctx.groups("val"), "test_groups": ctx.groups("test")}
    payload = {"kind": "cromotex-feature-floor", "stage": sid, "features": list(FEATURE_NAMES), "scaling": scaling}
    ctx.tracker.message(f"{ctx.log_tag(seed, sid)}: validation mean AUROC {metrics['val']['mean_auroc']:.3f} "
                        f"({len(train_x)} labelled training windows)")
    return ctx.finish(seed, sid, payload, {
        "model_id": model_id, "method": METHOD, "protocol": "multilabel", "target": None, "scaling": scaling,
        "label_fraction": fraction, "modality": "ecg", "labelled_train_items": int(len(train_x)),
        "val_score": metrics["val"]["mean_auroc"], "metrics": metrics,
        "checks": {"collapsed": False, "base_rate": False, "no_learning": False, "flags": [], "final": {}}},
        predictions=arrays)
