"""report.md from the report's JSON document: warnings first, then tables, then the comparisons.

Only what report.json holds is shown here (no numbers computed twice); the markdown keeps the main
numbers readable and leaves per-seed values and p-values to the JSON.
"""

from __future__ import annotations

from typing import Any

from trainer.report_data import FLOOR, FULL, NAMES, REFERENCE, VERDICTS

Doc = dict[str, Any]


def _pct(fraction: float) -> str:
    return f"{fraction * 100:g}%"


def _name(method: str) -> str:
    return NAMES.get(method, method)


def _interval(ci: dict[str, Any], signed: bool = False) -> str:
    if ci.get("low") is None:
        return " [interval undefined]"
    fmt = "{:+.3f}" if signed else "{:.3f}"
    return f" [{fmt.format(ci['low'])}, {fmt.format(ci['high'])}]"


def _cell(row: dict[str, Any], metric: str) -> str:
    """``mean ±sd [low, high]`` of one label of one group."""
    if metric not in row:
        return "n/a"
    m = row[metric]
    sd = f" ±{m['sd']:.3f}" if m["sd"] is not None else ""
    return f"{m['mean']:.3f}{sd}{_interval(m['ci'])}"


def _diff(d: dict[str, Any] | None) -> str:
    return "n/a" if d is None else f"{d['diff']:+.3f}{_interval(d, signed=True)}"


def checks_cell(checks: dict[str, Any]) -> str:
    """OK, or the short verdict of the learning checks of a group's models."""
    if not checks or not checks.get("checked"):
        return "not recorded"
    parts = [f"{what} {len(checks[field])}/{checks['checked']}" for field, what in VERDICTS if checks.get(field)]
    if not parts and checks["flags"]:
        parts.append(f"{len(checks['flags'])} flag(s)")
    return ", ".join(parts) or "OK"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *("| " + " | ".join(r) + " |" for r in rows)]


def _intro(summary: Doc, labels: tuple[str, ...], docs: list[Doc]) -> list[str]:
    first = next(iter(summary["models"].values()))["labels"][labels[0]]
    n, subjects, ci, b = first["n"], first["subjects"], summary["ci"], summary["bootstrap_replicates"]
    if subjects is not None:
        level = (f"Test split: {n} pairs from {subjects} subjects. Intervals: {ci:.0%} subject-level bootstrap "
                 f"({b} resamples of the {subjects} subjects; all pairs of a drawn subject come along)")
    else:
        level = (f"Test split: {n} pairs (no subject ids). Intervals: {ci:.0%} pair-level bootstrap ({b} resamples "
                 "of the pairs; too narrow when subjects contribute several pairs)")
    lines = [level + " of the seed-averaged metric. Each cell: mean over seeds ±SD over seeds [interval].", ""]
    for d in docs:
        lines.append(f"- `{d['run_dir']}`: config `{d.get('name')}`, seeds {d.get('seeds')}, {d.get('seconds')} s, "
                     f"device {d.get('device')}")
    return lines


def _warnings(summary: Doc) -> list[str]:
    w = summary["warnings"]
    lines = ["", "## Warnings", ""]
    items = [f"- {f}" for f in w["check_flags"]] + [f"- model check: {f}" for f in w["model_flags_not_in_check_flags"]]
    items += [f"- {n}" for n in w["notes"]]
    if not w["checks_recorded"]:
        items.append("- no learning checks recorded (older run): collapse and base-rate fits were not tested")
    return lines + (items or ["None: no learning check flagged a stage or a model."])


def _main_tables(summary: Doc, labels: tuple[str, ...]) -> list[str]:
    lines: list[str] = []
    models = summary["models"]
    for scaling in summary["scalings"]:
        keys = [k for k, m in models.items() if m["scaling"] == scaling and m["label_fraction"] == 1.0
                and m["method"] != REFERENCE]
        if not keys:
            continue
        refs = [k for k, m in models.items() if m["method"] == REFERENCE and m["label_fraction"] == 1.0]
        refs = [k for k in refs if models[k]["scaling"] == scaling] or refs[:1]
        for metric, title in (("auroc", "AUROC"), ("ap", "Average precision")):
            rows = [[_name(models[k]["method"]), models[k]["protocol"], str(len(models[k]["seeds"])),
                     checks_cell(models[k]["checks"]), *(_cell(models[k]["labels"][lb], metric) for lb in labels)]
                    for k in keys + refs]
            lines += ["", f"## {title}, {scaling} scaling, all training labels", "",
                      *_table(["model", "protocol", "seeds", "checks", *labels], rows)]
    return lines


def _floor(summary: Doc, labels: tuple[str, ...]) -> list[str]:
    rows = summary["comparisons"]["floor"]
    lines = ["", "## Against the feature floor", ""]
    if not rows:
        return lines + [f"No {_name(FLOOR)} in these runs: nothing to compare with."]
    lines += [f"AUROC of each ECG model minus the {_name(FLOOR)}, on the same resampled subjects (paired "
              "bootstrap). Table: all training labels; every label fraction is in report.json and in the "
              "verdicts below.", ""]
    table = [[_name(r["method"]), r["protocol"], r["scaling"], r["against"].split("/", 1)[1],
              *(_diff(r["labels"].get(lb, {}).get("auroc")) for lb in labels)]
             for r in rows if r["label_fraction"] == 1.0]
    lines += _table(["model", "protocol", "scaling", "floor (protocol/scaling/fraction)", *labels], table)
    lines += ["", "Verdicts, every scaling and label fraction (a model beats the floor on a label when the "
              "interval of its difference lies above 0):", ""]
    for label in labels:
        losers: dict[str, list[str]] = {}
        for r in rows:
            if label in r["beats_floor"] and not r["beats_floor"][label]:
                undefined = "" if r["beats_floor"][label] is not None else ", interval undefined"
                losers.setdefault(f"{r['scaling']}, {_pct(r['label_fraction'])} labels", []).append(
                    f"{_name(r['method'])} ({r['protocol']}{undefined})")
        if not any(label in r["beats_floor"] for r in rows):
            lines.append(f"- **{label}**: no comparison (the test split holds a single class).")
            continue
        if not losers:
            lines.append(f"- **{label}**: every ECG model beats the feature floor.")
            continue
        lines.append(f"- **{label}**: does not beat the feature floor:")
        lines += [f"  - {where}: " + "; ".join(names) for where, names in losers.items()]
    return lines


def _full(summary: Doc, labels: tuple[str, ...]) -> list[str]:
    rows = [r for r in summary["comparisons"]["full_method"] if r["label_fraction"] == 1.0]
    if not rows:
        return []
    table = [[f"{_name(FULL)} - {_name(r['against_method'])}", r["protocol"], r["scaling"],
              *(_diff(r["labels"].get(lb, {}).get("auroc")) for lb in labels)] for r in rows]
    return ["", "## Full method against the other ECG methods", "",
            "AUROC difference, full method minus the other method, same protocol, scaling and labels, on the "
            "same resampled subjects. All training labels here; lower fractions in the low-label section.", "",
            *_table(["comparison", "protocol", "scaling", *labels], table)]


def _scaling(summary: Doc, labels: tuple[str, ...]) -> list[str]:
    rows = [r for r in summary["comparisons"]["scaling"] if r["label_fraction"] == 1.0]
    if not rows:
        return []
    models = summary["models"]

    def cell(r: Doc, label: str) -> str:
        a, b = models[r["model"]]["labels"][label], models[r["against"]]["labels"][label]
        if "auroc" not in a or "auroc" not in b:
            return "n/a"
        return f"{a['auroc']['mean']:.3f} vs {b['auroc']['mean']:.3f}: {_diff(r['labels'][label]['auroc'])}"

    table = [[_name(r["method"]), r["protocol"], f"{r['scaling']} vs {r['against_scaling']}",
              *(cell(r, lb) for lb in labels)] for r in rows]
    return ["", "## Scaling comparison", "",
            "AUROC with each input scaling (mean over seeds) and the paired difference, primary scaling minus the "
            "other [interval], all training labels.", "", *_table(["model", "protocol", "scalings", *labels], table)]


def _low_label(summary: Doc, labels: tuple[str, ...]) -> list[str]:
    low = summary.get("low_label")
    if not low:
        return []
    models, fractions = summary["models"], low["fractions"]
    cols = [_pct(f) for f in fractions]
    lines = ["", f"## Low-label fractions ({low['scaling']} scaling)", "",
             "Test AUROC (mean over seeds [subject-level interval]) when fine-tuning saw only a fraction of the "
             "training labels; then the paired difference of the full method against the supervised and SSL "
             "baselines at each fraction. Figure: `low_label.png`."]
    diffs = {(r["against_method"], r["protocol"], r["label_fraction"]): r
             for r in summary["comparisons"]["full_method"] if r["scaling"] == low["scaling"]}
    for label in labels:
        rows = []
        for series, by_fraction in low["series"].items():
            method, protocol = series.split("/")
            cells = []
            for f in fractions:
                entry = models.get(by_fraction.get(f"{f:g}", ""), {}).get("labels", {}).get(label, {})
                cells.append(f"{entry['auroc']['mean']:.3f}{_interval(entry['auroc']['ci'])}"
                             if "auroc" in entry else "")
            rows.append([_name(method), protocol, *cells])
        differences = []
        for base in low["baselines"]:
            for protocol in sorted({p for (m, p, _) in diffs if m == base}):
                cells = [_diff(diffs[base, protocol, f]["labels"].get(label, {}).get("auroc"))
                         if (base, protocol, f) in diffs else "" for f in fractions]
                differences.append([f"{_name(FULL)} - {_name(base)}", protocol, *cells])
        lines += ["", f"### {label}", "", *_table(["model", "protocol", *cols], rows)]
        if differences:
            lines += ["", *_table(["AUROC difference", "protocol", *cols], differences)]
    return lines


def markdown(summary: Doc, labels: tuple[str, ...], docs: list[Doc]) -> str:
    """The whole report.md."""
    lines = ["# Evaluation report", "", *_intro(summary, labels, docs), *_warnings(summary),
             *_main_tables(summary, labels), *_floor(summary, labels), *_full(summary, labels),
             *_scaling(summary, labels), *_low_label(summary, labels)]
    first = next(iter(summary["models"].values()))["labels"]
    lines += ["", "Positives in the test split: " + ", ".join(f"{lb} {first[lb]['positives']}" for lb in labels), ""]
    return "\n".join(lines)
