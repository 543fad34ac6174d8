"""``trainer``: the command line of the training side (a thin layer over the library).

Commands: ``synth`` and ``prepare`` (trainer.cli_data), ``run``, ``stage``, ``report``, ``keygen``
(here), and ``export`` (export.cli). Subcommands from other modules are imported lazily, when named: ``trainer
--help`` stays fast and keeps working even if one of those modules fails to import (the command is
then listed as unavailable and says why when run). Training modules (torch) are imported inside
the commands for the same reason.
"""

from __future__ import annotations

import importlib
import logging
import sys
import time
from pathlib import Path
from typing import Any

import click

#: Subcommands defined in other modules: name -> "module:attribute".
LAZY_COMMANDS: dict[str, str] = {
    "synth": "trainer.cli_data:synth",
    "prepare": "trainer.cli_data:prepare",
    "export": "export.cli:export_command",
    "synth-record": "trainer.synth_record:synth_record_command()",
}
STAGES = ("pretrain", "cxr", "align", "finetune")


class LazyGroup(click.Group):
    """A click group that imports some subcommands only when they are listed or run."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *LAZY_COMMANDS])

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in LAZY_COMMANDS:
            module, attr = LAZY_COMMANDS[name].split(":")
            try:
                target = getattr(importlib.import_module(module), attr.removesuffix("()"))
                return target() if attr.endswith("()") else target
            except Exception as err:  # noqa: BLE001 - one broken module must not break the others
                return _unavailable(name, LAZY_COMMANDS[name], err)
        return super().get_command(ctx, name)


def _unavailable(name: str, target: str, err: Exception) -> click.Command:
    reason = f"{type(err).__name__}: {err}"

    @click.command(name=name, help=f"(unavailable: {target} failed to import: {reason})",
                   context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
    def command() -> None:
        raise click.ClickException(f"`trainer {name}` is unavailable: importing {target} failed ({reason}). "
                                   "Reinstall the project with its training extra: pip install -e '.[train]'")
    return command


@click.group(cls=LazyGroup)
@click.option("-v", "--verbose", is_flag=True, help="Log debug messages.")
def main(verbose: bool) -> None:
    """Train, evaluate and export the CroMoTEX ECG models."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")


def _config_options(f: Any) -> Any:
    f = click.option("--no-progress", is_flag=True, help="No progress bars (logs and metrics.jsonl only).")(f)
    f = click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default=None,
                     help="Override [run] device.")(f)
    f = click.option("--out", "run_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
                     help="Run directory (created; rerunning the same command resumes it).")(f)
    f = click.option("--cache", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
                     help="Cohort cache written by `trainer prepare`.")(f)
    f = click.option("--config", "config_path", required=True,
                     type=click.Path(exists=True, dir_okay=False, path_type=Path),
                     help="TOML configuration, e.g. configs/demo.toml.")(f)
    return f


def _open(config_path: Path, cache: Path, run_dir: Path, device: str | None, no_progress: bool,
          seeds: tuple[int, ...] = ()) -> Any:
    from trainer.cache import CacheError
    from trainer.config import ConfigError, load_config
    from trainer.pipeline import RunDirError, make_context

    try:
        return make_context(load_config(config_path), cache, run_dir, device=device, progress=not no_progress,
                            seeds=seeds or None)
    except (ConfigError, RunDirError, CacheError, RuntimeError) as err:
        raise click.ClickException(str(err)) from None


def _run_guarded(fn: Any) -> Any:
    """Run ``fn``; known failures become one-line errors with a non-zero exit."""
    from trainer.context import StageOrderError
    from trainer.engine import TrainingError

    try:
        return fn()
    except (StageOrderError, TrainingError, FileNotFoundError, ValueError) as err:
        raise click.ClickException(str(err)) from None


@main.command()
@_config_options
@click.option("--seed", "seeds", type=int, multiple=True,
              help="Run only this seed (repeatable) instead of [run] seeds; e.g. one process per seed.")
def run(config_path: Path, cache: Path, run_dir: Path, device: str | None, no_progress: bool,
        seeds: tuple[int, ...]) -> None:
    """Run every stage of every method and seed in the config; writes RUN_DIR/run.json."""
    from trainer.distributed import shutdown
    from trainer.pipeline import run_all, torch_threads

    started = time.perf_counter()
    ctx = _open(config_path, cache, run_dir, device, no_progress, seeds)
    try:
        with torch_threads(ctx.cfg.run.threads):
            doc = _run_guarded(lambda: run_all(ctx))
    finally:
        ctx.tracker.close()
        shutdown()
    if ctx.rt.env.is_main:
        deploy = doc["deploy"]
        click.echo(f"run finished in {time.perf_counter() - started:.1f} s: {len(doc['models'])} model(s), "
                   f"seeds {doc['seeds']}")
        score = "n/a" if deploy["val_score"] is None else f"{deploy['val_score']:.3f}"
        click.echo(f"deployable classifier: {run_dir / doc['classifier']} ({deploy['method']}, seed {deploy['seed']}, "
                   f"validation score {score})")
        if doc["check_flags"]:
            flagged = {line.split(": ", 1)[0] for line in doc["check_flags"]}  # a stage may have several flags
            click.secho(f"WARNING: {len(flagged)} stage(s) did not learn as they should "
                        "(trainer.checks; thresholds in [checks]):", fg="yellow", err=True)
            for line in doc["check_flags"]:
                click.secho(f"  {line}", fg="yellow", err=True)
        else:
            click.echo("learning checks: no stage collapsed, no classifier at the base rate, every stage learnt")
        click.echo(f"next: trainer report {run_dir}   |   trainer export {run_dir} --out model.onnx")


@main.command()
@click.argument("name", type=click.Choice(STAGES))
@_config_options
@click.option("--seed", type=int, default=None, help="Seed to run (default: the config's first).")
@click.option("--method", default="cromotex", show_default=True, help="align/finetune: which method.")
@click.option("--protocol", type=click.Choice(["multilabel", "binary"]), default="multilabel", show_default=True,
              help="finetune: multi-label model or one binary model per label.")
@click.option("--label", "target", default=None, help="Binary protocol: the label (align/finetune).")
def stage(name: str, config_path: Path, cache: Path, run_dir: Path, device: str | None, no_progress: bool,
          seed: int | None, method: str, protocol: str, target: str | None) -> None:
    """Run one stage alone (its inputs must already be in RUN_DIR); resumes or reuses it like `run`."""
    from trainer.distributed import shutdown
    from trainer.pipeline import torch_threads

    ctx = _open(config_path, cache, run_dir, device, no_progress)
    seed = ctx.cfg.run.seeds[0] if seed is None else seed
    if protocol == "binary" and target is None and name == "finetune":
        raise click.BadParameter("the binary protocol needs --label", param_hint="--label")

    def go() -> dict[str, Any]:
        if name == "pretrain":
            from trainer.pretrain import run_pretrain
            return run_pretrain(ctx, seed)
        if name == "cxr":
            from trainer.cxr_train import run_cxr
            return run_cxr(ctx, seed)
        if name == "align":
            from trainer.align import run_align
            return run_align(ctx, seed, method, target)
        from trainer.finetune import run_finetune
        return run_finetune(ctx, seed, method, protocol, target if protocol == "binary" else None)

    try:
        with torch_threads(ctx.cfg.run.threads):
            summary = _run_guarded(go)
    finally:
        ctx.tracker.close()
        shutdown()
    if ctx.rt.env.is_main:
        score = "n/a" if summary["val_score"] is None else f"{summary['val_score']:.4f}"
        click.echo(f"{summary['stage']} (seed {seed}): {summary['checkpoint']} in {run_dir}, "
                   f"best validation score {score} at step {summary['best_step']}")
        for flag in (summary.get("checks") or {}).get("flags", []):
            click.secho(f"WARNING: {summary['stage']}: {flag}", fg="yellow", err=True)


@main.command()
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Output folder (default: FIRST_RUN_DIR/report).")
@click.option("--bootstrap", "replicates", type=click.IntRange(min=100), default=1000, show_default=True,
              help="Bootstrap resamples of the test subjects (subject-level: a subject's pairs move together).")
@click.option("--ci", type=click.FloatRange(0.5, 0.999), default=0.95, show_default=True, help="Interval coverage.")
def report(run_dirs: tuple[Path, ...], out: Path | None, replicates: int, ci: float) -> None:
    """Table of AUROC and average precision with bootstrap intervals over seeds, plots, and JSON."""
    from trainer.report import ReportError, build_report

    out = out or run_dirs[0] / "report"
    try:
        summary = build_report(list(run_dirs), out, replicates=replicates, ci=ci)
    except ReportError as err:
        raise click.ClickException(str(err)) from None
    click.echo((out / "report.md").read_text(encoding="utf-8"))
    plots = [p for p in ("roc.png", "pr.png", "curves.png", "low_label.png") if (out / p).exists()]
    click.echo(f"{len(summary['models'])} model(s); wrote {out}/report.md, report.json, {', '.join(plots)}")



@main.command()
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path), metavar="KEY",
              help="Private key to write (PEM, mode 0600); the public key goes to KEY.pub.")
def keygen(out: Path) -> None:
    """Make an Ed25519 key pair for signing bundles (`trainer export --sign KEY`).

    Keep KEY offline with the release engineer; copy KEY.pub into each bedside's trust directory
    (/etc/cromotex/trusted-keys, see docs/bundle.md). Never overwrites an existing key.
    """
    from bedside.trust import generate_key_pair

    try:
        private, public, kid = generate_key_pair(out)
    except (FileExistsError, OSError) as err:
        raise click.ClickException(str(err)) from None
    click.echo(f"key id {kid}")
    click.echo(f"private key {private} (mode 0600: keep it offline, never in a trust directory)")
    click.echo(f"public key {public} (copy into the bedside trust directory)")


if __name__ == "__main__":  # python -m trainer.cli
    sys.exit(main())
