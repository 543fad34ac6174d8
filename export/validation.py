"""Per-label deployability: which labels the model credibly learned, and the run's training checks.

A model may learn some pathologies and not others. A label is **validated** when the lower bound of
the subject-level 95 % bootstrap interval of its validation AUROC is above 0.5 (:data:`RULE`);
only validated labels may raise alarms at the bedside. The interval resamples subjects, not windows
(a subject's windows are not independent), with ``trainer.bootstrap.bootstrap_metric``.

The result is the bundle's ``label_validation`` block (docs/bundle.md). ``training_checks`` copies
the checks ``trainer run`` recorded in ``run.json`` for the stages of the deployed model's seed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from export.onnx_export import ExportError
from trainer.bootstrap import bootstrap_metric
from trainer.evaluate import classification_metrics

CI = 0.95
CHANCE = 0.5
RULE = ("validated when the lower bound of the subject-level 95% bootstrap interval of validation AUROC "
        "is > 0.5")


class UnvalidatedModel(ExportError):
    """No label of the model is validated: the export is refused (nothing written)."""


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def _label_entry(y: np.ndarray, scores: np.ndarray, groups: np.ndarray, auroc: float | None,
                 replicates: int) -> dict[str, Any]:
    """One label's entry: validated, AUROC, interval, counts and the reason in plain words."""
    n, positives, subjects = int(len(y)), int(y.sum()), int(len(np.unique(groups)))
    entry: dict[str, Any] = {"validated": False, "auroc": auroc, "low": None, "high": None, "n": n,
                             "positives": positives, "subjects": subjects}
    if auroc is None:
        entry["reason"] = (f"validation split has {positives} positive window(s) of {n}: AUROC undefined "
                           "without both classes")
        return entry
    if replicates <= 0:
        entry["reason"] = "no bootstrap replicates were asked for (bootstrap=0), so no interval to judge by"
        return entry
    ci = bootstrap_metric("auroc", scores[None, :], y, replicates=replicates, ci=CI, groups=groups)
    entry["low"], entry["high"] = ci["low"], ci["high"]
    if ci["low"] is None:
        entry["reason"] = (f"bootstrap interval undefined: {ci['undefined']} of {replicates} subject resamples "
                           f"lacked a class ({positives} positive window(s), {subjects} subjects)")
    elif ci["low"] > CHANCE:
        entry["validated"] = True
        entry["reason"] = (f"validation AUROC {auroc:.3f}, 95% subject-level interval [{ci['low']:.3f}, "
                           f"{ci['high']:.3f}] lies above 0.5 ({subjects} subjects, {positives} positive windows)")
    else:
        entry["reason"] = (f"validation AUROC {auroc:.3f}, 95% subject-level interval [{ci['low']:.3f}, "
                           f"{ci['high']:.3f}] reaches 0.5: not credibly above chance ({subjects} subjects, "
                           f"{positives} positive windows)")
    return entry


def label_validation(y: np.ndarray, raw: np.ndarray, groups: np.ndarray, labels: list[str],
                     replicates: int) -> dict[str, Any]:
    """The ``label_validation`` block from validation labels [N, K], raw probabilities [N, K], subject ids [N].

    Raw (uncalibrated) probabilities: AUROC is rank-based, and calibration is fitted on these same windows.
    """
    y, raw, groups = np.asarray(y), np.asarray(raw, dtype=np.float64), np.asarray(groups)
    aurocs = classification_metrics(y, raw, labels)["auroc"]
    return {"split": "validation", "unit": "subject", "ci": CI, "replicates": int(replicates), "rule": RULE,
            "labels": {label: _label_entry(y[:, k], raw[:, k], groups, aurocs[label], replicates)
                       for k, label in enumerate(labels)}}


def describe(label: str, entry: dict[str, Any]) -> str:
    """``edema (val AUROC 0.520 [0.440, 0.600], 40 subjects, 12 positive windows)``."""
    return (f"{label} (val AUROC {_fmt(entry['auroc'])} [{_fmt(entry['low'])}, {_fmt(entry['high'])}], "
            f"{entry['subjects']} subjects, {entry['positives']} positive windows)")


def not_validated(block: dict[str, Any]) -> list[str]:
    """Labels of a ``label_validation`` block that are not validated, in its order."""
    return [label for label, e in block["labels"].items() if not e["validated"]]


def refusal_message(block: dict[str, Any]) -> str:
    """Why an export with no validated label is refused, with each label's figures and what to do."""
    lines = "; ".join(f"{describe(label, e)}: {e['reason']}" for label, e in block["labels"].items())
    return (f"no label is validated ({RULE}): {lines}. A model that learned nothing credible must not "
            "raise alarms. Train on a bigger cohort (more subjects), or give the stages longer step budgets "
            "in the config; for development only, pass --allow-unvalidated (ExportSettings.allow_unvalidated) "
            "to write a bundle whose labels never alarm")


def training_checks(run_dir: Path | None, seed: int | None) -> dict[str, Any] | None:
    """The deployed seed's stage checks from ``RUN_DIR/run.json``; None when the run has none (older runs).

    ``run.json`` holds ``stages[tag]["checks"] = {"collapsed", "base_rate", "flags"}`` with tags
    ``seed<seed>/<stage>``, and the run's ``check_flags``. The bundle keeps the stages of ``seed``;
    its ``flags`` are their flags, each prefixed with its stage tag (``seed`` None: run.json's deploy seed).
    """
    if run_dir is None:
        return None
    try:
        doc = json.loads((Path(run_dir) / "run.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict):
        return None
    if seed is None and isinstance(doc.get("deploy"), dict):
        seed = doc["deploy"].get("seed")
    stages_in = doc.get("stages") if isinstance(doc.get("stages"), dict) else {}
    prefix = f"seed{seed}/"
    stages: dict[str, dict[str, Any]] = {}
    for tag, stage in sorted(stages_in.items()):
        checks = stage.get("checks") if isinstance(stage, dict) else None
        if not str(tag).startswith(prefix) or not isinstance(checks, dict):
            continue
        stages[str(tag)] = {"collapsed": bool(checks.get("collapsed", False)),
                            "base_rate": bool(checks.get("base_rate", False)),
                            "flags": [str(f) for f in checks.get("flags") or []]}
    if not stages:
        return None
    flags = [f if f.startswith(tag) else f"{tag}: {f}" for tag, s in stages.items() for f in s["flags"]]
    return {"flags": flags, "stages": stages}
