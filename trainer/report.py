"""``trainer report RUN_DIR...``: comparison tables, paired differences, learning checks, plots, and JSON.

Models are grouped by (method, protocol, input scaling, label fraction); the binary protocol's
per-label models fill one group's columns. For each group and label: AUROC and average precision
per seed (scikit-learn), their mean and SD over seeds, and a percentile bootstrap interval of the
seed-averaged metric that resamples *subjects* (a subject's ECG-CXR pairs are not independent).
Paired differences on the same resampled subjects compare every ECG model with the crude-feature
floor, the full method with every other ECG method, and the input scalings; a low-label section
follows AUROC over label fractions. Flags of the learning checks (collapsed encoders, classifiers
at the base rate) open the report.

Modules: :mod:`trainer.report_data` reads the run directories, :mod:`trainer.report_stats`
computes, :mod:`trainer.report_markdown` writes report.md, :mod:`trainer.report_plots` the figures.
Writes ``report.md``, ``report.json``, ``roc.png``, ``pr.png``, ``curves.png`` and, with several
label fractions, ``low_label.png`` to the output folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from trainer import checkpoint as ckpt
from trainer.report_data import NAMES, ORDER, GroupKey, ReportError, Runs, read_metrics, read_runs
from trainer.report_markdown import markdown
from trainer.report_stats import Replicates, comparisons, low_label, summarise

__all__ = ["NAMES", "ORDER", "ReportError", "build_report", "read_metrics", "summary_of"]

REPORT_FORMAT = 2


def _in_check_flags(record: dict[str, Any], run_flags: dict[str, list[str]]) -> bool:
    """Whether run.json's check_flags already holds a model's flag (its fine-tuning stage's line,
    ``seed<k>/finetune-<model_id>: <flag>``)."""
    return any(line.startswith(f"seed{record['seed']}/") and line.endswith(f"{record['model_id']}: {record['flag']}")
               for line in run_flags.get(record["run"], []))


def _warnings(runs: Runs) -> dict[str, Any]:
    """Every flag of the runs' checks and of the models' checks, and the notes on the data."""
    several = len(runs.docs) > 1
    run_flags = {Path(d["run_dir"]).name: list(d.get("check_flags") or []) for d in runs.docs}
    flags = [f"{run}: {f}" if several else f for run, lines in run_flags.items() for f in lines]
    records = [r for g in runs.groups.values() for r in g.checks.get("flag_records", [])]
    text = [f"{r['run']}:seed{r['seed']}/{r['model_id']}: {r['flag']}" for r in records]
    beyond = [t for t, r in zip(text, records) if not _in_check_flags(r, run_flags)]
    recorded = any("check_flags" in d for d in runs.docs) or any(g.checks.get("checked") for g in runs.groups.values())
    return {"check_flags": list(dict.fromkeys(flags)), "model_flags": list(dict.fromkeys(text)),
            "model_flags_not_in_check_flags": list(dict.fromkeys(beyond)), "notes": runs.notes,
            "checks_recorded": recorded}


def summary_of(runs: Runs, run_dirs: list[Path], *, replicates: int, ci: float) -> dict[str, Any]:
    """The report's JSON document: every number, interval, paired difference and flag."""
    reps = Replicates(runs.groups, runs.labels, runs.subjects, replicates=replicates, ci=ci)
    keys: list[GroupKey] = list(runs.groups)
    scalings = list(dict.fromkeys([runs.primary_scaling, *(k.scaling for k in keys)]))
    return {"format": REPORT_FORMAT, "labels": list(runs.labels), "ci": ci, "bootstrap_replicates": replicates,
            "bootstrap_level": "subject" if runs.subjects is not None else "pair",
            "run_dirs": [str(r) for r in run_dirs], "primary_scaling": runs.primary_scaling, "scalings": scalings,
            "label_fractions": sorted({k.fraction for k in keys}), "warnings": _warnings(runs),
            "models": {k.id(): summarise(g, runs.labels, reps, runs.subjects) for k, g in runs.groups.items()},
            "comparisons": comparisons(keys, runs.labels, reps, runs.primary_scaling),
            "low_label": low_label(keys, runs.primary_scaling)}


def build_report(run_dirs: list[Path], out: Path, *, replicates: int = 1000, ci: float = 0.95,
                 plots: bool = True) -> dict[str, Any]:
    """Write report.md, report.json and the plots to ``out``; returns the JSON document."""
    runs = read_runs(run_dirs)
    summary = summary_of(runs, run_dirs, replicates=replicates, ci=ci)
    out.mkdir(parents=True, exist_ok=True)
    ckpt.atomic_write_json(out / "report.json", summary)
    ckpt.atomic_write_bytes(out / "report.md", markdown(summary, runs.labels, runs.docs).encode())
    if plots:
        from trainer.report_plots import plot_curves, plot_low_label, plot_roc_pr  # matplotlib only when plotting

        plot_roc_pr(runs, out)
        plot_curves([Path(r) for r in run_dirs], runs.docs, out / "curves.png")
        if summary["low_label"]:
            plot_low_label(summary, out / "low_label.png")
        else:
            (out / "low_label.png").unlink(missing_ok=True)  # not left over from an earlier report
    return summary
