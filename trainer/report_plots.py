"""The report's figures (matplotlib, Agg backend): ROC and PR curves per label, training curves."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any, Callable

import matplotlib

matplotlib.use("Agg")  # files only; never a display  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from trainer.report import NAMES, read_metrics  # noqa: E402


def _save(fig: Any, path: Path) -> None:
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    plt.close(fig)
    tmp.replace(path)


def plot_roc_pr(groups: dict[str, dict[str, Any]], labels: tuple[str, ...], out: Path,
                curve_fns: dict[str, Callable]) -> None:
    """roc.png, pr.png: a panel per label; colour per method, solid multi-label, dashed binary; a line per seed."""
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    methods = list(dict.fromkeys(key.split("/")[0] for key in groups))
    for kind in ("roc", "pr"):
        fig, axes = plt.subplots(1, len(labels), figsize=(5 * len(labels), 4.6), squeeze=False)
        for k, label in enumerate(labels):
            ax = axes[0, k]
            for key, group in groups.items():
                y = group["targets"][:, k]
                if not 0 < y.sum() < len(y):
                    continue
                method, protocol = key.split("/")
                style = dict(color=colours[methods.index(method) % len(colours)], lw=1.0, alpha=0.75,
                             ls="-" if protocol == "multilabel" else "--")
                for s, probs in enumerate(group["probs"]):
                    a, b, _ = curve_fns[kind](y, probs[:, k])
                    x, v = (a, b) if kind == "roc" else (b, a)  # roc: (fpr, tpr); pr: (recall, precision)
                    ax.plot(x, v, **style, label=f"{NAMES.get(method, method)} ({protocol})" if s == 0 else None)
            if kind == "roc":
                ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls=":")
                ax.set(xlabel="false positive rate", ylabel="true positive rate")
            else:
                ax.axhline(float(np.mean(next(iter(groups.values()))["targets"][:, k])), color="grey", lw=0.8, ls=":")
                ax.set(xlabel="recall", ylabel="precision")
            ax.set_title(f"{label} (test split)")
            ax.set_xlim(0, 1)
            ax.set_ylim(0, 1.02)
        handles, names = axes[0, 0].get_legend_handles_labels()
        fig.legend(handles, names, loc="lower center", ncol=min(3, max(1, len(names))), fontsize=8,
                   bbox_to_anchor=(0.5, -0.02 - 0.035 * ((len(names) + 2) // 3)))
        fig.suptitle(("ROC curves" if kind == "roc" else "Precision-recall curves") + ", one line per seed")
        _save(fig, out / f"{kind}.png")


def _stage_kind(stage: str) -> str:
    name = stage.split("/", 1)[-1]
    return name.split("-")[0]


def plot_curves(run_dirs: list[Path], path: Path) -> None:
    """curves.png: per stage kind, training loss and validation score per epoch, one line per stage run."""
    series: dict[str, dict[str, list[tuple[int, float, float]]]] = defaultdict(lambda: defaultdict(list))
    for run_dir in run_dirs:
        for row in read_metrics(run_dir):
            if row.get("split") == "val" and row.get("score") is not None:
                series[_stage_kind(row["stage"])][f"{run_dir.name}:{row['stage']}"].append(
                    (int(row["epoch"]) + 1, float(row.get("train_loss") or np.nan), float(row["score"])))
    kinds = [k for k in ("pretrain", "cxr", "align", "finetune") if k in series] or ["(no metrics)"]
    fig, axes = plt.subplots(2, len(kinds), figsize=(4.5 * len(kinds), 6.5), squeeze=False)
    for j, kind in enumerate(kinds):
        for name, points in sorted(series.get(kind, {}).items()):
            points.sort()
            epochs = [p[0] for p in points]
            axes[0, j].plot(epochs, [p[1] for p in points], lw=0.9, alpha=0.8)
            axes[1, j].plot(epochs, [p[2] for p in points], lw=0.9, alpha=0.8, label=name.split("/", 1)[-1])
        axes[0, j].set(title=kind, ylabel="training loss")
        unit = " (-loss)" if kind in ("pretrain", "align") else " (mean AUROC)"
        axes[1, j].set(xlabel="epoch", ylabel="validation score" + unit)
    fig.suptitle("Training loss (top) and validation score (bottom) per epoch")
    _save(fig, path)
