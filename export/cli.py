"""``trainer export``: a fine-tuned checkpoint to verified model bundles (a thin layer over
:func:`export.pipeline.run_export`).

Exit status: 0 when every requested bundle was written; 1 when the export is refused or fails
(parity above tolerance, no label validated, bad input: nothing is written); 3 when the FP32 bundle was written but a
requested variant (INT8 given as --int8, FP16) was refused by its AUROC gate or the TensorRT build
failed. INT8 is built by default and is the CPU bundle when its gate accepts it; a refused default
INT8 leaves the FP32 bundle as the CPU bundle and exits 0.
"""

from __future__ import annotations

import logging
from pathlib import Path

import click

from export.parity import PARITY_ATOL
from export.quantize import MAX_AUROC_DROP, QuantOptions

log = logging.getLogger(__name__)

#: A real recording used for parity when no --parity-record is given (present in a development checkout).
DEFAULT_PARITY_RECORD = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "records" / "s0010_re"
EXIT_VARIANT_REFUSED = 3


@click.command("export")
@click.argument("source", type=click.Path(exists=True, path_type=Path), metavar="RUN_DIR_OR_CKPT")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="FP32 bundle to write (BUNDLE.onnx); variants and the report go beside it.")
@click.option("--cache", type=click.Path(file_okay=False, path_type=Path),
              help="Cohort cache for validation/test windows [default: the checkpoint's cache_dir].")
@click.option("--operating-point", default="specificity=0.90", show_default=True,
              help="Validation rate the thresholds meet: specificity=X or sensitivity=X.")
@click.option("--calibration", type=click.Choice(["platt", "isotonic", "none"]), default="platt",
              show_default=True, help="Probability calibration fitted on validation.")
@click.option("--int8/--no-int8", default=True, show_default=True,
              help="Also an INT8 bundle (static quantization), gated on test AUROC: the CPU bundle when accepted.")
@click.option("--fp16", is_flag=True, help="Also an FP16 bundle for GPU runtimes, gated on test AUROC.")
@click.option("--tensorrt", is_flag=True, help="Also a TensorRT FP16 engine (batch 1) where TensorRT is installed.")
@click.option("--opset", type=click.IntRange(min=17), default=17, show_default=True, help="ONNX opset.")
@click.option("--parity-record", "parity_records", multiple=True, type=click.Path(path_type=Path),
              help="WFDB record(s) for the parity check [default: ../shared/data/records/s0010_re if present].")
@click.option("--parity-windows", type=click.IntRange(min=1), default=256, show_default=True,
              help="Test windows compared with PyTorch.")
@click.option("--parity-atol", type=float, default=PARITY_ATOL, show_default=True,
              help="Largest allowed probability difference onnxruntime vs PyTorch.")
@click.option("--max-windows", type=click.IntRange(min=10), default=None,
              help="Evaluate at most this many validation and test windows each (evenly spaced) [default: all].")
@click.option("--hop-s", type=click.FloatRange(min=0, min_open=True), default=5.0, show_default=True,
              help="Window hop the bedside uses (stored in the bundle), seconds.")
@click.option("--int8-format", type=click.Choice(["QOperator", "QDQ"]), default=QuantOptions.quant_format,
              show_default=True)
@click.option("--int8-per-channel", is_flag=True, help="Per-channel weight scales.")
@click.option("--int8-activations", type=click.Choice(["uint8", "int8"]), default=QuantOptions.activations,
              show_default=True, help="Activation type: uint8 (U8S8, x86) or int8 (S8S8, ARM dot-product).")
@click.option("--int8-attention", is_flag=True,
              help="Also quantize the attention products (activation x activation MatMuls); slower on VNNI.")
@click.option("--int8-requantize", is_flag=True,
              help="QDQ: requantize the outputs of quantized Conv/MatMul (default: float outputs, fused with the bias).")
@click.option("--int8-calibration-windows", type=click.IntRange(min=1), default=QuantOptions.calibration_windows,
              show_default=True, help="Validation windows used to calibrate activation ranges.")
@click.option("--int8-ops", default=",".join(QuantOptions.op_types), show_default=True,
              help="Comma-separated ONNX op types to quantize.")
@click.option("--int8-calibrate-method", type=click.Choice(["MinMax", "Entropy", "Percentile"]),
              default=QuantOptions.calibrate_method, show_default=True)
@click.option("--max-auroc-drop", type=float, default=MAX_AUROC_DROP, show_default=True,
              help="Largest test AUROC fall of any pathology a variant may show against FP32.")
@click.option("--allow-unvalidated", is_flag=True,
              help="Development only: write the bundle even when no label's validation AUROC is credibly above "
                   "chance (such labels never alarm at the bedside).")
@click.option("--sign", "sign_key", envvar="CROMOTEX_SIGNING_KEY", default=None,
              type=click.Path(dir_okay=False, path_type=Path), metavar="KEY",
              help="Sign the bundles with this Ed25519 private key (`trainer keygen`); the bedside refuses "
                   "unsigned bundles [env CROMOTEX_SIGNING_KEY].")
@click.option("--model-name", default=None, help="[default: cromotex-ecg-<method>]")
@click.option("--model-version", default=None, help="[default: first 12 hex of the checkpoint's sha256]")
@click.pass_context
def export_command(ctx: click.Context, source: Path, out: Path, cache: Path | None, operating_point: str,
                   calibration: str, int8: bool, fp16: bool, tensorrt: bool, opset: int,
                   parity_records: tuple[Path, ...], parity_windows: int, parity_atol: float,
                   max_windows: int | None, hop_s: float, int8_format: str, int8_per_channel: bool,
                   int8_calibration_windows: int, int8_ops: str, int8_calibrate_method: str, int8_activations: str,
                   int8_attention: bool, int8_requantize: bool, max_auroc_drop: float,
                   allow_unvalidated: bool, sign_key: Path | None, model_name: str | None,
                   model_version: str | None) -> None:
    """Export a fine-tuned checkpoint (RUN_DIR of `trainer run`, or the .pt) to a model bundle.

    Checks parity with PyTorch (refuses above --parity-atol), fits calibration and thresholds on
    validation, validates each label (subject-level validation AUROC interval above 0.5; labels that
    fail never alarm, and an export where none passes is refused), reports test metrics, and writes
    BUNDLE.onnx, BUNDLE.report.json/.md and the requested variants. Verify a bundle with
    `bedside verify BUNDLE`.
    """
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from bedside.preprocess import Recipe
    from export.data import open_cache
    from export.onnx_export import ExportError, load_checkpoint
    from export.parity import ParityError
    from export.pipeline import ExportSettings, run_export
    from export.thresholds import OperatingPoint
    from export.validation import UnvalidatedModel

    console = Console(stderr=True)
    try:
        point = OperatingPoint.parse(operating_point)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--operating-point") from exc
    for rec in parity_records:
        if not Path(f"{rec}.hea").is_file() and not Path(rec).is_file():
            raise click.BadParameter(f"{rec}: no WFDB header {rec}.hea", param_hint="--parity-record")
    if not parity_records:
        if (DEFAULT_PARITY_RECORD.parent / f"{DEFAULT_PARITY_RECORD.name}.hea").is_file():
            parity_records = (DEFAULT_PARITY_RECORD,)
        else:
            log.warning("no real record for the parity check (%s is absent); parity runs on test windows only; "
                        "give --parity-record RECORD", DEFAULT_PARITY_RECORD)
    ops = tuple(op.strip() for op in int8_ops.split(",") if op.strip())
    if not ops:
        raise click.BadParameter("give at least one op type, e.g. Conv,MatMul", param_hint="--int8-ops")
    quant = QuantOptions(quant_format=int8_format, per_channel=int8_per_channel, op_types=ops,
                         calibration_windows=int8_calibration_windows, calibrate_method=int8_calibrate_method,
                         activations=int8_activations, attention=int8_attention, float_outputs=not int8_requantize)
    from bedside.trust import key_id, load_private_key

    signing_key = None
    if sign_key is not None:
        try:
            signing_key = load_private_key(sign_key)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--sign") from exc
        log.info("signing with key %s", key_id(signing_key.public_key()))
    else:
        log.warning("no --sign KEY: the bundles are unsigned and the bedside refuses them unless --allow-unsigned")
    settings = ExportSettings(operating_point=point, calibration="identity" if calibration == "none" else calibration,
                              int8=int8, fp16=fp16, tensorrt=tensorrt, opset=opset, parity_atol=parity_atol,
                              parity_records=tuple(parity_records), parity_windows=parity_windows,
                              max_windows=max_windows, hop_s=hop_s, quant=quant, max_auroc_drop=max_auroc_drop,
                              allow_unvalidated=allow_unvalidated, model_name=model_name,
                              model_version=model_version, signing_key=signing_key)
    def say(message: str) -> None:
        console.print(message, markup=False, highlight=False)

    try:
        ckpt = load_checkpoint(source)
        cache_dir = cache or ckpt.data.get("cache_dir")
        if not cache_dir:
            raise ExportError(f"{ckpt.path} names no cache_dir; give --cache CACHE")
        try:
            recipe = Recipe.from_dict(ckpt.data["recipe"])
        except (TypeError, ValueError) as exc:
            raise ExportError(f"{ckpt.path}: preprocessing recipe not usable here: {exc}") from exc
        val, test, manifest_sha256 = open_cache(cache_dir, ckpt.labels, recipe)
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns, console=console) as progress:
            def track(description: str, total: int):
                task = progress.add_task(description, total=total)
                return lambda n: progress.advance(task, n)

            result = run_export(ckpt, val, test, manifest_sha256, out, settings, track, say)
    except ParityError as exc:
        raise click.ClickException(f"export refused, parity check failed: {exc}") from exc
    except UnvalidatedModel as exc:
        raise click.ClickException(f"export refused, {exc}") from exc
    except ExportError as exc:
        raise click.ClickException(f"export failed: {exc}") from exc
    from export.report import report_paths

    say(f"report: {', '.join(str(p) for p in report_paths(out))}")
    say(f"CPU bundle: {result.cpu_bundle}" + ("" if result.cpu_bundle != out else " (FP32: no accepted INT8 variant)"))
    # INT8 is built by default; its refusal is an error only when --int8 was asked for explicitly
    asked_int8 = ctx.get_parameter_source("int8") != click.core.ParameterSource.DEFAULT
    failed = [name for name in result.refused if name != "int8" or asked_int8]
    if result.refused:
        say(f"refused: {', '.join(result.refused)} (see the report); accepted bundles were written")
    if failed:
        ctx.exit(EXIT_VARIANT_REFUSED)
