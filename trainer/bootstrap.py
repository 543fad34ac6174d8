"""Bootstrap confidence intervals of AUROC and average precision, vectorised over replicates.

A bootstrap replicate resamples the test set with replacement; that is the same as giving each
sample a multinomial count as its weight. Sorting the scores once and summing weights per group
of tied scores gives every replicate's weighted AUROC and average precision in a few array
operations. They equal scikit-learn's ``roc_auc_score`` and ``average_precision_score`` with
``sample_weight`` (tests/test_report.py checks this), at a thousandth of the time of calling
scikit-learn B times.

With several seeds, one replicate resamples the test indices once and averages the metric over
the seeds' predictions, so the interval reflects test-set sampling of the seed-averaged metric.
"""

from __future__ import annotations

import numpy as np


def _grouped(scores: np.ndarray, y: np.ndarray, weights: np.ndarray, descending: bool) -> tuple[np.ndarray, np.ndarray]:
    """Weighted positives and negatives per group of tied scores, groups ordered by score: [B, G] each."""
    order = np.argsort(-scores if descending else scores, kind="mergesort")
    s = scores[order]
    starts = np.flatnonzero(np.concatenate(([True], s[1:] != s[:-1])))
    w = weights[:, order]
    yy = y[order].astype(bool)
    pos = np.add.reduceat(np.where(yy, w, 0.0), starts, axis=1)
    neg = np.add.reduceat(np.where(yy, 0.0, w), starts, axis=1)
    return pos, neg


def weighted_auroc(scores: np.ndarray, y: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """AUROC per row of ``weights`` [B, N]; NaN where a replicate lacks positives or negatives."""
    pos, neg = _grouped(scores, y, weights, descending=False)
    neg_below = np.cumsum(neg, axis=1) - neg
    total_pos, total_neg = pos.sum(axis=1), neg.sum(axis=1)
    numer = (pos * (neg_below + 0.5 * neg)).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = numer / (total_pos * total_neg)
    out[(total_pos == 0) | (total_neg == 0)] = np.nan
    return out


def weighted_average_precision(scores: np.ndarray, y: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Average precision (sum of recall steps x precision) per row of ``weights``; NaN without positives."""
    pos, neg = _grouped(scores, y, weights, descending=True)
    tp, fp = np.cumsum(pos, axis=1), np.cumsum(neg, axis=1)
    total_pos = pos.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(tp + fp > 0, tp / (tp + fp), 0.0)
        out = (pos * precision).sum(axis=1) / total_pos
    out[total_pos == 0] = np.nan
    return out


METRICS = {"auroc": weighted_auroc, "ap": weighted_average_precision}


def bootstrap_metric(metric: str, probs: np.ndarray, y: np.ndarray, *, replicates: int, ci: float, seed: int = 0,
                     chunk: int = 200) -> dict[str, float | int | None]:
    """Percentile interval of a metric averaged over seeds.

    ``probs`` [S, N]: one row of test scores per seed; ``y`` [N] in {0, 1}. Returns the lower and
    upper bounds and how many replicates were undefined (a resample without both classes).
    """
    fn = METRICS[metric]
    rng = np.random.default_rng(seed)
    n = y.shape[0]
    values: list[np.ndarray] = []
    done = 0
    while done < replicates:
        b = min(chunk, replicates - done)
        weights = rng.multinomial(n, np.full(n, 1.0 / n), size=b).astype(np.float64)
        values.append(np.mean([fn(p, y, weights) for p in probs], axis=0))
        done += b
    all_values = np.concatenate(values)
    ok = all_values[np.isfinite(all_values)]
    alpha = (1.0 - ci) / 2.0
    if len(ok) < max(10, replicates // 2):
        return {"low": None, "high": None, "undefined": int(replicates - len(ok))}
    return {"low": float(np.quantile(ok, alpha)), "high": float(np.quantile(ok, 1.0 - alpha)),
            "undefined": int(replicates - len(ok))}
