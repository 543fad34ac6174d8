"""``bedside verify BUNDLE``: the checks the bedside runs on every load, one line each.

Checks, in order: file (readable), checksum (sha256 recomputed), runtime (an execution provider
starts: TensorRT, then CUDA, then CPU), schema (metadata against bundle_schema.json plus the
semantic checks), golden (the stored input reproduces the stored output within the provider's
tolerance). Needs onnxruntime, never torch. Exit status 0 when all pass, 2 otherwise, with the
failed check named.
"""

from __future__ import annotations

from pathlib import Path

import click

from bedside.bundle import PROVIDER_ORDER, verify_bundle
from bedside.errors import BundleError

CHECKS = ("file", "checksum", "runtime", "schema", "golden")
EXIT_REFUSED = 2
_SHORT = {p.replace("ExecutionProvider", "").lower(): p for p in PROVIDER_ORDER}


def verify_lines(path: str | Path, providers: tuple[str, ...] = PROVIDER_ORDER,
                 trt_cache_dir: str | None = None) -> tuple[list[tuple[str, bool, str]], BundleError | None]:
    """Run the checks; (check, passed, detail) per check reached, and the error that stopped them."""
    lines: list[tuple[str, bool, str]] = []
    try:
        verify_bundle(path, providers, trt_cache_dir, on_check=lambda c, d: lines.append((c, True, d)))
    except BundleError as exc:
        lines.append((exc.check, False, str(exc)))
        return lines, exc
    return lines, None


@click.command("verify")
@click.argument("bundle", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--provider", "providers", multiple=True, type=click.Choice(sorted(_SHORT)),
              help="Execution providers to try, in order [default: tensorrt, cuda, cpu].")
@click.option("--trt-cache-dir", type=click.Path(file_okay=False), default=None,
              help="TensorRT engine cache directory (engines built once, reused).")
def verify_command(bundle: Path, providers: tuple[str, ...], trt_cache_dir: str | None) -> None:
    """Verify a model bundle: file, checksum, runtime, schema and golden output."""
    order = tuple(_SHORT[p] for p in providers) or PROVIDER_ORDER
    lines, error = verify_lines(bundle, order, trt_cache_dir)
    for check, ok, detail in lines:
        click.echo(f"{check:<9} {'ok' if ok else 'FAILED'}  {detail}")
    if error is not None:
        skipped = [c for c in CHECKS if c not in {line[0] for line in lines}]
        if skipped:
            click.echo(f"not run: {', '.join(skipped)}")
        click.echo(f"bundle {bundle} refused: {error.check} check failed", err=True)
        raise SystemExit(EXIT_REFUSED)
    click.echo(f"bundle {bundle} verified")
