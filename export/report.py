"""The export report: ``BUNDLE.report.json`` and ``BUNDLE.report.md`` beside the bundle.

It records what was exported from what, the parity numbers, which labels are validated (may alarm)
and the run's training checks, and per variant the calibration,
thresholds, validation rates at the operating point, test AUROC (95 % CI), AP, sensitivity and
specificity at the thresholds, the AUROC gate and the file written (or why none was).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from export import __version__
from export.bundle_writer import atomic_write
from trainer.checkpoint import json_safe

if TYPE_CHECKING:  # pragma: no cover
    from export.data import Split
    from export.onnx_export import Checkpoint
    from export.parity import ParityResult
    from export.pipeline import ExportSettings, Variant


def build_report(ckpt: "Checkpoint", settings: "ExportSettings", manifest_sha256: str | None, val: "Split",
                 test: "Split", parity: list["ParityResult"], variants: list["Variant"], fp16_deviation: float,
                 tensorrt: dict[str, Any] | None, *, label_validation: dict[str, Any] | None = None,
                 training_checks: dict[str, Any] | None = None) -> dict[str, Any]:
    """The report as a JSON-ready dict."""
    return json_safe({
        "exporter_version": __version__,
        "checkpoint": str(ckpt.path), "run_dir": str(ckpt.run_dir) if ckpt.run_dir else None,
        "labels": ckpt.labels, "cohort_manifest_sha256": manifest_sha256, "config_sha256": ckpt.config_sha256,
        "windows": {"validation": len(val), "test": len(test), "max_windows": settings.max_windows},
        "operating_point": str(settings.operating_point), "calibration": settings.calibration,
        "opset": settings.opset,
        "parity": {"atol": settings.parity_atol, "results": [r.to_dict() for r in parity]},
        "fp16_deviation": fp16_deviation,
        "label_validation": label_validation, "training_checks": training_checks,
        "quantization": settings.quant.to_dict() if settings.int8 else None,
        "variants": [{
            "variant": v.name, "accepted": v.accepted, "path": str(v.path) if v.path else None,
            "sha256": v.sha256, "size_bytes": v.path.stat().st_size if v.path else None,
            "thresholds": v.thresholds, "validation_rates": v.val_rates, "test_metrics": v.test_metrics,
            "gate": v.gate.to_dict() if v.gate else None,
            "golden_atol": {"CPUExecutionProvider": v.golden.get("atol"), **v.golden.get("atol_by_provider", {})},
        } for v in variants],
        "tensorrt": tensorrt,
    })


def _f(v: Any, fmt: str = ".3f") -> str:
    return "n/a" if v is None else format(v, fmt)


def render_markdown(report: dict[str, Any]) -> str:
    """A human-readable version of the report."""
    lines = [f"# Export report: {Path(report['checkpoint']).name}", "",
             f"- checkpoint `{report['checkpoint']}`; cohort manifest sha256 `{report['cohort_manifest_sha256']}`",
             f"- windows: validation {report['windows']['validation']}, test {report['windows']['test']}",
             f"- thresholds at {report['operating_point']} on calibrated ({report['calibration']}) validation "
             "probabilities", f"- ONNX opset {report['opset']}", "",
             f"## Parity (onnxruntime CPU vs PyTorch, allowed {report['parity']['atol']:g})", "",
             "| windows from | n | max abs diff | mean abs diff |", "|---|---|---|---|"]
    lines += [f"| {r['source']} | {r['windows']} | {_f(r['max_abs_diff'], '.2e')} | {_f(r['mean_abs_diff'], '.2e')} |"
              for r in report["parity"]["results"]]
    lines += ["", f"FP16 arithmetic moves probabilities by up to {_f(report['fp16_deviation'], '.2e')} "
              "(basis of the GPU golden tolerance).", ""]
    lines += _validation_lines(report.get("label_validation"), report.get("training_checks"))
    lines += ["## Variants", ""]
    for v in report["variants"]:
        state = f"written to `{v['path']}` ({v['size_bytes']} bytes)" if v["accepted"] else "REFUSED, not written"
        lines += [f"### {v['variant'].upper()}: {state}", ""]
        if v["gate"]:
            g = v["gate"]
            lines += [f"AUROC gate (drop <= {g['max_drop']:g} vs FP32): {'passed' if g['accepted'] else 'failed'}", ""]
        lines += ["| label | n (pos) | AUROC [95% CI] | AP | threshold | val sens/spec | test sens | test spec |"
                  " AUROC drop |", "|---|---|---|---|---|---|---|---|---|"]
        for label, m in v["test_metrics"].items():
            lo, hi = m["auroc_ci95"]
            vr = v["validation_rates"][label]
            drop = _f(v["gate"]["drops"][label], "+.4f") if v["gate"] else ""
            lines.append(f"| {label} | {m['n']} ({m['positives']}) | {_f(m['auroc'])} [{_f(lo)}, {_f(hi)}] | "
                         f"{_f(m['average_precision'])} | {_f(m['threshold'], '.4f')} | "
                         f"{_f(vr['sensitivity'])}/{_f(vr['specificity'])} | {_f(m['sensitivity'])} | "
                         f"{_f(m['specificity'])} | {drop} |")
        tol = ", ".join(f"{k.replace('ExecutionProvider', '')} {t:g}" for k, t in v["golden_atol"].items())
        lines += ["", f"Golden tolerance: {tol}.", ""]
    trt = report.get("tensorrt")
    if trt:
        lines += ["## TensorRT", "", (f"Engine `{trt['engine']}`: TensorRT {trt['tensorrt_version']}, GPU "
                                       f"{trt['gpu']}, built in {trt['build_s']} s" if trt["built"]
                                       else f"Not built: {trt['reason']}"), ""]
    return "\n".join(lines)


def _validation_lines(block: dict[str, Any] | None, checks: dict[str, Any] | None) -> list[str]:
    """The label validation table and the training check flags (markdown lines)."""
    lines: list[str] = []
    if block:
        lines += ["## Label validation (FP32, validation split)", "", f"Rule: {block['rule']} "
                  f"({block['replicates']} replicates). Labels not validated never raise an alarm.", "",
                  "| label | validated | AUROC [95% CI] | subjects | positives | reason |", "|---|---|---|---|---|---|"]
        lines += [f"| {label} | {'yes' if e['validated'] else 'NO'} | {_f(e['auroc'])} [{_f(e['low'])}, "
                  f"{_f(e['high'])}] | {e['subjects']} | {e['positives']} | {e['reason']} |"
                  for label, e in block["labels"].items()]
        lines.append("")
    if checks:
        lines += ["## Training checks", ""] + ([f"- {f}" for f in checks["flags"]] or ["No flags."]) + [""]
    return lines


def report_paths(out: Path) -> tuple[Path, Path]:
    """(``BUNDLE.report.json``, ``BUNDLE.report.md``) for bundle path ``out``."""
    return out.with_name(f"{out.stem}.report.json"), out.with_name(f"{out.stem}.report.md")


def write_report(report: dict[str, Any], out: Path) -> tuple[Path, Path]:
    """Write both report files atomically beside bundle ``out``."""
    js, md = report_paths(out)
    atomic_write(js, (json.dumps(report, indent=2, allow_nan=False) + "\n").encode())
    atomic_write(md, (render_markdown(report) + "\n").encode())
    return js, md
