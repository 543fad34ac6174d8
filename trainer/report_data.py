"""What ``trainer report`` reads: run.json documents, test predictions per model group, metrics.jsonl.

A *group* is every seed of one (method, protocol, scaling, label fraction); the binary protocol's
per-label models fill the columns of one group. All groups must share the cache's test split (same
targets, same subject ids in the same order), which is what makes paired comparisons possible.

Older run.json files (before scaling, label fractions, checks and subject ids) read with defaults:
scaling ``minmax``, label fraction 1.0, no checks; without ``test_groups`` in the predictions the
bootstrap falls back to resampling pairs, and the report says so.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from trainer import checkpoint as ckpt
from trainer.evaluate import sigmoid

#: Row order of methods in every table: the floor first, the reference last.
ORDER = ("features", "supervised", "ssl", "clip", "supcon", "cromotex", "cxr")
NAMES = {"features": "Crude ECG features + logistic regression (floor)",
         "supervised": "ECG supervised (scratch)", "ssl": "ECG SSL (3KG) + fine-tune",
         "clip": "ECG CLIP-style alignment", "supcon": "ECG supervised cross-modal (no hard neg.)",
         "cromotex": "ECG full method (CroMoTEX)", "cxr": "CXR-only classifier (reference)"}
FLOOR, REFERENCE, FULL = "features", "cxr", "cromotex"
#: Defaults for run.json files written before these fields existed.
OLD_SCALING, OLD_FRACTION = "minmax", 1.0


class ReportError(ValueError):
    """Run directories that cannot be reported together, or that hold nothing to report."""


class GroupKey(NamedTuple):
    method: str
    protocol: str
    scaling: str
    fraction: float

    def id(self) -> str:
        """``method/protocol/scaling/fraction``: the key of the group in report.json."""
        return f"{self.method}/{self.protocol}/{self.scaling}/{self.fraction:g}"


def is_ecg(method: str) -> bool:
    """A learned ECG model (not the feature floor, not the X-ray reference)."""
    return method not in (FLOOR, REFERENCE)


@dataclass
class Group:
    """Test predictions of every seed of one model group."""

    key: GroupKey
    probs: np.ndarray  # [S, N, K] sigmoid of the test logits
    targets: np.ndarray  # [N, K]
    seeds: list[str]  # "run_dir:seedS"
    checks: dict[str, Any] = field(default_factory=dict)


@dataclass
class Runs:
    """Everything read from the run directories."""

    labels: tuple[str, ...]
    docs: list[dict[str, Any]]
    groups: dict[GroupKey, Group]
    subjects: np.ndarray | None  # [N] subject id per test pair; None: older run, pairs resampled
    primary_scaling: str
    notes: list[str]


def _entry(m: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    fraction = float(m.get("label_fraction", OLD_FRACTION))
    if not 0.0 < fraction <= 1.0:
        raise ReportError(f"{run_dir}/run.json: model {m.get('model_id')} has label_fraction {fraction}; "
                          "it must be in (0, 1]")
    return {**m, "run_dir": run_dir, "predictions": run_dir / m["predictions"],
            "scaling": m.get("scaling", OLD_SCALING), "label_fraction": fraction}


def load_models(run_dirs: list[Path]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Model entries of every run.json (absolute prediction paths, defaults filled) and the documents."""
    entries, docs = [], []
    for run_dir in run_dirs:
        path = run_dir / "run.json"
        if not path.is_file():
            raise ReportError(f"{run_dir}: no run.json; finish `trainer run ... --out {run_dir}` first")
        doc = ckpt.json_load(path)
        docs.append({**doc, "run_dir": str(run_dir)})
        entries += [_entry(m, run_dir) for m in doc["models"] if m.get("predictions")]
    labels = {tuple(d["labels"]) for d in docs}
    if len(labels) != 1:
        raise ReportError(f"run directories disagree on the labels: {sorted(labels)}")
    caches = {d["cohort_manifest_sha256"] for d in docs}
    if len(caches) != 1:
        raise ReportError("run directories were trained on different caches (cohort manifests differ); "
                          "report them separately")
    if not entries:
        raise ReportError(f"no model predictions in {[str(r) for r in run_dirs]}")
    return entries, docs


#: Verdicts of trainer.checks counted in the tables' checks column: (run.json field, words).
VERDICTS = (("collapsed", "collapsed"), ("base_rate", "base rate"), ("no_learning", "no learning"))


def _checks(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """Learning checks of a group's models: how many were checked, which failed which check, every flag
    (``flags``: "run:seedS/model_id: flag"; ``flag_records``: the same as fields)."""
    checked = [e for e in entries if isinstance(e.get("checks"), dict)]

    def name(e: dict[str, Any]) -> str:
        return f"{Path(e['run_dir']).name}:seed{e['seed']}/{e['model_id']}"

    records = [{"run": Path(e["run_dir"]).name, "seed": int(e["seed"]), "model_id": e["model_id"], "flag": f}
               for e in checked for f in e["checks"].get("flags") or []]
    return {"models": len(entries), "checked": len(checked),
            **{field: [name(e) for e in checked if e["checks"].get(field)] for field, _ in VERDICTS},
            "flags": [f"{r['run']}:seed{r['seed']}/{r['model_id']}: {r['flag']}" for r in records],
            "flag_records": records}


def _same_split(what: str, a: np.ndarray, b: np.ndarray) -> None:
    if a.shape != b.shape or not np.array_equal(a, b):
        raise ReportError(f"{what}; every model and seed must be tested on the cache's test split")


def collect(entries: list[dict[str, Any]], labels: tuple[str, ...]) -> tuple[dict[GroupKey, Group], np.ndarray | None,
                                                                               list[str]]:
    """Groups with test predictions for every label, the subject ids of the test pairs, and notes."""
    by_seed: dict[GroupKey, dict[tuple[str, int], dict[str, tuple[np.ndarray, np.ndarray]]]] = defaultdict(dict)
    members: dict[GroupKey, list[dict[str, Any]]] = defaultdict(list)
    subjects, first, missing_groups, notes = None, None, 0, []
    for e in entries:
        with np.load(e["predictions"], allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        if "test_groups" in arrays:
            ids = arrays["test_groups"].astype(np.int64)
            if subjects is None:
                subjects, first = ids, e["predictions"]
            else:
                _same_split(f"{e['predictions']} was tested on other subjects than {first}", ids, subjects)
        else:
            missing_groups += 1
        key = GroupKey(e["method"], e["protocol"], e["scaling"], e["label_fraction"])
        members[key].append(e)
        slot = by_seed[key].setdefault((str(e["run_dir"]), int(e["seed"])), {})
        for k, label in enumerate(arrays["labels"].tolist()):
            slot[label] = (sigmoid(arrays["test_logits"][:, k].astype(np.float64)), arrays["test_targets"][:, k])
    groups: dict[GroupKey, Group] = {}
    reference: tuple[GroupKey, np.ndarray] | None = None
    for key, seeds in by_seed.items():
        complete = {s: v for s, v in seeds.items() if all(label in v for label in labels)}
        if len(complete) < len(seeds):
            notes.append(f"{key.id()}: {len(seeds) - len(complete)} seed(s) lack predictions for some label "
                         "and are left out")
        if not complete:
            continue
        ordered = sorted(complete)
        probs = np.stack([np.stack([complete[s][label][0] for label in labels], axis=1) for s in ordered])
        targets = np.stack([complete[ordered[0]][label][1] for label in labels], axis=1)
        for s in ordered:
            other = np.stack([complete[s][label][1] for label in labels], axis=1)
            _same_split(f"{key.id()}: seed {s} was tested on other samples than seed {ordered[0]}", other, targets)
        if reference is None:
            reference = (key, targets)
        else:
            _same_split(f"{key.id()} was tested on other samples than {reference[0].id()}", targets, reference[1])
        groups[key] = Group(key, probs, targets, [f"{Path(r).name}:seed{s}" for r, s in ordered], _checks(members[key]))
    if subjects is None:
        notes.append("the predictions carry no subject ids (older run): intervals resample pairs, which "
                     "understates the spread when a subject contributes several pairs")
    elif missing_groups:
        notes.append(f"{missing_groups} prediction file(s) lack subject ids; the ids of the others are used "
                     "(same targets, same test split)")
    if subjects is not None and reference is not None and len(subjects) != len(reference[1]):
        raise ReportError(f"test_groups has {len(subjects)} subject ids for {len(reference[1])} test pairs")
    return groups, subjects, notes


def primary_scaling(docs: list[dict[str, Any]], scalings: set[str]) -> str:
    """run.json's ``primary_scaling`` when it names a reported scaling; else fixed_mv, else the first."""
    for d in docs:
        if d.get("primary_scaling") in scalings:
            return d["primary_scaling"]
    return "fixed_mv" if "fixed_mv" in scalings else sorted(scalings)[0]


def read_runs(run_dirs: list[Path]) -> Runs:
    """Read and check every run directory; raises ReportError when they cannot be reported."""
    entries, docs = load_models(run_dirs)
    labels = tuple(docs[0]["labels"])
    groups, subjects, notes = collect(entries, labels)
    if not groups:
        raise ReportError("no model has test predictions for every label")
    primary = primary_scaling(docs, {k.scaling for k in groups})
    ordered = sorted(groups, key=lambda k: sort_key(k, primary))
    return Runs(labels, docs, {k: groups[k] for k in ordered}, subjects, primary, notes)


def sort_key(key: GroupKey, primary: str) -> tuple[Any, ...]:
    """Primary scaling first, then larger label fractions, then ORDER, then protocol."""
    method_rank = ORDER.index(key.method) if key.method in ORDER else len(ORDER)
    return (key.scaling != primary, key.scaling, -key.fraction, method_rank, key.method, key.protocol)


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """Rows of RUN_DIR/metrics.jsonl (a truncated last line from a kill is skipped)."""
    path = run_dir / "metrics.jsonl"
    rows = []
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows
