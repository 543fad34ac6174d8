"""The report's numbers: per-group metrics over seeds, subject-level intervals, paired differences.

Every interval of a label resamples the same subjects: the bootstrap of label ``k`` is seeded with
``k`` for every group, as :func:`trainer.bootstrap.bootstrap_metric` and
:func:`trainer.bootstrap.paired_difference` do with ``seed=k``. So each group's replicates are
computed once per label and metric, and a paired difference is the difference of two groups'
replicates: the same numbers ``paired_difference`` gives (tests/test_report.py checks this), without
recomputing both models for every comparison (a compare run holds ~150 models and several hundred
comparisons).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score

from trainer.bootstrap import _interval, _replicates
from trainer.report_data import FLOOR, FULL, ORDER, REFERENCE, Group, GroupKey, is_ecg

SKLEARN = {"auroc": roc_auc_score, "ap": average_precision_score}
#: Methods the full method is compared with at every label fraction in the low-label section.
LOW_LABEL_BASELINES = ("supervised", "ssl")


class Replicates:
    """Seed-averaged metric of every group: observed value and bootstrap replicates, per label and metric."""

    def __init__(self, groups: dict[GroupKey, Group], labels: tuple[str, ...], subjects: np.ndarray | None, *,
                 replicates: int, ci: float, chunk: int = 200) -> None:
        self.replicates, self.ci = replicates, ci
        self.per_seed: dict[tuple[GroupKey, int, str], list[float]] = {}
        self.values: dict[tuple[GroupKey, int, str], np.ndarray] = {}
        keys = list(groups)
        targets = next(iter(groups.values())).targets
        for k in range(len(labels)):
            y = targets[:, k]
            if not 0 < y.sum() < len(y):
                continue
            for metric, fn in SKLEARN.items():
                sets = [groups[key].probs[:, :, k] for key in keys]
                for key, probs in zip(keys, sets):
                    self.per_seed[key, k, metric] = [float(fn(y, p)) for p in probs]
                for key, reps in zip(keys, _replicates(metric, sets, y, subjects, replicates, k, chunk)):
                    self.values[key, k, metric] = reps

    def defined(self, key: GroupKey, k: int) -> bool:
        return (key, k, "auroc") in self.values

    def metric(self, key: GroupKey, k: int, metric: str) -> dict[str, Any]:
        """Per-seed values, their mean and SD, and the interval of the seed-averaged metric."""
        values = self.per_seed[key, k, metric]
        return {"per_seed": values, "mean": float(np.mean(values)),
                "sd": float(np.std(values, ddof=1)) if len(values) > 1 else None,
                "ci": _interval(self.values[key, k, metric], self.replicates, self.ci)}

    def difference(self, a: GroupKey, b: GroupKey, k: int, metric: str) -> dict[str, Any]:
        """metric(a) - metric(b) on the same resampled subjects, as trainer.bootstrap.paired_difference."""
        diff = self.values[a, k, metric] - self.values[b, k, metric]
        observed = float(np.mean(self.per_seed[a, k, metric]) - np.mean(self.per_seed[b, k, metric]))
        ok = diff[np.isfinite(diff)]
        return {"diff": observed, **_interval(diff, self.replicates, self.ci),
                "p_not_better": float(np.mean(ok <= 0)) if len(ok) else None}


def summarise(group: Group, labels: tuple[str, ...], reps: Replicates, subjects: np.ndarray | None) -> dict[str, Any]:
    """One group's entry in report.json."""
    key = group.key
    per_label = {}
    for k, label in enumerate(labels):
        y = group.targets[:, k]
        row: dict[str, Any] = {"n": int(len(y)), "positives": int(y.sum()),
                               "subjects": int(len(np.unique(subjects))) if subjects is not None else None}
        if not reps.defined(key, k):
            per_label[label] = {**row, "undefined": "the test split holds a single class for this label"}
            continue
        per_label[label] = {**row, **{m: reps.metric(key, k, m) for m in SKLEARN}}
    return {"method": key.method, "protocol": key.protocol, "scaling": key.scaling, "label_fraction": key.fraction,
            "seeds": group.seeds, "checks": group.checks, "labels": per_label}


def _compare(a: GroupKey, b: GroupKey, labels: tuple[str, ...], reps: Replicates) -> dict[str, Any]:
    out: dict[str, Any] = {"model": a.id(), "against": b.id(), "method": a.method, "against_method": b.method,
                           "protocol": a.protocol, "scaling": a.scaling, "against_scaling": b.scaling,
                           "label_fraction": a.fraction, "labels": {}}
    for k, label in enumerate(labels):
        if reps.defined(a, k) and reps.defined(b, k):
            out["labels"][label] = {m: reps.difference(a, b, k, m) for m in SKLEARN}
    return out


def floor_for(key: GroupKey, keys: set[GroupKey], primary: str) -> GroupKey | None:
    """The feature floor to compare ``key`` with: same protocol, scaling and fraction where present,
    else the multi-label floor at fraction 1.0 (same scaling, then the primary one, then any)."""
    candidates = [GroupKey(FLOOR, key.protocol, key.scaling, key.fraction),
                  GroupKey(FLOOR, "multilabel", key.scaling, 1.0), GroupKey(FLOOR, "multilabel", primary, 1.0)]
    candidates += sorted(k for k in keys if k.method == FLOOR and k.fraction == 1.0)
    candidates += sorted(k for k in keys if k.method == FLOOR)
    return next((c for c in candidates if c in keys), None)


def comparisons(keys: list[GroupKey], labels: tuple[str, ...], reps: Replicates, primary: str) -> dict[str, Any]:
    """The comparison families: against the floor, the full method against the others, scalings."""
    present = set(keys)
    floor, full, scaling = [], [], []
    for key in keys:
        if not is_ecg(key.method):
            continue
        against = floor_for(key, present, primary)
        if against is not None:
            row = _compare(key, against, labels, reps)
            row["beats_floor"] = {label: (d["auroc"]["low"] > 0 if d["auroc"]["low"] is not None else None)
                                  for label, d in row["labels"].items()}
            floor.append(row)
    for key in keys:
        if key.method != FULL:
            continue
        for method in [m for m in ORDER if is_ecg(m) and m != FULL] + sorted(
                {k.method for k in keys if k.method not in ORDER}):
            other = key._replace(method=method)
            if other in present:
                full.append(_compare(key, other, labels, reps))
    for key in keys:
        if key.scaling != primary or key.method == REFERENCE:
            continue
        for other in sorted(k for k in keys if k != key and k._replace(scaling=primary) == key):
            scaling.append(_compare(key, other, labels, reps))
    return {"metric_note": "difference of seed-averaged metrics, model minus `against`, on the same resampled "
                           "subjects; low/high: percentile interval; p_not_better: share of replicates <= 0",
            "floor": floor, "full_method": full, "scaling": scaling}


def low_label(keys: list[GroupKey], primary: str) -> dict[str, Any] | None:
    """Which groups make the low-label section: the primary scaling's label fractions, per method and protocol;
    None when the ECG models of the primary scaling were trained at a single fraction."""
    mine = [k for k in keys if k.scaling == primary]
    for method in (FLOOR, REFERENCE):  # from another scaling when the primary one has none
        others = [k for k in keys if k.method == method and k.scaling != primary]
        if others and not any(k.method == method for k in mine):
            mine += [k for k in others if k.scaling == others[0].scaling]
    fractions = sorted({k.fraction for k in mine if is_ecg(k.method)})
    if len(fractions) < 2:
        return None
    series: dict[str, dict[str, str]] = {}
    for k in mine:
        series.setdefault(f"{k.method}/{k.protocol}", {})[f"{k.fraction:g}"] = k.id()
    return {"scaling": primary, "fractions": fractions, "series": series, "baselines": list(LOW_LABEL_BASELINES)}
