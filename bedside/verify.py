"""``bedside verify BUNDLE``: the checks the bedside runs on every load, one line each.

Checks, in order: file (a regular file, readable), checksum (sha256 recomputed: damage), signature
(Ed25519, by a key whose .pub is in the trust directory: trust), runtime (an execution provider
starts: TensorRT, then CUDA, then CPU), schema (metadata against bundle_schema.json plus the
semantic checks), golden (the stored input reproduces the stored output within the provider's
tolerance). Needs onnxruntime, never torch. Exit status 0 when all pass, 2 otherwise, with the
failed check named.

After the checks it lists which labels are validated (may alarm) and which are not (risk shown and
logged, never alarmed), with their validation AUROC and interval, and the training check flags.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from bedside.bundle import PROVIDER_ORDER, Bundle, verify_bundle
from bedside.cli_trust import trust_options, trust_settings, unsigned_warning
from bedside.errors import BundleError
from bedside.trust import TrustSettings

CHECKS = ("file", "checksum", "signature", "runtime", "schema", "golden")
EXIT_REFUSED = 2
_SHORT = {p.replace("ExecutionProvider", "").lower(): p for p in PROVIDER_ORDER}


def _run_checks(path: str | Path, providers: tuple[str, ...], trt_cache_dir: str | None,
                trust: TrustSettings | None = None
                ) -> tuple[list[tuple[str, bool, str]], BundleError | None, Bundle | None]:
    lines: list[tuple[str, bool, str]] = []
    try:
        bundle = verify_bundle(path, providers, trt_cache_dir, on_check=lambda c, d: lines.append((c, True, d)),
                               trust=trust)
    except BundleError as exc:
        lines.append((exc.check, False, str(exc)))
        return lines, exc, None
    return lines, None, bundle


def verify_lines(path: str | Path, providers: tuple[str, ...] = PROVIDER_ORDER,
                 trt_cache_dir: str | None = None, trust: TrustSettings | None = None
                 ) -> tuple[list[tuple[str, bool, str]], BundleError | None]:
    """Run the checks; (check, passed, detail) per check reached, and the error that stopped them."""
    lines, error, _ = _run_checks(path, providers, trt_cache_dir, trust)
    return lines, error


def _num(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.2f}"


def label_lines(meta: dict[str, Any]) -> list[str]:
    """One line per label (validated first), then the training check flags, from verified metadata.

    ``validated: cardiomegaly (val AUROC 0.81 [0.74, 0.87])`` or
    ``NOT VALIDATED (no alarms): edema (val AUROC 0.52 [0.44, 0.60])``.
    """
    entries = meta["label_validation"]["labels"]
    out = []
    for validated in (True, False):
        for label in meta["labels"]:
            e = entries[label]
            if e["validated"] != validated:
                continue
            head = "validated" if validated else "NOT VALIDATED (no alarms)"
            figures = f"val AUROC {_num(e['auroc'])} [{_num(e['low'])}, {_num(e['high'])}]"
            why = "" if e["auroc"] is not None and e["low"] is not None else f"; {e['reason']}"
            out.append(f"{head}: {label} ({figures}{why})")
    if not any(e["validated"] for e in entries.values()):
        out.append("no label is validated: this bundle raises no risk alarm (development export)")
    for flag in meta.get("training_checks", {}).get("flags", []):
        out.append(f"training check: {flag}")
    return out


@click.command("verify")
@click.argument("bundle", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--provider", "providers", multiple=True, type=click.Choice(sorted(_SHORT)),
              help="Execution providers to try, in order [default: tensorrt, cuda, cpu].")
@click.option("--trt-cache-dir", type=click.Path(file_okay=False), default=None,
              help="TensorRT engine cache directory (engines built once, reused).")
@trust_options
def verify_command(bundle: Path, providers: tuple[str, ...], trt_cache_dir: str | None, trust_dir: Path | None,
                   allow_unsigned: bool) -> None:
    """Verify a model bundle: file, checksum, signature, runtime, schema and golden output."""
    order = tuple(_SHORT[p] for p in providers) or PROVIDER_ORDER
    trust = trust_settings(trust_dir, allow_unsigned)
    lines, error, verified = _run_checks(bundle, order, trt_cache_dir, trust)
    for check, ok, detail in lines:
        click.echo(f"{check:<9} {'ok' if ok else 'FAILED'}  {detail}")
    if error is not None:
        skipped = [c for c in CHECKS if c not in {line[0] for line in lines}]
        if skipped:
            click.echo(f"not run: {', '.join(skipped)}")
        click.echo(f"bundle {bundle} refused: {error.check} check failed", err=True)
        raise SystemExit(EXIT_REFUSED)
    assert verified is not None
    warning = unsigned_warning(verified)
    if warning:
        click.echo(warning, err=True)
    for line in label_lines(verified.metadata):
        click.echo(line)
    click.echo(f"bundle {bundle} verified")
