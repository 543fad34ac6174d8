"""Click commands ``synth`` and ``prepare`` (registered on the ``trainer`` group by trainer.cli).

Thin layers over :func:`trainer.synth.write_cohort`, :func:`trainer.prepare.prepare_cohort` and
:func:`trainer.prepare.merge_shards`: they parse options, print a summary, and turn the library's
errors into ``click.ClickException`` (exit status 1, message says what to do).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click

from trainer.labels import DEFAULT_POSITIVE, validate_positive


def _positive(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> tuple[float, ...]:
    if not values:
        return DEFAULT_POSITIVE
    tokens = [t for v in values for t in v.split(",") if t.strip()]
    try:
        return validate_positive(tokens)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _shard(ctx: click.Context, param: click.Parameter, value: str) -> tuple[int, int]:
    from trainer.prepare import parse_shard

    try:
        return parse_shard(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@click.command("synth")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder to create for the cohort (must not exist, unless it holds this same cohort).")
@click.option("--subjects", default=200, show_default=True, type=click.IntRange(min=1), help="Number of people.")
@click.option("--seed", default=0, show_default=True, type=int, help="Random seed (same seed, same bytes).")
@click.option("--workers", default=None, type=click.IntRange(min=1),
              help="Processes rendering waveforms and images [default: 1 below 100 subjects, else CPU count].")
@click.option("--overwrite", is_flag=True, help="Replace an existing synthetic cohort at --out.")
def synth(out: Path, subjects: int, seed: int, workers: int | None, overwrite: bool) -> None:
    """Write a SYNTHETIC (not clinical) cohort in the MIMIC-IV-ECG / -Ext-ICD / -ED and MIMIC-CXR-JPG layouts."""
    from trainer.synth import SynthError, write_cohort

    try:
        summary = write_cohort(out, subjects, seed, workers=workers, progress=True, overwrite=overwrite)
    except SynthError as exc:
        raise click.ClickException(str(exc)) from None
    verb = "reused existing" if summary["reused"] else f"wrote in {summary['seconds']:.1f} s"
    click.echo(f"synthetic cohort {out} ({verb}): {summary['subjects']} subjects, {summary['ed_stays']} ED stays, "
               f"{summary['ecg_records']} ECGs, {summary['cxr_images']} X-ray images "
               f"({summary['cxr_frontal_images_pairable']} frontal images inside ED stays with an ECG)")
    click.echo(f"next: trainer prepare --mimic-root {out} --out CACHE")


def _print_manifest(m: dict[str, Any], out: Path, seconds: float) -> None:
    click.echo(f"cache {out} complete ({seconds:.1f} s)")
    labels = m["labels"]
    click.echo(f"  {'split':<6} {'pairs':>6} {'subjects':>8}  " + "  ".join(f"{label:>16}" for label in labels))
    for split, n in m["counts"].items():
        rates = m["positive_rates"][split]
        cells = "  ".join(f"{'-' if rates[label] is None else f'{100 * rates[label]:.1f}%':>16}" for label in labels)
        click.echo(f"  {split:<6} {n:>6} {m['subjects'].get(split, 0):>8}  {cells}")
    c = m["cohort"]
    click.echo(f"  pairing: {c['cxr_images']} X-ray images: {c['paired']} paired, {c['not_frontal']} not frontal, "
               f"{c['no_chexpert_row']} without CheXpert labels, {c['not_in_ed_stay']} outside ED stays, "
               f"{c['ed_stay_without_ecg']} in stays without ECG, {c['beyond_max_gap']} beyond --max-gap-hours, "
               f"{c['duplicate_dicom_id'] + c['cxr_time_unreadable']} duplicate or undated")
    if m["skipped"]:
        click.echo("  skipped files: " + ", ".join(f"{reason} {n}" for reason, n in m["skipped"].items())
                   + f" (pairs lost: {sum(m['pairs_dropped'].values())}; listed in manifest.json)")
        for entry in m["skipped_files"][:5]:
            click.echo(f"    {entry['reason']}: {entry['path']}")
    else:
        click.echo("  skipped files: none")


@click.command("prepare")
@click.option("--mimic-root", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Folder holding mimic-iv-ecg/, mimic-iv-ecg-ext-icd/, mimic-iv-ed/, mimic-cxr-jpg/ "
                   "(or PhysioNet's physionet.org/files).")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Cache folder.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the subject-level 70/10/20 split.")
@click.option("--max-gap-hours", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Drop pairs whose ECG and X-ray are further apart than this [default: no limit].")
@click.option("--shard", default="0/1", show_default=True, callback=_shard,
              help="I/N: prepare part I of N (several machines); shards sharing --out assemble it when complete.")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Worker processes [default: CPU count, at most one per 8 chunks of 64 pairs].")
@click.option("--label-positive", multiple=True, callback=_positive,
              help="CheXpert values counted as positive (repeat or comma-separate, e.g. 1.0,-1.0) [default: 1.0].")
@click.option("--merge", "merge", multiple=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Merge these shard output folders into --out instead of preparing (no --mimic-root needed).")
@click.option("--ecg-root", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="MIMIC-IV-ECG folder (with record_list.csv), if not under --mimic-root.")
@click.option("--ecg-ext-icd-root", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="MIMIC-IV-ECG-Ext-ICD folder (with records_w_diag_icd10.csv), if not under --mimic-root.")
@click.option("--ed-root", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="MIMIC-IV-ED folder (with ed/edstays.csv[.gz]), if not under --mimic-root.")
@click.option("--cxr-root", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="MIMIC-CXR-JPG folder (with mimic-cxr-2.0.0-metadata.csv.gz), if not under --mimic-root.")
def prepare(mimic_root: Path | None, out: Path, seed: int, max_gap_hours: float | None, shard: tuple[int, int],
            workers: int | None, label_positive: tuple[float, ...], merge: tuple[Path, ...], ecg_root: Path | None,
            ecg_ext_icd_root: Path | None, ed_root: Path | None, cxr_root: Path | None) -> None:
    """Pair ECGs with frontal chest X-rays in the same ED stay, preprocess both, write a training cache."""
    from trainer.cache import CacheError
    from trainer.mimic import CohortLayoutError, MimicRoots
    from trainer.prepare import PrepareError, merge_shards, prepare_cohort

    t0 = time.perf_counter()
    try:
        if merge:
            manifest = merge_shards(list(merge), out)
        else:
            overrides = {"ecg": ecg_root, "ecg_ext_icd": ecg_ext_icd_root, "ed": ed_root, "cxr": cxr_root}
            if mimic_root is None and not all(overrides.values()):
                raise click.UsageError("give --mimic-root (or all four of --ecg-root, --ecg-ext-icd-root, "
                                       "--ed-root, --cxr-root), or --merge SHARD_DIR ...")
            roots = MimicRoots.discover(mimic_root, **overrides)
            manifest = prepare_cohort(mimic_root, out, seed=seed, max_gap_hours=max_gap_hours,
                                      label_positive=label_positive, shard=shard, workers=workers, progress=True,
                                      roots=roots)
    except (CohortLayoutError, PrepareError, CacheError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    if manifest.get("assembling_elsewhere"):
        click.echo(f"all chunks are done; another process ({manifest['assembling_elsewhere']}) is assembling {out}. "
                   f"If it is gone, delete {out / '.work' / 'assemble.lock'} and run this command again.")
        return
    if manifest.get("complete") is False:
        click.echo(f"shard {manifest['shard']} done in {time.perf_counter() - t0:.1f} s; "
                   f"{manifest['chunks_missing']} of {manifest['chunks_total']} chunks still missing in {out} "
                   "(other shards). Run them into the same --out, or merge separate outputs with: "
                   "trainer prepare --out CACHE --merge DIR1 --merge DIR2 ...")
        return
    _print_manifest(manifest, out, time.perf_counter() - t0)
