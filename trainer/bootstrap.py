"""Bootstrap confidence intervals of AUROC and average precision, vectorised over replicates.

A bootstrap replicate resamples the test set with replacement; that is the same as giving each
sample a multinomial count as its weight. Sorting the scores once and summing weights per group
of tied scores gives every replicate's weighted AUROC and average precision in a few array
operations. They equal scikit-learn's ``roc_auc_score`` and ``average_precision_score`` with
``sample_weight`` (tests/test_report.py checks this), at a thousandth of the time of calling
scikit-learn B times.

With several seeds, one replicate resamples the test indices once and averages the metric over
the seeds' predictions, so the interval reflects test-set sampling of the seed-averaged metric.

Subject-level (cluster) bootstrap: a subject contributes several ECG-CXR pairs that are not
independent, so resampling pairs understates the spread. With ``groups`` (a subject id per sample)
a replicate draws subjects with replacement and every sample weighs as often as its subject was
drawn. :func:`paired_difference` resamples the same subjects for two models, so the interval of
their difference reflects only what differs between them.
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


def replicate_weights(rng: np.random.Generator, n: int, b: int, groups: np.ndarray | None) -> np.ndarray:
    """[b, n] bootstrap weights: multinomial counts per sample, or per subject spread to its samples."""
    if groups is None:
        return rng.multinomial(n, np.full(n, 1.0 / n), size=b).astype(np.float64)
    _, inverse = np.unique(np.asarray(groups), return_inverse=True)
    g = int(inverse.max()) + 1
    counts = rng.multinomial(g, np.full(g, 1.0 / g), size=b).astype(np.float64)
    return counts[:, inverse]


def _replicates(metric: str, probs_sets: list[np.ndarray], y: np.ndarray, groups: np.ndarray | None,
                replicates: int, seed: int, chunk: int) -> list[np.ndarray]:
    """Per set of [S, N] scores: [replicates] seed-averaged metric values, all sets on the same resamples."""
    fn = METRICS[metric]
    rng = np.random.default_rng(seed)
    n = y.shape[0]
    out: list[list[np.ndarray]] = [[] for _ in probs_sets]
    done = 0
    while done < replicates:
        b = min(chunk, replicates - done)
        weights = replicate_weights(rng, n, b, groups)
        for slot, probs in zip(out, probs_sets):
            slot.append(np.mean([fn(p, y, weights) for p in probs], axis=0))
        done += b
    return [np.concatenate(v) for v in out]


def _interval(values: np.ndarray, replicates: int, ci: float) -> dict[str, float | int | None]:
    ok = values[np.isfinite(values)]
    alpha = (1.0 - ci) / 2.0
    if len(ok) < max(10, replicates // 2):
        return {"low": None, "high": None, "undefined": int(replicates - len(ok))}
    return {"low": float(np.quantile(ok, alpha)), "high": float(np.quantile(ok, 1.0 - alpha)),
            "undefined": int(replicates - len(ok))}


def bootstrap_metric(metric: str, probs: np.ndarray, y: np.ndarray, *, replicates: int, ci: float, seed: int = 0,
                     chunk: int = 200, groups: np.ndarray | None = None) -> dict[str, float | int | None]:
    """Percentile interval of a metric averaged over seeds.

    ``probs`` [S, N]: one row of test scores per seed; ``y`` [N] in {0, 1}; ``groups`` [N] subject
    ids for the subject-level bootstrap (None: samples resampled as if independent). Returns the
    lower and upper bounds and how many replicates were undefined (a resample without both classes).
    """
    probs = np.atleast_2d(probs)
    (values,) = _replicates(metric, [probs], y, groups, replicates, seed, chunk)
    return _interval(values, replicates, ci)


def paired_difference(metric: str, probs_a: np.ndarray, probs_b: np.ndarray, y: np.ndarray, *, replicates: int,
                      ci: float, groups: np.ndarray | None = None, seed: int = 0,
                      chunk: int = 200) -> dict[str, float | int | None]:
    """Interval of metric(A) - metric(B) (each seed-averaged) on the same resampled subjects.

    ``probs_a`` [Sa, N] and ``probs_b`` [Sb, N] score the same samples. Also returns the observed
    difference and ``p_not_better``: the share of replicates where A does not beat B (a one-sided
    bootstrap p-value for "A > B").
    """
    probs_a, probs_b = np.atleast_2d(probs_a), np.atleast_2d(probs_b)
    ones = np.ones((1, y.shape[0]))
    fn = METRICS[metric]
    observed = float(np.mean([fn(p, y, ones) for p in probs_a]) - np.mean([fn(p, y, ones) for p in probs_b]))
    a, b = _replicates(metric, [probs_a, probs_b], y, groups, replicates, seed, chunk)
    diff = a - b
    out = {"diff": observed, **_interval(diff, replicates, ci)}
    ok = diff[np.isfinite(diff)]
    out["p_not_better"] = float(np.mean(ok <= 0)) if len(ok) else None
    return out
