"""The export: checkpoint to verified bundles, each variant accepted only after it is measured.

Steps (``trainer export`` is a thin layer over :func:`run_export`):

1. load the classifier checkpoint and export ``ProbabilityModel`` to ONNX;
2. parity with PyTorch on real records and test windows; refused (nothing written) above 1e-4;
3. per variant (FP32; INT8 unless turned off, the CPU default when its gate accepts it; FP16 when
   asked): outputs on validation and test, calibration
   fitted on validation, thresholds chosen on calibrated validation probabilities at the operating
   point, test metrics (subject-level AUROC intervals); INT8 and FP16 must keep every test AUROC
   within 0.005 of FP32;
   per label, whether the FP32 model learned it (:mod:`export.validation`): a label whose
   subject-level validation AUROC interval does not lie above 0.5 never alarms at the bedside, and
   an export where no label is validated is refused unless ``allow_unvalidated``;
4. the golden input (a real record's windows when given) with each variant's expected output;
5. bundles written atomically, then the report (JSON + markdown) beside them, then the TensorRT
   engine when asked for and TensorRT is installed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from bedside.bundle import check_semantics
from bedside.errors import BundleError
from bedside.leads import CANONICAL_LEADS
from bedside.preprocess import Recipe
from bedside.trust import key_id
from export import __version__
from export.bundle_writer import write_bundle
from export.calibration import apply_calibration, fit_calibration
from export.data import Split, predict
from export.golden import GOLDEN_WINDOWS, golden_entry
from export.metrics import aurocs, label_metrics
from export.onnx_export import (DEFAULT_OPSET, INPUT_NAME, OUTPUT_NAME, Checkpoint, ExportError, export_onnx,
                                probability_model)
from export.parity import PARITY_ATOL, ParityResult, check_parity, compare, record_windows
from export.quantize import MAX_AUROC_DROP, GateResult, QuantOptions, auroc_gate, convert_fp16, quantize_int8
from export.thresholds import OperatingPoint, choose_thresholds, sens_spec
from export.validation import (UnvalidatedModel, describe, label_validation, not_validated, refusal_message,
                               training_checks)
from trainer.checkpoint import json_safe

log = logging.getLogger(__name__)

#: Called as ``track(description, total)``; returns ``advance(n)`` (a progress bar, or a no-op).
Tracker = Callable[[str, int], Callable[[int], None]]


def _no_progress(description: str, total: int) -> Callable[[int], None]:
    return lambda n: None


@dataclass(frozen=True)
class ExportSettings:
    """Everything the export can be told; parsed once by the CLI."""

    operating_point: OperatingPoint = OperatingPoint()
    calibration: str = "platt"
    int8: bool = True  # static INT8 is the CPU bundle whenever its AUROC gate accepts it (cpu_bundle)
    fp16: bool = False
    tensorrt: bool = False
    opset: int = DEFAULT_OPSET
    parity_atol: float = PARITY_ATOL
    parity_records: tuple[Path, ...] = ()
    parity_windows: int = 256  # test windows compared with PyTorch
    max_windows: int | None = None  # cap on validation/test windows evaluated (evenly spaced); None = all
    hop_s: float = 5.0
    batch: int = 64
    quant: QuantOptions = QuantOptions()
    max_auroc_drop: float = MAX_AUROC_DROP
    model_name: str | None = None
    model_version: str | None = None
    bootstrap: int = 500  # replicates of the subject-level intervals (0: none, so no label can be validated)
    allow_unvalidated: bool = False  # development: write a bundle even when no label is validated
    signing_key: Any = None  # Ed25519PrivateKey (bedside.trust.load_private_key); None: unsigned (development)


@dataclass
class Variant:
    """One measured model variant and, once written, its file."""

    name: str  # fp32, int8, fp16
    model: onnx.ModelProto
    calibration: dict[str, Any]
    thresholds: dict[str, float]
    test_metrics: dict[str, dict[str, Any]]
    val_rates: dict[str, dict[str, float]]
    test_auroc: dict[str, float]
    val_raw: np.ndarray | None = field(default=None, repr=False)  # raw validation outputs [N, K]
    gate: GateResult | None = None
    golden: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None
    sha256: str | None = None

    @property
    def accepted(self) -> bool:
        return self.gate is None or self.gate.accepted


@dataclass
class ExportResult:
    """What the export did: parity numbers, variants (accepted or not), the report's content."""

    parity: list[ParityResult]
    variants: list[Variant]
    report: dict[str, Any]
    refused: list[str]
    tensorrt: dict[str, Any] | None = None

    @property
    def cpu_bundle(self) -> Path | None:
        """The bundle a CPU bedside should run: INT8 when its gate accepted it, else FP32."""
        written = {v.name: v.path for v in self.variants if v.accepted and v.path is not None}
        return written.get("int8") or written.get("fp32")


def cpu_runner(model: onnx.ModelProto | bytes) -> Callable[[np.ndarray], np.ndarray]:
    """``run(x) -> probs`` on onnxruntime's CPU provider (what the expected outputs are computed on)."""
    import onnxruntime as ort

    data = model if isinstance(model, bytes) else model.SerializeToString()
    so = ort.SessionOptions()
    so.log_severity_level = 3
    session = ort.InferenceSession(data, sess_options=so, providers=["CPUExecutionProvider"])
    return lambda x: session.run([OUTPUT_NAME], {INPUT_NAME: np.ascontiguousarray(x, dtype=np.float32)})[0]


def measure_variant(name: str, model: onnx.ModelProto, val: Split, test: Split, labels: list[str],
                    settings: ExportSettings, track: Tracker = _no_progress) -> Variant:
    """Outputs on validation and test, calibration, thresholds and test metrics of one variant."""
    run = cpu_runner(model)
    val_raw = predict(run, val, settings.batch, track(f"{name}: validation", len(val)))
    test_raw = predict(run, test, settings.batch, track(f"{name}: test", len(test)))
    try:
        calibration = fit_calibration(val_raw, val.labels, labels, settings.calibration)
        val_cal = apply_calibration(val_raw, labels, calibration)
        thresholds = choose_thresholds(val.labels, val_cal, labels, settings.operating_point)
    except ValueError as exc:
        raise ExportError(f"validation split ({len(val)} windows): {exc}") from exc
    test_cal = apply_calibration(test_raw, labels, calibration)
    metrics = label_metrics(test.labels, test_raw, test_cal, labels, thresholds, settings.bootstrap, test.groups)
    val_rates = {}
    for k, label in enumerate(labels):
        sens, spec = sens_spec(val.labels[:, k], val_cal[:, k], thresholds[label])
        val_rates[label] = {"sensitivity": sens, "specificity": spec}
    return Variant(name, model, calibration, thresholds, metrics, val_rates, aurocs(test.labels, test_raw, labels),
                   val_raw)


def bundle_metadata(ckpt: Checkpoint, recipe: Recipe, variant: Variant, settings: ExportSettings,
                    manifest_sha256: str | None, created_utc: str, validation: dict[str, Any],
                    checks: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ``cromotex.metadata`` of one variant (see docs/bundle.md and bedside/bundle_schema.json).

    ``validation`` is the FP32 model's ``label_validation`` block (every variant carries it);
    ``checks`` the run's ``training_checks`` for the deployed seed, omitted when None.
    """
    d = ckpt.data
    extra = {} if checks is None else {"training_checks": checks}
    return json_safe({
        "format": "cromotex-bundle", "format_version": 1,
        "model_name": settings.model_name or f"cromotex-ecg-{d.get('method', 'classifier')}",
        "model_version": settings.model_version or ckpt.sha256[:12],
        "created_utc": created_utc, "labels": ckpt.labels, "leads": list(CANONICAL_LEADS),
        "fs_hz": recipe.fs_hz, "window_s": recipe.window_s, "hop_s": settings.hop_s, "recipe": recipe.to_dict(),
        "input": {"name": INPUT_NAME, "shape": ["batch", len(recipe.leads), recipe.window_samples],
                  "dtype": "float32"},
        "output": {"name": OUTPUT_NAME, "kind": "probability"},
        "thresholds": variant.thresholds, "calibration": variant.calibration,
        "operating_point": {"metric": settings.operating_point.metric, "target": settings.operating_point.target,
                            "split": "validation"},
        "golden": variant.golden, "variant": variant.name,
        "cohort_manifest_sha256": manifest_sha256, "config_sha256": ckpt.config_sha256,
        "test_metrics": variant.test_metrics, "label_validation": validation, **extra,
        "exporter_version": f"cromotex-export {__version__}",
        "checkpoint_sha256": ckpt.sha256, "method": d.get("method"), "seed": d.get("seed"),
        "opset": settings.opset,
    })


def variant_path(out: Path, name: str) -> Path:
    """``BUNDLE.onnx`` for FP32, ``BUNDLE.int8.onnx`` / ``BUNDLE.fp16.onnx`` for the others."""
    return out if name == "fp32" else out.with_name(f"{out.stem}.{name}{out.suffix}")


def _check_inputs(ckpt: Checkpoint, recipe: Recipe, val: Split, test: Split, manifest_sha256: str | None) -> None:
    k = len(ckpt.labels)
    for split in (val, test):
        if split.labels.ndim != 2 or split.labels.shape[1] != k:
            raise ExportError(f"{split.name} split has labels of shape {split.labels.shape}, the model has "
                              f"{k} outputs ({ckpt.labels}); use the cache the model was trained on")
        if tuple(split.ecg.shape[1:]) != (len(recipe.leads), recipe.window_samples):
            raise ExportError(f"{split.name} split holds windows of shape {split.ecg.shape[1:]}, the recipe "
                              f"needs ({len(recipe.leads)}, {recipe.window_samples})")
        if len(split) == 0:
            raise ExportError(f"{split.name} split is empty; thresholds and metrics need windows")
    trained_on = ckpt.data.get("cohort_manifest_sha256")
    if trained_on and manifest_sha256 and trained_on != manifest_sha256:
        raise ExportError(f"the cache's manifest sha256 is {manifest_sha256}, the model was trained on "
                          f"{trained_on}: thresholds and metrics would come from another cohort; "
                          "give --cache the cache the model was trained on")


def check_labels(fp32: Variant, val: Split, labels: list[str], settings: ExportSettings,
                 say: Callable[[str], None]) -> dict[str, Any]:
    """The ``label_validation`` block of the FP32 model; UnvalidatedModel when no label is (unless allowed)."""
    assert fp32.val_raw is not None
    block = label_validation(val.labels, fp32.val_raw, val.groups, labels, settings.bootstrap)
    missing = not_validated(block)
    for label, e in block["labels"].items():
        say(f"{'validated' if e['validated'] else 'NOT VALIDATED'}: {describe(label, e)}")
    if len(missing) == len(labels):
        if not settings.allow_unvalidated:
            raise UnvalidatedModel(refusal_message(block))
        say("WARNING: no label is validated; writing the bundle anyway (--allow-unvalidated): it raises no "
            "risk alarm at the bedside. For development only")
    elif missing:
        say(f"WARNING: labels not validated: {', '.join(missing)}; the bedside logs and shows their risk "
            "but never raises an alarm for them")
    return block


def run_export(ckpt: Checkpoint, val: Split, test: Split, manifest_sha256: str | None, out: Path,
               settings: ExportSettings, track: Tracker = _no_progress,
               say: Callable[[str], None] = log.info) -> ExportResult:
    """Export, measure, gate and write; raises ParityError/ExportError before writing anything."""
    from export.report import build_report, write_report

    recipe = Recipe.from_dict(ckpt.data["recipe"])
    labels = ckpt.labels
    _check_inputs(ckpt, recipe, val, test, manifest_sha256)
    # the model's own recipe scales its input, whatever the splits were opened with
    val, test = (s.with_recipe(recipe).subset(settings.max_windows) for s in (val, test))
    checks = training_checks(ckpt.run_dir, ckpt.data.get("seed"))
    for flag in checks["flags"] if checks else ():
        say(f"WARNING training check: {flag}")

    torch_model = probability_model(ckpt)
    say(f"exporting {ckpt.path} to ONNX (opset {settings.opset})")
    fp32_model = export_onnx(torch_model, len(recipe.leads), recipe.window_samples, settings.opset)
    run_fp32 = cpu_runner(fp32_model)

    record_x: list[np.ndarray] = []
    parity: list[ParityResult] = []
    for path in settings.parity_records:
        x, gaps = record_windows(path, settings.hop_s, recipe=recipe)
        record_x.append(x)
        parity.append(compare(f"record {Path(path).name}", torch_model, run_fp32, x, settings.batch))
        if gaps:
            say(f"record {path}: {gaps} window(s) with gaps skipped")
    parity_test = test.inputs(min(settings.parity_windows, len(test)))
    parity.append(compare("test split", torch_model, run_fp32, parity_test, settings.batch))
    check_parity(parity, settings.parity_atol)
    say("parity: " + "; ".join(f"{r.source} {r.windows} windows max |diff| {r.max_abs_diff:.2e}" for r in parity))

    variants = [measure_variant("fp32", fp32_model, val, test, labels, settings, track)]
    validation = check_labels(variants[0], val, labels, settings, say)
    candidates: list[tuple[str, Callable[[], onnx.ModelProto]]] = []
    if settings.int8:
        calib = val.subset(settings.quant.calibration_windows).inputs(settings.quant.calibration_windows)
        candidates.append(("int8", lambda: quantize_int8(fp32_model, calib, settings.quant)))
    if settings.fp16:
        candidates.append(("fp16", lambda: convert_fp16(fp32_model)))
    for name, build in candidates:
        say(f"building the {name.upper()} variant")
        v = measure_variant(name, build(), val, test, labels, settings, track)
        v.gate = auroc_gate(name.upper(), variants[0].test_auroc, v.test_auroc, settings.max_auroc_drop)
        say(v.gate.table())
        variants.append(v)

    # golden: real-record windows when there are any (else test windows), expected on the CPU provider
    golden_x = np.concatenate(record_x)[:GOLDEN_WINDOWS] if record_x else parity_test[:GOLDEN_WINDOWS]
    golden_src = f"record {Path(settings.parity_records[0]).name}" if record_x else "test split"
    probe = np.concatenate([golden_x, parity_test[:8]] + record_x)
    fp16_dev = float(np.max(np.abs(cpu_runner(convert_fp16(fp32_model))(probe) - run_fp32(probe))))
    for v in variants:
        v.golden = golden_entry(golden_x, cpu_runner(v.model)(golden_x), v.name, fp16_dev, golden_src)

    created = datetime.now(timezone.utc).isoformat(timespec="seconds")
    metas = {v.name: bundle_metadata(ckpt, recipe, v, settings, manifest_sha256, created, validation, checks)
             for v in variants if v.accepted}
    for name, meta in metas.items():  # never write what the bedside would refuse
        try:
            check_semantics(meta)
        except BundleError as exc:
            raise ExportError(f"the {name} bundle would be refused at the bedside: {exc}") from exc
    for v in variants:
        if v.accepted:
            v.path = variant_path(out, v.name)
            meta = metas[v.name]
            v.sha256 = write_bundle(v.model, meta, v.path, settings.signing_key)
            signed = (f"signed by key {key_id(settings.signing_key.public_key())}" if settings.signing_key is not None
                      else "UNSIGNED: the bedside refuses it unless --allow-unsigned; sign with --sign KEY")
            say(f"wrote {v.path} ({v.name}, sha256 {v.sha256}, {signed})")
    refused = [v.name for v in variants if not v.accepted]

    trt = None
    if settings.tensorrt:
        from export.tensorrt import TensorRTUnavailable, build_engine

        try:
            info = build_engine(out, out.with_name(f"{out.stem}.fp16.b1.engine"), batch=1,
                                leads=len(recipe.leads), samples=recipe.window_samples, fp16=True)
            trt = {"built": True, **info.to_dict()}
            say(f"TensorRT engine {info.engine} ({info.tensorrt_version}, {info.gpu}) built in {info.build_s} s")
        except TensorRTUnavailable as exc:
            trt = {"built": False, "reason": str(exc)}
            say(str(exc))
        except RuntimeError as exc:  # a failed build on a GPU machine: the bundles stand, the engine does not
            trt = {"built": False, "reason": f"TensorRT build failed: {exc}"}
            refused.append("tensorrt")
            say(trt["reason"])
    report = build_report(ckpt, settings, manifest_sha256, val, test, parity, variants, fp16_dev, trt,
                          label_validation=validation, training_checks=checks)
    write_report(report, out)
    return ExportResult(parity, variants, report, refused, trt)
