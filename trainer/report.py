"""``trainer report RUN_DIR...``: the comparison table, ROC/PR/training curves, and every number as JSON.

For each model (method and protocol; the CXR classifier as the reference row) the test-split
predictions of every seed found in the run directories are read back. Per label: AUROC and average
precision of each seed (scikit-learn), their mean and standard deviation over seeds, and a 95 %
percentile bootstrap interval of the seed-averaged metric (trainer.bootstrap). The paper's binary
protocol is reported by putting each label's binary model in that label's column.

Writes ``report.md``, ``report.json``, ``roc.png``, ``pr.png`` and ``curves.png`` to the output folder.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve

from trainer import checkpoint as ckpt
from trainer.bootstrap import bootstrap_metric
from trainer.evaluate import sigmoid

ORDER = ("supervised", "ssl", "clip", "supcon", "cromotex", "cxr")
NAMES = {"supervised": "ECG supervised (scratch)", "ssl": "ECG SSL (3KG) + fine-tune",
         "clip": "ECG CLIP-style alignment", "supcon": "ECG supervised cross-modal (no hard neg.)",
         "cromotex": "ECG full method (CroMoTEX)", "cxr": "CXR-only classifier (reference)"}


class ReportError(ValueError):
    """Run directories that cannot be reported together, or that hold nothing to report."""


def load_models(run_dirs: list[Path]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Model entries of every run.json (with absolute prediction paths) and the run.json documents."""
    entries, docs = [], []
    for run_dir in run_dirs:
        path = run_dir / "run.json"
        if not path.is_file():
            raise ReportError(f"{run_dir}: no run.json; finish `trainer run ... --out {run_dir}` first")
        doc = ckpt.json_load(path)
        docs.append({**doc, "run_dir": str(run_dir)})
        for m in doc["models"]:
            if m.get("predictions"):
                entries.append({**m, "run_dir": run_dir, "predictions": run_dir / m["predictions"]})
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


def collect(entries: list[dict[str, Any]], labels: tuple[str, ...]) -> dict[tuple[str, str], dict[str, Any]]:
    """Per (method, protocol): test probabilities [S, N, K] over seeds, targets [N, K], seeds."""
    by_seed: dict[tuple[str, str], dict[tuple[str, int], dict[str, np.ndarray]]] = defaultdict(dict)
    for e in entries:
        with np.load(e["predictions"], allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        key = (e["method"], e["protocol"])
        seed_key = (str(e["run_dir"]), int(e["seed"]))
        slot = by_seed[key].setdefault(seed_key, {})
        for k, label in enumerate(arrays["labels"].tolist()):
            slot[label] = (sigmoid(arrays["test_logits"][:, k]), arrays["test_targets"][:, k])
    out = {}
    for key, seeds in by_seed.items():
        complete = {s: v for s, v in seeds.items() if all(label in v for label in labels)}
        if not complete:
            continue
        ordered = sorted(complete)
        probs = np.stack([np.stack([complete[s][label][0] for label in labels], axis=1) for s in ordered])
        targets = np.stack([complete[ordered[0]][label][1] for label in labels], axis=1)
        for s in ordered:
            other = np.stack([complete[s][label][1] for label in labels], axis=1)
            if other.shape != targets.shape or not np.array_equal(other, targets):
                raise ReportError(f"{key}: seed {s} was tested on other samples than seed {ordered[0]}; "
                                  "seeds must share the cache's test split")
        out[key] = {"probs": probs, "targets": targets, "seeds": [f"{Path(r).name}:seed{s}" for r, s in ordered]}
    return out


def summarise(group: dict[str, Any], labels: tuple[str, ...], *, replicates: int, ci: float) -> dict[str, Any]:
    """Per-label metrics per seed, mean and sd over seeds, and bootstrap intervals."""
    probs, targets = group["probs"], group["targets"]
    per_label = {}
    for k, label in enumerate(labels):
        y = targets[:, k]
        row: dict[str, Any] = {"n": int(len(y)), "positives": int(y.sum())}
        if not 0 < y.sum() < len(y):
            per_label[label] = {**row, "undefined": "the test split holds a single class for this label"}
            continue
        for name, fn in (("auroc", roc_auc_score), ("ap", average_precision_score)):
            values = [float(fn(y, p[:, k])) for p in probs]
            row[name] = {"per_seed": values, "mean": float(np.mean(values)),
                         "sd": float(np.std(values, ddof=1)) if len(values) > 1 else None,
                         "ci": bootstrap_metric(name, probs[:, :, k], y, replicates=replicates, ci=ci, seed=k)}
        per_label[label] = row
    return {"seeds": group["seeds"], "labels": per_label}


def _cell(entry: dict[str, Any], metric: str) -> str:
    if metric not in entry:
        return "n/a"
    m = entry[metric]
    ci = m["ci"]
    interval = f" [{ci['low']:.3f}, {ci['high']:.3f}]" if ci["low"] is not None else ""
    return f"{m['mean']:.3f}{interval}"


def markdown(summary: dict[str, Any], labels: tuple[str, ...], docs: list[dict[str, Any]], ci: float,
             replicates: int) -> str:
    """The report's tables as markdown."""
    lines = ["# Evaluation report", ""]
    test_n = next(iter(summary["models"].values()))["labels"][labels[0]]["n"]
    lines.append(f"Test split: {test_n} pairs. Each cell: mean over seeds, with the {ci:.0%} bootstrap interval "
                 f"({replicates} resamples of the test set) of the seed-averaged metric.")
    for d in docs:
        lines.append(f"- `{d['run_dir']}`: config `{d.get('name')}`, seeds {d['seeds']}, {d.get('seconds')} s, "
                     f"device {d.get('device')}")
    for metric, title in (("auroc", "AUROC"), ("ap", "Average precision")):
        lines += ["", f"## {title}", "", "| model | protocol | seeds | " + " | ".join(labels) + " |",
                  "|---|---|---|" + "---|" * len(labels)]
        for key, entry in summary["models"].items():
            method, protocol = key.split("/")
            cells = [_cell(entry["labels"][label], metric) for label in labels]
            name = NAMES.get(method, method)
            lines.append(f"| {name} | {protocol} | {len(entry['seeds'])} | " + " | ".join(cells) + " |")
    lines += ["", "Positives in the test split: " + ", ".join(
        f"{label} {next(iter(summary['models'].values()))['labels'][label]['positives']}" for label in labels), ""]
    return "\n".join(lines)


def _sort_key(key: tuple[str, str]) -> tuple[int, str]:
    method, protocol = key
    return (ORDER.index(method) if method in ORDER else len(ORDER), protocol)


def build_report(run_dirs: list[Path], out: Path, *, replicates: int = 1000, ci: float = 0.95,
                 plots: bool = True) -> dict[str, Any]:
    """Write report.md, report.json and the plots to ``out``; returns the JSON document."""
    entries, docs = load_models(run_dirs)
    labels = tuple(docs[0]["labels"])
    groups = collect(entries, labels)
    if not groups:
        raise ReportError("no model has test predictions for every label")
    summary: dict[str, Any] = {"labels": list(labels), "ci": ci, "bootstrap_replicates": replicates,
                               "run_dirs": [str(r) for r in run_dirs], "models": {}}
    for key in sorted(groups, key=_sort_key):
        summary["models"][f"{key[0]}/{key[1]}"] = summarise(groups[key], labels, replicates=replicates, ci=ci)
    out.mkdir(parents=True, exist_ok=True)
    ckpt.atomic_write_json(out / "report.json", summary)
    ckpt.atomic_write_bytes(out / "report.md", markdown(summary, labels, docs, ci, replicates).encode())
    if plots:
        from trainer.report_plots import plot_curves, plot_roc_pr  # matplotlib only when plotting

        plot_roc_pr({f"{k[0]}/{k[1]}": groups[k] for k in sorted(groups, key=_sort_key)}, labels, out,
                    curve_fns={"roc": roc_curve, "pr": precision_recall_curve})
        plot_curves([Path(r) for r in run_dirs], out / "curves.png")
    return summary


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

