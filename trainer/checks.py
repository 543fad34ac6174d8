"""Learning and collapse checks: what every evaluation of a stage records, and what gets flagged.

A contrastive stage can "converge" to a constant embedding (the loss sits at log(batch) and every
sample looks alike); a classifier can settle on the label frequencies (the base-rate loss). Both
look like finished training unless measured. At every evaluation a stage records:

- encoders (pretrain, align): the spread of the validation embeddings, as the mean off-diagonal
  cosine similarity (:func:`embedding_spread`: 1.0 when collapsed) and the effective rank (exp of
  the entropy of the normalised singular values, Roy & Vetterli 2007: 1.0 when collapsed), and a
  linear probe per label (scikit-learn logistic regression fitted on frozen training embeddings,
  AUROC on validation);
- classifiers (finetune, cxr): the validation loss against the base-rate loss (the BCE of
  predicting the training prevalence for every sample).

A stage is flagged (run summary, ``trainer report``, the export) from the evaluation whose weights
it keeps. Thresholds (:class:`CheckConfig`, the ``[checks]`` table) and why they are where they are:

- ``collapse_cos = 0.95``: a random transformer encoder gives 0.56-0.70 on this cohort, encoders
  that learnt 0.2-0.85, collapsed ones 0.996-0.998 (measured on the demo cohort); 0.95 sits well
  between. A randomly initialised CNN encoder gives 1.00 (its ReLU-pooled, layer-normed outputs
  share one large common direction): a stage that keeps its starting point is flagged, rightly;
- ``min_effective_rank = 2.0``: a collapsed embedding has rank ~1; any useful one for three labels
  needs more than two directions;
- ``base_rate_margin = 0.02``, ``min_logit_sd = 0.05`` and ``min_auroc = 0.6``: a classifier whose
  mean validation AUROC is below 0.6 AND whose validation loss is not 2 % below the base-rate loss
  or whose logits vary between samples by an SD below 0.05 predicts (almost) label frequencies (the
  demo's unlearnt classifiers: loss within 1 %, logit SD 0.005-0.05, AUROC ~0.5). Neither the loss
  nor the logit spread alone is enough: selection is on AUROC, and a well-ranking model kept early
  in its warm-up can be miscalibrated (loss above the base rate at AUROC 0.77) or have a narrow
  logit range (SD 0.03 at AUROC 0.92, both measured);
- ``min_loss_drop = 0.01`` (encoders) and ``min_auroc_gain = 0.01`` (classifiers, which are
  selected on AUROC): a stage whose kept evaluation is not that much better than the one before
  its first step has not learnt (a learning rate of 0 is the clearest case).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class CheckConfig:
    """Thresholds of the learning and collapse checks (see the module docstring for the values)."""

    collapse_cos: float = 0.95
    min_effective_rank: float = 2.0
    base_rate_margin: float = 0.02
    min_auroc: float = 0.6
    min_logit_sd: float = 0.05
    min_loss_drop: float = 0.01
    min_auroc_gain: float = 0.01
    probe_max_train: int = 2000  # training embeddings the linear probe is fitted on (a fixed, spread subset)

    def validate(self) -> None:
        """Raise ValueError naming the field of a value that cannot be used."""
        if not 0 < self.collapse_cos <= 1:
            raise ValueError(f"collapse_cos={self.collapse_cos} must be in (0, 1]")
        if not self.min_effective_rank >= 1:
            raise ValueError(f"min_effective_rank={self.min_effective_rank} must be >= 1")
        if not 0 <= self.base_rate_margin < 1:
            raise ValueError(f"base_rate_margin={self.base_rate_margin} must be in [0, 1)")
        if not 0.5 <= self.min_auroc < 1:
            raise ValueError(f"min_auroc={self.min_auroc} must be in [0.5, 1)")
        if not self.min_logit_sd >= 0:
            raise ValueError(f"min_logit_sd={self.min_logit_sd} must be >= 0")
        if not 0 <= self.min_auroc_gain < 0.5:
            raise ValueError(f"min_auroc_gain={self.min_auroc_gain} must be in [0, 0.5)")
        if not 0 <= self.min_loss_drop < 1:
            raise ValueError(f"min_loss_drop={self.min_loss_drop} must be in [0, 1)")
        if self.probe_max_train < 20:
            raise ValueError(f"probe_max_train={self.probe_max_train} must be >= 20")


def embedding_spread(z: np.ndarray) -> dict[str, float]:
    """Mean off-diagonal cosine similarity and effective rank of embeddings [N, D]."""
    z = np.asarray(z, dtype=np.float64)
    n = z.shape[0]
    if n < 2:
        return {"spread_cos": math.nan, "eff_rank": math.nan}
    unit = z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)
    total = unit.sum(axis=0)
    mean_cos = (float(total @ total) - n) / (n * (n - 1))  # sum over i != j of cos(i, j), averaged
    s = np.linalg.svd(z - z.mean(axis=0), compute_uv=False)
    p = s / s.sum() if s.sum() > 0 else np.ones(1)
    p = p[p > 0]
    return {"spread_cos": mean_cos, "eff_rank": float(math.exp(-(p * np.log(p)).sum()))}


def linear_probe(train_z: np.ndarray, train_y: np.ndarray, val_z: np.ndarray, val_y: np.ndarray,
                 labels: tuple[str, ...] | list[str]) -> dict[str, float | None]:
    """Validation AUROC per label of a logistic regression on frozen (standardised) embeddings."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    mean, sd = train_z.mean(axis=0), train_z.std(axis=0) + 1e-6
    a, b = (train_z - mean) / sd, (val_z - mean) / sd
    out: dict[str, float | None] = {}
    for k, label in enumerate(labels):
        y, yv = train_y[:, k], val_y[:, k]
        if not (0 < y.sum() < len(y) and 0 < yv.sum() < len(yv)):
            out[label] = None
            continue
        clf = LogisticRegression(C=1.0, max_iter=500).fit(a, y)
        out[label] = float(roc_auc_score(yv, clf.decision_function(b)))
    return out


def base_rate_loss(train_y: np.ndarray, val_y: np.ndarray) -> float:
    """Mean BCE on ``val_y`` of predicting each label's training prevalence for every sample."""
    p = np.clip(train_y.mean(axis=0), 1e-6, 1 - 1e-6)
    return float(np.mean(-(val_y * np.log(p) + (1 - val_y) * np.log(1 - p))))


def encoder_metrics(train_z: np.ndarray, train_y: np.ndarray, val_z: np.ndarray, val_y: np.ndarray,
                    labels: tuple[str, ...] | list[str]) -> dict[str, Any]:
    """What an encoder stage records at an evaluation: spread, effective rank, linear probes."""
    probe = linear_probe(train_z, train_y, val_z, val_y, labels)
    defined = [v for v in probe.values() if v is not None]
    return {**embedding_spread(val_z), "probe_auroc": probe,
            "probe_mean_auroc": float(np.mean(defined)) if defined else None}


def assess(kind: str, initial: dict[str, Any] | None, kept: dict[str, Any], cfg: CheckConfig) -> dict[str, Any]:
    """Flags of a finished stage from the evaluation it keeps (``kept``) and the one before its first step.

    ``kind`` is "encoder" or "classifier". Returns ``{"collapsed", "base_rate", "no_learning",
    "flags": [plain sentences], "final": {the kept evaluation's check metrics}}``.
    """
    flags: list[str] = []
    collapsed = base_rate = no_learning = False
    final = {k: kept.get(k) for k in ("global_step", "loss", "spread_cos", "eff_rank", "probe_mean_auroc",
                                      "base_rate_loss", "mean_auroc", "logit_sd") if kept.get(k) is not None}
    if kind == "encoder":
        cos, rank = kept.get("spread_cos"), kept.get("eff_rank")
        reasons = []
        if cos is not None and math.isfinite(cos) and cos >= cfg.collapse_cos:
            reasons.append(f"mean off-diagonal cosine {cos:.3f} >= {cfg.collapse_cos:g}")
        if rank is not None and math.isfinite(rank) and rank < cfg.min_effective_rank:
            reasons.append(f"effective rank {rank:.2f} < {cfg.min_effective_rank:g}")
        if reasons:
            collapsed = True
            flags.append("collapsed (" + "; ".join(reasons) + ")")
    if kind == "classifier":
        loss, base = kept.get("loss"), kept.get("base_rate_loss")
        auroc, sd = kept.get("mean_auroc"), kept.get("logit_sd")
        weak = auroc is None or auroc < cfg.min_auroc
        if weak and sd is not None and sd < cfg.min_logit_sd:
            base_rate = True
            flags.append(f"at the base rate (validation logits vary by SD {sd:.3f} < {cfg.min_logit_sd:g}: "
                         f"the same output for every sample; mean AUROC {_num(auroc)})")
        elif weak and loss is not None and base is not None and loss > (1.0 - cfg.base_rate_margin) * base:
            base_rate = True
            flags.append(f"at the base rate (validation loss {loss:.4f} not {cfg.base_rate_margin:.0%} below the "
                         f"base-rate loss {base:.4f}; mean AUROC {_num(auroc)} < {cfg.min_auroc:g})")
    if initial is not None and kind == "classifier":  # selected on AUROC: judge learning on AUROC
        before, after = initial.get("mean_auroc"), kept.get("mean_auroc")
        if before is not None and after is not None and not after > before + cfg.min_auroc_gain:
            no_learning = True
            flags.append(f"did not learn (validation mean AUROC {after:.3f} vs {before:.3f} before the first step)")
    elif initial is not None and initial.get("loss") is not None and kept.get("loss") is not None:
        before, after = float(initial["loss"]), float(kept["loss"])
        if not after < before - cfg.min_loss_drop * abs(before):
            no_learning = True
            flags.append(f"did not learn (validation loss {after:.4f} vs {before:.4f} before the first step)")
    return {"collapsed": collapsed, "base_rate": base_rate, "no_learning": no_learning, "flags": flags,
            "final": final}


def _num(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def fit_summary(result: Any, kind: str, cfg: CheckConfig) -> dict[str, Any]:
    """The summary fields of a finished stage from its ``trainer.engine.FitResult``, with its checks."""
    return {"seconds": result.seconds, "steps": result.steps_run, "epochs": result.epochs,
            "best_step": result.best_step, "val_score": result.best_score, "stopped_early": result.stopped_early,
            "resumed_from": result.resumed_from, "checks": assess(kind, result.initial, result.kept, cfg)}
