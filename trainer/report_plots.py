"""The report's figures (matplotlib, Agg backend): ROC/PR curves, training curves with the learning
checks, and AUROC against the label fraction."""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; never a display  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from sklearn.metrics import precision_recall_curve, roc_curve  # noqa: E402

from trainer.report_data import FLOOR, NAMES, REFERENCE, Runs, read_metrics  # noqa: E402

FLAGGED = "tab:red"
#: Method colours (red is kept for stages whose checks flagged them); the floor grey, the X-ray reference black.
COLOURS = {"features": "grey", "supervised": "tab:orange", "ssl": "tab:green", "clip": "tab:purple",
           "supcon": "tab:brown", "cromotex": "tab:blue", "cxr": "black", "pretrain": "tab:olive"}
#: Most flagged stages named in one panel's legend; the rest are counted.
LEGEND_FLAGGED = 6


def _save(fig: Any, path: Path) -> None:
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    plt.close(fig)
    tmp.replace(path)


def _colour(method: str) -> str:
    return COLOURS.get(method, "tab:cyan")


def plot_roc_pr(runs: Runs, out: Path) -> None:
    """roc.png, pr.png: a panel per label, primary scaling, all training labels; colour per method,
    solid multi-label, dashed binary; a line per seed."""
    primary = [k for k in runs.groups if k.scaling == runs.primary_scaling or k.method == REFERENCE]
    top = max(k.fraction for k in primary)  # 1.0 unless the primary scaling was only trained on fewer labels
    groups = {k: runs.groups[k] for k in primary if k.fraction == top}
    labels = runs.labels
    for kind, curve in (("roc", roc_curve), ("pr", precision_recall_curve)):
        fig, axes = plt.subplots(1, len(labels), figsize=(5 * len(labels), 4.6), squeeze=False)
        for k, label in enumerate(labels):
            ax = axes[0, k]
            for key, group in groups.items():
                y = group.targets[:, k]
                if not 0 < y.sum() < len(y):
                    continue
                style = dict(color=_colour(key.method), lw=1.0, alpha=0.75,
                             ls="-" if key.protocol == "multilabel" else "--")
                for s, probs in enumerate(group.probs):
                    a, b, _ = curve(y, probs[:, k])
                    x, v = (a, b) if kind == "roc" else (b, a)  # roc: (fpr, tpr); pr: (recall, precision)
                    ax.plot(x, v, **style,
                            label=f"{NAMES.get(key.method, key.method)} ({key.protocol})" if s == 0 else None)
            if kind == "roc":
                ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls=":")
                ax.set(xlabel="false positive rate", ylabel="true positive rate")
            else:
                ax.axhline(float(np.mean(next(iter(groups.values())).targets[:, k])), color="grey", lw=0.8, ls=":")
                ax.set(xlabel="recall", ylabel="precision")
            ax.set_title(f"{label} (test split)")
            ax.set_xlim(0, 1)
            ax.set_ylim(0, 1.02)
        handles, names = axes[0, 0].get_legend_handles_labels()
        fig.legend(handles, names, loc="lower center", ncol=min(3, max(1, len(names))), fontsize=8,
                   bbox_to_anchor=(0.5, -0.02 - 0.035 * ((len(names) + 2) // 3)))
        title = "ROC curves" if kind == "roc" else "Precision-recall curves"
        fig.suptitle(f"{title}, {runs.primary_scaling} scaling, {top * 100:g}% of the training labels; "
                     "one line per seed")
        _save(fig, out / f"{kind}.png")


def _stage_kind(stage: str) -> str:
    return re.split(r"[-@]", stage.split("/", 1)[-1])[0]


def _stage_method(stage: str) -> str:
    """``seed0/finetune-cromotex-binary-edema@minmax`` -> cromotex; pretrain, cxr: the stage kind."""
    parts = re.split(r"[-@]", stage.split("/", 1)[-1])
    return parts[1] if len(parts) > 1 and parts[0] in ("align", "finetune") else parts[0]


def _flag(stage_doc: dict[str, Any] | None, rows: list[dict[str, Any]]) -> str | None:
    """Why a stage is drawn red: its run.json checks (else its last evaluation) say collapsed or base rate."""
    checks = (stage_doc or {}).get("checks")
    if isinstance(checks, dict):
        collapsed, base_rate = bool(checks.get("collapsed")), bool(checks.get("base_rate"))
    elif rows:
        collapsed, base_rate = bool(rows[-1].get("collapsed")), bool(rows[-1].get("at_base_rate"))
    else:
        return None
    reasons = [r for r, on in (("collapsed", collapsed), ("base rate", base_rate)) if on]
    return " + ".join(reasons) or None


#: Rows of curves.png: (field, y label, stage kinds it applies to; None: all).
CURVE_ROWS = (("train_loss", "training loss", None), ("score", "validation score", None),
              ("spread_cos", "mean off-diagonal cosine", ("pretrain", "align")),
              ("eff_rank", "effective rank", ("pretrain", "align")),
              ("probe_mean_auroc", "linear-probe mean AUROC", ("pretrain", "align")),
              ("loss", "val loss; dotted: base-rate loss", ("finetune", "cxr", "features")))


def _validation_rows(run_dirs: list[Path], docs: list[dict[str, Any]]) -> tuple[
        dict[str, dict[str, list[dict[str, Any]]]], dict[str, str | None], bool]:
    """Validation rows per stage kind and stage, why each stage is flagged, and whether all rows have steps."""
    stages: dict[str, dict[str, list[dict[str, Any]]]] = defaultdict(dict)
    flags: dict[str, str | None] = {}
    steps = True
    for run_dir, doc in zip(run_dirs, docs):
        per_stage: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for row in read_metrics(run_dir):
            if row.get("split") == "val":
                per_stage[row["stage"]].append(row)
        for stage, rows in per_stage.items():
            steps &= all("global_step" in r for r in rows)
            name = f"{run_dir.name}:{stage}" if len(run_dirs) > 1 else stage
            stages[_stage_kind(stage)][name] = rows
            flags[name] = _flag((doc.get("stages") or {}).get(stage), rows)
    return stages, flags, steps


def plot_curves(run_dirs: list[Path], docs: list[dict[str, Any]], path: Path) -> None:
    """curves.png: a column per stage kind, a row per logged quantity, x in optimizer steps (epochs for
    older runs); stages whose checks flagged collapse or the base rate in red with markers."""
    stages, flags, steps = _validation_rows(run_dirs, docs)
    x_field, x_label = ("global_step", "optimizer steps") if steps else ("epoch", "epoch")
    kinds = [k for k in ("pretrain", "cxr", "align", "finetune") if k in stages] + sorted(
        k for k in stages if k not in ("pretrain", "cxr", "align", "finetune"))
    rows_used = [r for r in CURVE_ROWS if any(r[0] in row for kind in kinds for rows in stages[kind].values()
                                              for row in rows if r[2] is None or kind in r[2])]
    rows_used = rows_used or list(CURVE_ROWS[:2])
    kinds = kinds or ["(no metrics)"]
    fig, axes = plt.subplots(len(rows_used), len(kinds), figsize=(4.6 * len(kinds), 2.9 * len(rows_used)),
                             squeeze=False, layout="constrained")
    for j, kind in enumerate(kinds):
        named: dict[str, Line2D] = {}
        flagged: dict[str, str] = {}  # stage -> why it is red
        for i, (field, ylabel, applies) in enumerate(rows_used):
            ax = axes[i, j]
            drawn = False
            for name, rows in sorted(stages.get(kind, {}).items()):
                if applies is not None and kind not in applies:
                    continue
                points = sorted(((float(r[x_field]), r) for r in rows
                                 if r.get(field) is not None and r.get(x_field) is not None), key=lambda p: p[0])
                if not points:
                    continue
                drawn = True
                x = [p[0] for p in points]
                method = _stage_method(name.split(":", 1)[-1])
                reason = flags.get(name)
                style = (dict(color=FLAGGED, lw=1.2, marker="x", ms=4, zorder=3) if reason else
                         dict(color=_colour(method), lw=0.9, alpha=0.7))
                (line,) = ax.plot(x, [float(p[1][field]) for p in points], **style)
                if field == "loss":
                    base = [(p[0], p[1]["base_rate_loss"]) for p in points if p[1].get("base_rate_loss") is not None]
                    if base:
                        ax.plot([b[0] for b in base], [b[1] for b in base], color=style["color"], lw=0.8, ls=":")
                if reason and name not in flagged:
                    flagged[name] = reason
                elif not reason and method not in named:
                    named[method] = line
            if not drawn:
                ax.axis("off")
                continue
            ax.set(ylabel=ylabel, xlabel=x_label)
            if i == 0:
                ax.set_title(kind)
        handles: list[Any] = list(named.values())
        names = [NAMES.get(m, m) if kind in ("align", "finetune") else kind for m in named]
        for name, reason in list(flagged.items())[:LEGEND_FLAGGED]:
            handles.append(Line2D([], [], color=FLAGGED, marker="x", lw=1.2))
            names.append(f"{name}: {reason}")
        if len(flagged) > LEGEND_FLAGGED:
            handles.append(Line2D([], [], color=FLAGGED, marker="x", lw=1.2))
            names.append(f"... and {len(flagged) - LEGEND_FLAGGED} more flagged stage(s)")
        if handles:
            axes[-1, j].legend(handles, names, fontsize=6, loc="upper center", bbox_to_anchor=(0.5, -0.3))
    fig.suptitle(f"Validation evaluations per {x_label.rstrip('s')}; red with markers: stages whose checks "
                 "flagged collapse or the base rate")
    _save(fig, path)


def plot_low_label(summary: dict[str, Any], path: Path) -> None:
    """low_label.png: per label, AUROC (mean over seeds, interval band) against the label fraction on a log
    axis; a line per method and protocol, the feature floor in grey, the CXR reference dashed."""
    low, models, labels = summary["low_label"], summary["models"], summary["labels"]
    fractions = low["fractions"]
    fig, axes = plt.subplots(1, len(labels), figsize=(5 * len(labels), 4.4), squeeze=False)
    for k, label in enumerate(labels):
        ax = axes[0, k]
        for series, by_fraction in low["series"].items():
            method, protocol = series.split("/")
            points = []
            for f in fractions:
                entry = models.get(by_fraction.get(f"{f:g}", ""), {}).get("labels", {}).get(label, {})
                if "auroc" in entry:
                    ci = entry["auroc"]["ci"]
                    points.append((f, entry["auroc"]["mean"], ci["low"], ci["high"]))
            if not points:
                continue
            name = f"{NAMES.get(method, method)} ({protocol})"
            if method == REFERENCE:
                ax.axhline(points[-1][1], color="black", ls="--", lw=1.0, label=name)
                continue
            colour, ls = _colour(method), "-" if protocol == "multilabel" else "--"
            if len(points) == 1 and method == FLOOR:
                ax.axhline(points[0][1], color=colour, lw=1.2, ls=ls, label=name)
                continue
            x = [p[0] for p in points]
            ax.plot(x, [p[1] for p in points], color=colour, ls=ls, marker="o", ms=3, lw=1.2, label=name)
            band = [(p[0], p[2], p[3]) for p in points if p[2] is not None]
            if band:
                ax.fill_between([b[0] for b in band], [b[1] for b in band], [b[2] for b in band], color=colour,
                                alpha=0.12, lw=0)
        ax.set_xscale("log")
        ax.set_xticks(fractions)
        ax.set_xticklabels([f"{f * 100:g}%" for f in fractions])
        ax.minorticks_off()
        ax.axhline(0.5, color="grey", lw=0.6, ls=":")
        ax.set(title=f"{label} (test split)", xlabel="fraction of training labels", ylabel="AUROC")
    handles, names = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", ncol=min(3, max(1, len(names))), fontsize=8,
               bbox_to_anchor=(0.5, -0.02 - 0.035 * ((len(names) + 2) // 3)))
    fig.suptitle(f"AUROC against label fraction ({low['scaling']} scaling): mean over seeds, band: "
                 f"{summary['ci']:.0%} {summary['bootstrap_level']}-level interval")
    _save(fig, path)
