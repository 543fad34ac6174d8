"""Per-pathology test metrics of an exported model: AUROC with its 95 % bootstrap CI, average
precision, and the sensitivity/specificity at the bundle's thresholds.

Point estimates come from the trainer's ``classification_metrics`` (scikit-learn AUROC and AP),
intervals from its ``bootstrap_metric`` (percentile bootstrap, fixed seed; over subjects when the
windows' subject ids are given, as the exporter does: a subject's windows are not independent), so a
bundle reports the numbers ``trainer report`` computes.
"""

from __future__ import annotations

import numpy as np

from export.thresholds import sens_spec
from trainer.bootstrap import bootstrap_metric
from trainer.evaluate import classification_metrics

N_BOOTSTRAP = 1000


def aurocs(y: np.ndarray, scores: np.ndarray, labels: list[str]) -> dict[str, float]:
    """AUROC per label of [N, K] labels and scores; NaN for a label without both classes."""
    got = classification_metrics(np.asarray(y), np.asarray(scores), labels)["auroc"]
    return {label: float("nan") if got[label] is None else got[label] for label in labels}


def label_metrics(y: np.ndarray, raw: np.ndarray, calibrated: np.ndarray, labels: list[str],
                  thresholds: dict[str, float], bootstrap: int = N_BOOTSTRAP,
                  groups: np.ndarray | None = None) -> dict[str, dict]:
    """Test metrics per label: n, positives, AUROC [CI], AP, threshold, sensitivity, specificity.

    AUROC and AP are of the raw probabilities (calibration is monotone up to isotonic ties);
    sensitivity and specificity are of the calibrated ones at the thresholds, as at the bedside.
    ``groups`` [N] subject ids make the AUROC interval subject-level (``auroc_ci_unit`` says which);
    ``bootstrap=0`` skips the interval.
    """
    y = np.asarray(y)
    base = classification_metrics(y, np.asarray(raw), labels)
    unit = "window" if groups is None else "subject"
    subjects = len(y) if groups is None else int(len(np.unique(groups)))
    out: dict[str, dict] = {}
    for k, label in enumerate(labels):
        ci = (bootstrap_metric("auroc", raw[None, :, k], y[:, k], replicates=bootstrap, ci=0.95, groups=groups)
              if bootstrap and base["auroc"][label] is not None else {"low": None, "high": None})
        sens, spec = sens_spec(y[:, k], calibrated[:, k], thresholds[label])
        out[label] = {
            "n": base["n"], "positives": base["positives"][label], "subjects": subjects,
            "auroc": base["auroc"][label], "auroc_ci95": [ci["low"], ci["high"]], "auroc_ci_unit": unit,
            "average_precision": base["ap"][label],
            "threshold": float(thresholds[label]), "sensitivity": sens, "specificity": spec,
        }
    return out
