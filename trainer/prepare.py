"""``trainer prepare``: pair ECGs with chest X-rays, preprocess both, and write a training cache.

Steps: read the cohort tables (:mod:`trainer.mimic`), pair and split (:mod:`trainer.pairing`), then
convert each pair in chunks (:mod:`trainer.chunks`): the ECG through ``bedside.records.open_record(...).read()`` and
``bedside.preprocess.condition`` (the one preprocessing shared with the bedside; stored in mV, not
min-max scaled), the X-ray through torchxrayvision's convention (grey, centre square crop, 224 x 224,
uint8). The cache format is in :mod:`trainer.cache`.

Robustness:

- Work is cut into chunks of :data:`CHUNK_PAIRS` pairs, fixed by the plan (not by the number of
  workers or shards). A chunk is written to ``CACHE/.work/chunks/<split>-NNNNN.npz`` atomically; an
  existing chunk of the same plan is never recomputed, so re-running resumes an interrupted run.
- ``shard=(i, n)`` processes the chunks whose index is ``i`` modulo ``n``. Shards writing into one
  shared ``CACHE`` assemble it when the last chunk lands; shards on separate machines are merged
  with :func:`merge_shards` (or ``trainer prepare --out CACHE --merge DIR ...``).
- Assembly writes each array to a temporary name and renames it; ``manifest.json`` comes last,
  atomically. The reader (:class:`trainer.cache.CohortCache`) refuses a cache without it.
- A missing, unreadable or refused file is named, skipped and counted by reason in the manifest.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from datetime import datetime, timezone
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bedside.errors import RecordError
from bedside.preprocess import DEFAULT_RECIPE, Recipe
from trainer.cache import (
    ARRAY_DTYPES, CXR_SIZE, FORMAT, MANIFEST, PAIRS_CSV, VERSION, CohortCache, item_shapes, write_json_atomic,
)
from trainer.chunks import chunk_done, chunk_path, ecg_problem, load_cxr, load_ecg, process_chunk
from trainer.labels import DEFAULT_POSITIVE, LABEL_COLUMNS, LABELS, binarize, validate_positive
from trainer.mimic import MimicRoots, read_cxr_images, read_ecg_records, read_ed_stays
from trainer.pairing import PAIR_COLUMNS, SPLIT_FRACTIONS, SPLITS, pair_cohort, split_subjects
from trainer.progress import progress_bar

__all__ = ["CHUNK_PAIRS", "PrepareError", "RecordError", "build_plan", "ecg_problem", "load_cxr", "load_ecg",
           "merge_shards", "parse_shard", "prepare_cohort", "process_chunk"]

CHUNK_PAIRS = 64
MIN_CHUNKS_PER_WORKER = 8  # default worker count: CPU count, but no more than one per 8 pending chunks
WORK = ".work"
SKIPPED_FILES_SHOWN = 500  # manifest lists at most this many skipped files; the counts stay exact
PLAN_CSV_COLUMNS = ("row", "split", *PAIR_COLUMNS, "cxr_path")


class PrepareError(Exception):
    """Preparation cannot go on; the message says what is wrong and what to do."""


def parse_shard(text: str) -> tuple[int, int]:
    """``"I/N"`` (0 <= I < N) to (I, N); ValueError with the expected form otherwise."""
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise ValueError(f"shard {text!r}: expected I/N, for example 0/4 (this machine's part I of N)") from None
    if not (n >= 1 and 0 <= i < n):
        raise ValueError(f"shard {text!r}: need 0 <= I < N")
    return i, n


# ---------------------------------------------------------------------------------------------
# the plan: pairs, splits and chunks, identical on every machine for the same data and settings


def _time_text(series: pd.Series, millis: bool) -> pd.Series:
    text = series.dt.strftime("%Y-%m-%d %H:%M:%S.%f")
    return text.str[:-3] if millis else text.str[:-7]


def build_plan(roots: MimicRoots, *, seed: int, max_gap_hours: float | None, label_positive: Sequence[float],
               recipe: Recipe, split_fractions: Sequence[float], chunk_pairs: int) -> dict[str, Any]:
    """Pair, split and chunk the cohort; returns {settings, funnel, pairs (DataFrame), csv, chunks, plan_sha256}."""
    pairs, funnel = pair_cohort(read_ecg_records(roots), read_ed_stays(roots), read_cxr_images(roots), max_gap_hours)
    split_of = split_subjects(pairs["subject_id"].astype(int).tolist(), seed, split_fractions)
    pairs = pairs.assign(split=pairs["subject_id"].astype(int).map(split_of))
    order = {name: k for k, name in enumerate(SPLITS)}
    pairs = pairs.assign(_o=pairs["split"].map(order)).sort_values(["_o", "subject_id", "cxr_time", "dicom_id"],
                                                                   kind="stable").drop(columns="_o")
    pairs = pairs.reset_index(drop=True)
    pairs.insert(0, "row", np.arange(len(pairs)))
    label_cols = [LABEL_COLUMNS[k] for k in LABELS]
    table = pairs[[*PLAN_CSV_COLUMNS, *label_cols]].copy()
    table["ecg_time"] = _time_text(table["ecg_time"], millis=False)
    table["cxr_time"] = _time_text(table["cxr_time"], millis=True)
    table["gap_hours"] = table["gap_hours"].round(6)
    csv = table.to_csv(index=False, lineterminator="\n")
    settings = {
        "labels": list(LABELS), "label_columns": label_cols, "label_positive": list(label_positive),
        "recipe": recipe.to_dict(), "seed": seed, "split_fractions": dict(zip(SPLITS, split_fractions)),
        "max_gap_hours": max_gap_hours, "chunk_pairs": chunk_pairs, "cxr_size": CXR_SIZE,
    }
    sha = hashlib.sha256((json.dumps(settings, sort_keys=True) + "\n" + csv).encode()).hexdigest()
    chunks = []
    for name in SPLITS:
        rows = table.loc[table["split"] == name, "row"].to_numpy()
        for k, start in enumerate(range(0, len(rows), chunk_pairs)):
            part = rows[start:start + chunk_pairs]
            chunks.append({"chunk": f"{name}-{k:05d}", "split": name, "first": int(part[0]), "last": int(part[-1])})
    return {"settings": settings, "funnel": funnel, "table": table, "csv": csv, "chunks": chunks,
            "plan_sha256": sha, "subjects": {n: int(sum(1 for s in split_of.values() if s == n)) for n in SPLITS}}


# ---------------------------------------------------------------------------------------------
# assembly


def _write_npy(path: Path, n: int, item_shape: tuple[int, ...], dtype: np.dtype, parts) -> None:
    """Write ``n`` items from the arrays ``parts`` yields, one at a time (bounded memory), then rename."""
    tmp = path.with_name(path.name + ".partial")
    if n == 0:
        with open(tmp, "wb") as f:
            np.save(f, np.zeros((0, *item_shape), dtype))
    else:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=(n, *item_shape))
        i = 0
        for p in parts:
            out[i:i + len(p)] = p
            i += len(p)
        if i != n:
            raise AssertionError(f"{path}: wrote {i} items, expected {n}")
        out.flush()
        del out
    os.replace(tmp, path)


def _chunk_arrays(files: list[Path], key: str):
    """Yield array ``key`` of each chunk file in turn (only one chunk in memory at a time)."""
    for f in files:
        with np.load(f, allow_pickle=False) as z:
            yield z[key]


def _assemble(out: Path, plan_meta: dict[str, Any], table: pd.DataFrame) -> dict[str, Any]:
    """Concatenate the chunks into the split arrays, write pairs.csv, then the manifest."""
    work = out / WORK
    settings = plan_meta["settings"]
    recipe = Recipe.from_dict(settings["recipe"])
    shapes = item_shapes(recipe, len(settings["labels"]))
    positive = tuple(settings["label_positive"])
    counts, rates, skipped_entries, shards = {}, {}, {}, set()
    dropped: dict[str, int] = {}
    by_row = table.set_index("row")
    for name in SPLITS:
        files = [chunk_path(work, c["chunk"]) for c in plan_meta["chunks"] if c["split"] == name]
        row_parts = []
        for f in files:
            with np.load(f, allow_pickle=False) as z:
                row_parts.append(z["rows"])
                shards.add(str(z["shard"]))
                for entry in json.loads(str(z["skipped"])):
                    dropped[entry["reason"]] = dropped.get(entry["reason"], 0) + 1
                    skipped_entries.setdefault((entry["source"], entry["reason"]), entry)
        rows = np.concatenate(row_parts) if row_parts else np.zeros(0, np.int64)
        part = by_row.loc[rows].reset_index()
        raw = part[settings["label_columns"]].to_numpy(dtype=np.float64)
        labels = binarize(raw, positive).reshape(len(part), len(settings["labels"]))
        folder = out / name
        folder.mkdir(parents=True, exist_ok=True)
        _write_npy(folder / "ecg.npy", len(part), shapes["ecg"], ARRAY_DTYPES["ecg"], _chunk_arrays(files, "ecg"))
        _write_npy(folder / "cxr.npy", len(part), shapes["cxr"], ARRAY_DTYPES["cxr"], _chunk_arrays(files, "cxr"))
        _write_npy(folder / "labels.npy", len(part), shapes["labels"], ARRAY_DTYPES["labels"], [labels])
        pairs = part.drop(columns=["row", "split"])
        tmp = folder / (PAIRS_CSV + ".partial")
        pairs.to_csv(tmp, index=False, lineterminator="\n")
        os.replace(tmp, folder / PAIRS_CSV)
        counts[name] = len(part)
        rates[name] = {label: (round(float(labels[:, k].mean()), 4) if len(part) else None)
                       for k, label in enumerate(settings["labels"])}
    skipped: dict[str, int] = {}
    for _, reason in skipped_entries:
        skipped[reason] = skipped.get(reason, 0) + 1
    files = sorted(skipped_entries.values(), key=lambda e: (e["reason"], e["source"]))
    manifest = {
        "format": FORMAT, "version": VERSION,
        **{k: settings[k] for k in ("labels", "label_columns", "label_positive", "recipe", "seed",
                                    "split_fractions", "max_gap_hours")},
        "counts": counts, "subjects": plan_meta["subjects"], "positive_rates": rates,
        "skipped": dict(sorted(skipped.items())), "pairs_dropped": dict(sorted(dropped.items())),
        "skipped_files": [{"path": e["path"], "reason": e["reason"], "detail": e["detail"]}
                          for e in files[:SKIPPED_FILES_SHOWN]],
        "skipped_files_listed": min(len(files), SKIPPED_FILES_SHOWN), "skipped_files_total": len(files),
        "cohort": plan_meta["funnel"],
        "arrays": {"ecg": {"dtype": "float32", "item_shape": list(shapes["ecg"]), "units": "mV",
                           "transform": "bedside.preprocess.condition (not min-max scaled)"},
                   "cxr": {"dtype": "uint8", "item_shape": list(shapes["cxr"]),
                           "transform": "grey, centre square crop, area resize; xrv.datasets.normalize(img, 255)"},
                   "labels": {"dtype": "float32", "item_shape": list(shapes["labels"]), "values": [0, 1]}},
        "sources": plan_meta["sources"], "plan_sha256": plan_meta["plan_sha256"],
        "chunk_pairs": settings["chunk_pairs"], "shards": sorted(shards),
        "created_utc": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    write_json_atomic(out / MANIFEST, manifest)
    CohortCache(out)  # what was written reads back
    shutil.rmtree(work, ignore_errors=True)
    return manifest


class _AssemblyLock:
    """``CACHE/.work/assemble.lock`` (host and pid): one process assembles; a dead holder's lock is taken over."""

    def __init__(self, work: Path) -> None:
        self.path = work / "assemble.lock"
        self.me = f"{socket.gethostname()} {os.getpid()}"

    def _stale(self) -> bool:
        try:
            host, pid = self.path.read_text().split()
        except (OSError, ValueError):
            return True
        if host != socket.gethostname():
            return False  # cannot tell from here
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False

    def acquire(self) -> str | None:
        """None when acquired, else the holder ("host pid")."""
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                if self._stale():
                    self.path.unlink(missing_ok=True)
                    continue
                return self.path.read_text().strip() if self.path.exists() else "unknown"
            with os.fdopen(fd, "w") as f:
                f.write(self.me)
            return None
        return "unknown"

    def release(self) -> None:
        self.path.unlink(missing_ok=True)


def _finish(out: Path, meta: dict[str, Any], table: pd.DataFrame, status: dict[str, Any]) -> dict[str, Any]:
    """Assemble under the lock; if another live process holds it, report that instead."""
    lock = _AssemblyLock(out / WORK)
    holder = lock.acquire()
    if holder is not None:
        return {**status, "chunks_missing": 0, "assembling_elsewhere": holder}
    try:
        return _assemble(out, meta, table)  # removes .work, the lock with it
    finally:
        lock.release()


def _load_plan(work: Path) -> tuple[dict[str, Any], pd.DataFrame]:
    meta = json.loads((work / "plan.json").read_text())
    table = pd.read_csv(work / "plan.csv", dtype={"dicom_id": str, "ecg_path": str, "cxr_path": str})
    return meta, table


def _missing_chunks(work: Path, meta: dict[str, Any]) -> list[str]:
    return [c["chunk"] for c in meta["chunks"] if not chunk_done(chunk_path(work, c["chunk"]), meta["plan_sha256"])]


# ---------------------------------------------------------------------------------------------
# entry points


def prepare_cohort(mimic_root: Path | None, out: Path, *, seed: int = 0, max_gap_hours: float | None = None,
                   label_positive: Sequence[float] = DEFAULT_POSITIVE, shard: tuple[int, int] = (0, 1),
                   workers: int | None = None, progress: bool = True, roots: MimicRoots | None = None,
                   recipe: Recipe = DEFAULT_RECIPE, split_fractions: Sequence[float] = SPLIT_FRACTIONS,
                   chunk_pairs: int = CHUNK_PAIRS) -> dict[str, Any]:
    """Prepare (or resume, or finish) the cache at ``out``; returns its manifest when complete.

    ``roots`` overrides the discovery of the four projects under ``mimic_root``. With a shard
    (i, n), n > 1, only that shard's chunks are computed; when chunks are still missing afterwards
    (other shards) a status dict with ``"complete": False`` is returned instead of the manifest.
    Raises PrepareError, CohortLayoutError (bad tables) or ValueError (bad settings).
    """
    out = Path(out)
    positive = validate_positive(label_positive)
    index, count = shard
    if not (count >= 1 and 0 <= index < count):
        raise ValueError(f"shard {index}/{count}: need 0 <= I < N")
    if chunk_pairs < 1:
        raise ValueError(f"chunk_pairs={chunk_pairs} must be at least 1")
    roots = roots or MimicRoots.discover(mimic_root)
    plan = build_plan(roots, seed=seed, max_gap_hours=max_gap_hours, label_positive=positive, recipe=recipe,
                      split_fractions=tuple(split_fractions), chunk_pairs=chunk_pairs)
    sha = plan["plan_sha256"]
    manifest_path = out / MANIFEST
    if manifest_path.is_file():
        existing = json.loads(manifest_path.read_text())
        if existing.get("plan_sha256") == sha:
            return existing
        raise PrepareError(f"{out}: already holds a complete cache made from other data or settings "
                           f"(plan {str(existing.get('plan_sha256'))[:12]}, now {sha[:12]}). "
                           "Choose another --out, or delete that folder to rebuild it.")
    work = out / WORK
    (work / "chunks").mkdir(parents=True, exist_ok=True)
    plan_json = work / "plan.json"
    if plan_json.is_file():
        previous = json.loads(plan_json.read_text()).get("plan_sha256")
        if previous != sha:
            raise PrepareError(f"{out}: holds an unfinished preparation of other data or settings (plan "
                               f"{str(previous)[:12]}, now {sha[:12]}). Re-run with the original settings to "
                               f"finish it, or delete {work} (or choose another --out) to start this one.")
    else:
        tmp = work / "plan.csv.partial"
        tmp.write_text(plan["csv"])
        os.replace(tmp, work / "plan.csv")
        write_json_atomic(plan_json, {"plan_sha256": sha, "settings": plan["settings"], "funnel": plan["funnel"],
                                      "chunks": plan["chunks"], "subjects": plan["subjects"],
                                      "sources": roots.to_dict()})
    mine = [c for k, c in enumerate(plan["chunks"]) if k % count == index]
    pending = [c for c in mine if not chunk_done(chunk_path(work, c["chunk"]), sha)]
    table = plan["table"]
    tasks = [_task(c, table, roots, work, plan, f"{index}/{count}", recipe) for c in pending]
    _run(tasks, workers, progress)
    meta, table = _load_plan(work)
    missing = _missing_chunks(work, meta)
    status = {"complete": False, "out": str(out), "shard": f"{index}/{count}", "chunks_total": len(meta["chunks"]),
              "chunks_missing": len(missing), "plan_sha256": sha}
    if missing:
        return status
    return _finish(out, meta, table, status)


def _task(chunk: dict[str, Any], table: pd.DataFrame, roots: MimicRoots, work: Path, plan: dict[str, Any],
          shard: str, recipe: Recipe) -> dict[str, Any]:
    part = table.iloc[chunk["first"]:chunk["last"] + 1]
    return {
        "chunk": chunk["chunk"], "rows": part["row"].astype(int).tolist(),
        "ecg": [str(roots.ecg / p) for p in part["ecg_path"]], "cxr": [str(roots.cxr / p) for p in part["cxr_path"]],
        "ecg_rel": part["ecg_path"].tolist(), "cxr_rel": part["cxr_path"].tolist(), "recipe": recipe.to_dict(),
        "plan_sha256": plan["plan_sha256"], "shard": shard, "path": str(chunk_path(work, chunk["chunk"])),
    }


def _run(tasks: list[dict[str, Any]], workers: int | None, progress: bool) -> None:
    """Run chunk tasks in this process (1 worker) or a process pool, with a progress bar over pairs."""
    total = sum(len(t["rows"]) for t in tasks)
    if workers is None:  # a worker costs seconds to start (imports): one per 8 chunks at most
        workers = min(os.cpu_count() or 1, max(1, len(tasks) // MIN_CHUNKS_PER_WORKER))
    workers = max(1, min(workers, len(tasks)))
    with progress_bar(progress and bool(tasks), total, "preparing pairs") as advance:
        if workers <= 1:
            for task in tasks:
                advance(process_chunk(task)["pairs"])
            return
        pool = ProcessPoolExecutor(workers, mp_context=get_context("spawn"))
        try:
            running = {pool.submit(process_chunk, t) for t in tasks}
            while running:
                done, running = wait(running, return_when=FIRST_COMPLETED)
                for fut in done:
                    advance(fut.result()["pairs"])
        except BaseException:  # Ctrl-C or a failed chunk: stop now; finished chunks stay for the resume
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown()


def merge_shards(shard_dirs: Sequence[Path], out: Path) -> dict[str, Any]:
    """Merge shard outputs (their ``.work`` chunks) into the cache at ``out``; returns its manifest.

    All shards must come from the same plan (same data and settings). ``out`` may be one of the
    shard folders. Raises PrepareError naming what is missing or inconsistent.
    """
    out = Path(out)
    metas = []
    for d in shard_dirs:
        plan_json = Path(d) / WORK / "plan.json"
        if not plan_json.is_file():
            raise PrepareError(f"{plan_json}: missing; {d} is not an unfinished `trainer prepare --shard` output")
        metas.append((Path(d), json.loads(plan_json.read_text())))
    shas = {m["plan_sha256"] for _, m in metas}
    if len(shas) != 1:
        listing = ", ".join(f"{d}: {m['plan_sha256'][:12]}" for d, m in metas)
        raise PrepareError(f"shards come from different data or settings ({listing}); prepare them all with the "
                           "same tables, --seed, --max-gap-hours and --label-positive")
    sha = shas.pop()
    if (out / MANIFEST).is_file():
        raise PrepareError(f"{out}: already holds a complete cache; merge into a new folder")
    work = out / WORK
    (work / "chunks").mkdir(parents=True, exist_ok=True)
    if (work / "plan.json").is_file():
        if json.loads((work / "plan.json").read_text())["plan_sha256"] != sha:
            raise PrepareError(f"{work}: holds a preparation of other data or settings; merge into a new folder")
    else:
        src = metas[0][0] / WORK
        shutil.copyfile(src / "plan.csv", work / "plan.csv.partial")
        os.replace(work / "plan.csv.partial", work / "plan.csv")
        write_json_atomic(work / "plan.json", metas[0][1])
    for d, meta in metas:
        if d.resolve() == out.resolve():
            continue
        for c in meta["chunks"]:
            src, dst = chunk_path(d / WORK, c["chunk"]), chunk_path(work, c["chunk"])
            if chunk_done(src, sha) and not chunk_done(dst, sha):
                shutil.copyfile(src, dst.with_name(dst.name + ".partial"))
                os.replace(dst.with_name(dst.name + ".partial"), dst)
    meta, table = _load_plan(work)
    missing = _missing_chunks(work, meta)
    if missing:
        shown = ", ".join(missing[:8]) + (f" (+{len(missing) - 8} more)" if len(missing) > 8 else "")
        raise PrepareError(f"{out}: {len(missing)} of {len(meta['chunks'])} chunks are in none of the shard folders "
                           f"({shown}); run the missing shards, then merge again")
    result = _finish(out, meta, table, {"complete": False, "out": str(out), "chunks_total": len(meta["chunks"])})
    if result.get("complete") is False:
        raise PrepareError(f"{out}: being assembled by another process ({result['assembling_elsewhere']}); wait "
                           f"for it, or delete {out / WORK / 'assemble.lock'} if that process is gone")
    return result
