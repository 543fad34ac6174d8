"""Decision thresholds per pathology, chosen on validation at an operating point.

An operating point fixes one rate and the threshold gives the best other rate under it:
``specificity=0.90`` (the default) picks, per pathology, the lowest threshold whose validation
specificity is at least 0.90, i.e. the highest sensitivity at that specificity;
``sensitivity=0.80`` picks the highest threshold whose sensitivity is at least 0.80.
A window is positive when its calibrated probability is >= the threshold. Thresholds lie halfway
between two neighbouring validation scores, so ``>=`` and ``>`` decide the validation set alike.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

METRICS = ("specificity", "sensitivity")


@dataclass(frozen=True)
class OperatingPoint:
    """A target rate on validation: ``metric`` in METRICS, ``target`` in (0, 1)."""

    metric: str = "specificity"
    target: float = 0.90

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise ValueError(f"operating point metric {self.metric!r} unknown; choices: {list(METRICS)}")
        if not 0.0 < self.target < 1.0:
            raise ValueError(f"operating point {self.metric}={self.target} must lie strictly between 0 and 1")

    def __str__(self) -> str:
        return f"{self.metric}={self.target:g}"

    @classmethod
    def parse(cls, text: str) -> "OperatingPoint":
        """``"specificity=0.90"`` or ``"sensitivity=0.8"`` to an OperatingPoint (ValueError if bad)."""
        metric, sep, value = text.partition("=")
        try:
            target = float(value)
        except ValueError:
            target = float("nan")
        example = "write e.g. specificity=0.90 or sensitivity=0.80"
        if not sep or target != target:
            raise ValueError(f"operating point {text!r} not understood; {example}")
        try:
            return cls(metric.strip().lower(), target)
        except ValueError as exc:
            raise ValueError(f"{exc}; {example}") from None


def sens_spec(y: np.ndarray, scores: np.ndarray, threshold: float) -> tuple[float, float]:
    """(sensitivity, specificity) of ``scores >= threshold`` against binary ``y``; NaN without cases."""
    y = np.asarray(y).astype(bool)
    pred = np.asarray(scores) >= threshold
    sens = float(pred[y].mean()) if y.any() else float("nan")
    spec = float((~pred[~y]).mean()) if (~y).any() else float("nan")
    return sens, spec


def choose_threshold(y: np.ndarray, scores: np.ndarray, point: OperatingPoint) -> float:
    """Threshold in [0, 1] meeting ``point`` on (y, scores) with the best other rate."""
    y = np.asarray(y).astype(bool)
    s = np.asarray(scores, dtype=np.float64)
    if y.all() or not y.any():
        raise ValueError(f"threshold needs positives and negatives; got {int(y.sum())} positive of {len(y)}")
    # candidate cuts: below every score, between each pair of neighbouring distinct scores, above all
    u = np.unique(s)
    cuts = np.concatenate(([max(0.0, u[0] - 1e-6)], (u[:-1] + u[1:]) / 2, [min(1.0, u[-1] + 1e-6)]))
    cuts = cuts[(cuts > u[-1]) | (np.arange(len(cuts)) < len(cuts) - 1)]  # a top score of 1.0 has no cut above
    # rates at each cut from sorted scores: count of scores >= cut
    neg, pos = np.sort(s[~y]), np.sort(s[y])
    spec = np.searchsorted(neg, cuts, side="left") / len(neg)
    sens = 1.0 - np.searchsorted(pos, cuts, side="left") / len(pos)
    rate = spec if point.metric == "specificity" else sens
    ok = np.flatnonzero(rate >= point.target)
    if not ok.size:
        raise ValueError(f"no threshold in [0, 1] reaches {point} (best {rate.max():.3f})")
    # specificity grows with the cut: take the lowest such cut; sensitivity falls: take the highest
    return float(cuts[ok[0]] if point.metric == "specificity" else cuts[ok[-1]])


def choose_thresholds(y: np.ndarray, scores: np.ndarray, labels: list[str],
                      point: OperatingPoint) -> dict[str, float]:
    """Per-label thresholds for [N, K] labels and calibrated scores."""
    out = {}
    for k, label in enumerate(labels):
        try:
            out[label] = choose_threshold(y[:, k], scores[:, k], point)
        except ValueError as exc:
            raise ValueError(f"{label}: {exc}") from exc
    return out
