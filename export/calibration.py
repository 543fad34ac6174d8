"""Probability calibration fitted on the validation split (scikit-learn), stored in the bundle.

The bedside applies it with :func:`bedside.bundle.calibrate` (one implementation, used here too):

- ``platt``: ``sigmoid(a * logit(p) + b)`` per label, a logistic regression of the label on the
  logit of the model's probability, with Platt's smoothed targets;
- ``isotonic``: a monotone step fit (``IsotonicRegression``), stored as its knots ``x``/``y`` and
  applied as the piecewise-linear interpolation through them, clipped at both ends (what
  scikit-learn's ``predict`` computes);
- ``identity``: the model's probabilities unchanged.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bedside.bundle import calibrate

METHODS = ("platt", "isotonic", "identity")
_EPS = 1e-7  # the clip bedside.bundle.calibrate applies before the logit
#: Smallest Platt slope written: the bedside refuses a <= 0 (a map that is flat or reverses the ranking).
MIN_PLATT_A = 1e-6


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), _EPS, 1 - _EPS)
    return np.log(p) - np.log1p(-p)


def fit_platt(p: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Platt parameters {a, b} of one label from raw probabilities and {0, 1} targets.

    Platt's (1999) smoothed targets, (N+ + 1) / (N+ + 2) and 1 / (N- + 2), keep ``a`` finite even
    when the validation scores separate the classes perfectly (an unsmoothed fit diverges there).
    Soft targets enter scikit-learn as each sample twice, once per class, weighted t and 1 - t.
    """
    from sklearn.linear_model import LogisticRegression

    y = np.asarray(y).astype(bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    t = np.where(y, (n_pos + 1) / (n_pos + 2), 1 / (n_neg + 2))
    z = _logit(p).reshape(-1, 1)
    lr = LogisticRegression(C=np.inf, solver="lbfgs", max_iter=1000)  # C=inf: no penalty beyond the smoothing
    lr.fit(np.vstack([z, z]), np.r_[np.ones(len(z)), np.zeros(len(z))].astype(int), sample_weight=np.r_[t, 1 - t])
    # a <= 0: the scores carry no (or reversed) information on validation, so the label is not validated and
    # never alarms; the floor keeps the map increasing, as the bedside requires, and nearly flat (~ sigmoid(b))
    return {"a": max(float(lr.coef_[0, 0]), MIN_PLATT_A), "b": float(lr.intercept_[0])}


def fit_isotonic(p: np.ndarray, y: np.ndarray) -> dict[str, list[float]]:
    """Isotonic knots {x, y} of one label (increasing x, non-decreasing y in [0, 1])."""
    from sklearn.isotonic import IsotonicRegression

    iso = IsotonicRegression(y_min=0.0, y_max=1.0, increasing=True, out_of_bounds="clip")
    iso.fit(np.asarray(p, dtype=np.float64), np.asarray(y, dtype=np.float64))
    return {"x": [float(v) for v in iso.X_thresholds_], "y": [float(v) for v in iso.y_thresholds_]}


def fit_calibration(p: np.ndarray, y: np.ndarray, labels: list[str], method: str) -> dict[str, Any]:
    """The bundle's ``calibration`` entry fitted on raw probabilities [N, K] and labels [N, K]."""
    if method not in METHODS:
        raise ValueError(f"calibration {method!r} unknown; choices: {list(METHODS)}")
    if method == "identity":
        return {"method": "identity"}
    params = {}
    for k, label in enumerate(labels):
        yk = np.asarray(y[:, k])
        if yk.min() == yk.max():
            raise ValueError(f"cannot fit {method} calibration for {label}: the validation split has "
                             f"only {'positives' if yk.min() else 'negatives'}; use --calibration none")
        params[label] = fit_platt(p[:, k], yk) if method == "platt" else fit_isotonic(p[:, k], yk)
    return {"method": method, "params": params, "fitted_on": "validation"}


def apply_calibration(p: np.ndarray, labels: list[str], calibration: dict[str, Any]) -> np.ndarray:
    """Calibrated probabilities [N, K], exactly as the bedside computes them."""
    return calibrate(np.asarray(p, dtype=np.float32), labels, calibration)
