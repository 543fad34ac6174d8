"""The prepared cohort cache: its format (one place) and a validating, memory-mapped reader.

Layout written by ``trainer prepare`` (:mod:`trainer.prepare`)::

    CACHE/manifest.json       written last, atomically: a cache without it is incomplete
    CACHE/<split>/ecg.npy     float32 [N, 12, 1000]  mV at 100 Hz, baseline removed, NOT min-max scaled
    CACHE/<split>/cxr.npy     uint8   [N, 224, 224]  grey, centre square crop (torchxrayvision convention)
    CACHE/<split>/labels.npy  float32 [N, K]         in {0, 1}, K = len(manifest["labels"])
    CACHE/<split>/pairs.csv   one row per item: ids, paths, times, gap_hours, raw CheXpert values

Splits are ``train``, ``val`` and ``test``. Arrays are ``.npy`` files, so ``np.load(mmap_mode="r")``
streams them without loading a split into memory. The ECGs are the output of
``bedside.preprocess.condition`` (training scales them with ``scale_minmax`` after augmentation);
the X-rays map to torchxrayvision's [-1024, 1024] with ``xrv.datasets.normalize(img, 255)``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bedside.files import atomic_write_json

from bedside.preprocess import Recipe

FORMAT = "cromotex-cache"
VERSION = 1
MANIFEST = "manifest.json"
CXR_SIZE = 224  # pixels per side of the stored X-rays
SPLIT_NAMES: tuple[str, ...] = ("train", "val", "test")
#: array file -> dtype
ARRAY_DTYPES: dict[str, np.dtype] = {"ecg": np.dtype(np.float32), "cxr": np.dtype(np.uint8),
                                     "labels": np.dtype(np.float32)}
PAIRS_CSV = "pairs.csv"
_FIX = "Re-run `trainer prepare` with the same --out to finish or rebuild it"


class CacheError(Exception):
    """A cache is missing, incomplete or inconsistent; the message names the path and the fix."""


def item_shapes(recipe: Recipe, n_labels: int) -> dict[str, tuple[int, ...]]:
    """Per-item shape of each array: ecg [leads, window samples], cxr [224, 224], labels [K]."""
    return {"ecg": (len(recipe.leads), recipe.window_samples), "cxr": (CXR_SIZE, CXR_SIZE), "labels": (n_labels,)}


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Write JSON to ``path`` through a temporary file, fsync and rename: never half-written."""
    atomic_write_json(path, data)


def npy_layout(path: Path) -> tuple[tuple[int, ...], np.dtype, int]:
    """(shape, dtype, data offset in bytes) from a ``.npy`` header, without reading the data."""
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        if fortran:
            raise ValueError("Fortran-ordered array")
        return tuple(shape), np.dtype(dtype), f.tell()


def count_csv_rows(path: Path) -> int:
    """Data rows of a CSV written by pandas (one line per row, header first)."""
    with open(path, "rb") as f:
        return max(0, sum(1 for line in f if line.strip()) - 1)


@dataclass
class CacheSplit:
    """One split of a cache: memory-mapped arrays (read-only) and the path of its pairs table."""

    name: str
    ecg: np.ndarray  # float32 [N, 12, 1000], mV
    cxr: np.ndarray  # uint8 [N, 224, 224]
    labels: np.ndarray  # float32 [N, K] in {0, 1}
    pairs_csv: Path

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subject_ids(self) -> np.ndarray:
        """Subject id of each item, int64 [N] (the ``subject_id`` column of pairs.csv, in item order)."""
        import csv

        try:
            with open(self.pairs_csv, newline="", encoding="utf-8") as f:
                reader = csv.DictReader(f)
                if "subject_id" not in (reader.fieldnames or []):
                    raise CacheError(f"{self.pairs_csv}: no subject_id column (columns {reader.fieldnames}). {_FIX}.")
                ids = [row["subject_id"] for row in reader]
        except OSError as exc:
            raise CacheError(f"{self.pairs_csv}: cannot read: {exc}. {_FIX}.") from exc
        if len(ids) != len(self):
            raise CacheError(f"{self.pairs_csv}: {len(ids)} rows for {len(self)} items. {_FIX}.")
        try:
            return np.asarray([int(float(v)) for v in ids], dtype=np.int64)
        except ValueError as exc:
            raise CacheError(f"{self.pairs_csv}: a subject_id is not an integer ({exc}). {_FIX}.") from exc


class CohortCache:
    """A validated cache. Raises CacheError when the manifest is missing or disagrees with the files."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        path = self.root / MANIFEST
        if not self.root.is_dir():
            raise CacheError(f"{self.root}: no such cache folder. Build it with `trainer prepare --out {self.root}`.")
        if not path.is_file():
            raise CacheError(f"{path}: missing, so the cache is incomplete (an interrupted or partial "
                             f"`trainer prepare`, or a shard waiting for the others). {_FIX}.")
        raw = path.read_bytes()
        try:
            manifest = json.loads(raw)
        except ValueError as exc:
            raise CacheError(f"{path}: not valid JSON ({exc}). {_FIX}.") from exc
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise CacheError(f"{path}: not a {FORMAT} manifest. Point to a folder written by `trainer prepare`.")
        if manifest.get("version") != VERSION:
            raise CacheError(f"{path}: cache format version {manifest.get('version')!r}, this code reads version "
                             f"{VERSION}. Rebuild the cache with this version of `trainer prepare`.")
        for key in ("labels", "recipe", "counts"):
            if key not in manifest:
                raise CacheError(f"{path}: manifest lacks {key!r}. {_FIX}.")
        try:
            self.recipe = Recipe.from_dict(manifest["recipe"])
        except (TypeError, ValueError) as exc:
            raise CacheError(f"{path}: preprocessing recipe not usable here: {exc}") from exc
        self.manifest: dict[str, Any] = manifest
        self.manifest_sha256 = hashlib.sha256(raw).hexdigest()
        self.labels: tuple[str, ...] = tuple(manifest["labels"])
        self._shapes = item_shapes(self.recipe, len(self.labels))
        for name in manifest["counts"]:
            self._check_split(name)

    def _check_split(self, name: str) -> None:
        n = self.manifest["counts"][name]
        folder = self.root / name
        for array, dtype in ARRAY_DTYPES.items():
            path = folder / f"{array}.npy"
            if not path.is_file():
                raise CacheError(f"{path}: missing though the manifest lists {n} items in split {name!r}. {_FIX}.")
            expected = (n, *self._shapes[array])
            try:
                shape, got, offset = npy_layout(path)
            except (OSError, ValueError) as exc:
                raise CacheError(f"{path}: not a readable .npy array ({exc}). {_FIX}.") from exc
            if shape != expected or got != dtype:
                raise CacheError(f"{path}: holds {got} {list(shape)}, the manifest says {dtype} {list(expected)}. "
                                 f"{_FIX}.")
            size = path.stat().st_size
            want = offset + int(np.prod(shape)) * dtype.itemsize
            if size != want:
                raise CacheError(f"{path}: {size} bytes, {want} expected for {dtype} {list(shape)}: the file is "
                                 f"truncated or overwritten. {_FIX}.")
        pairs = folder / PAIRS_CSV
        if not pairs.is_file():
            raise CacheError(f"{pairs}: missing. {_FIX}.")
        rows = count_csv_rows(pairs)
        if rows != n:
            raise CacheError(f"{pairs}: {rows} rows, the manifest says {n}. {_FIX}.")

    def split(self, name: str) -> CacheSplit:
        """The named split (``train``, ``val`` or ``test``) with read-only memory-mapped arrays."""
        counts = self.manifest["counts"]
        if name not in counts:
            raise CacheError(f"{self.root}: no split {name!r}; this cache has {sorted(counts)}")
        folder = self.root / name
        arrays = {}
        for array in ARRAY_DTYPES:
            path = folder / f"{array}.npy"
            # numpy cannot memory-map a zero-length array; an empty split is loaded plainly
            arrays[array] = np.load(path, mmap_mode="r" if counts[name] else None)
        return CacheSplit(name=name, ecg=arrays["ecg"], cxr=arrays["cxr"], labels=arrays["labels"],
                          pairs_csv=folder / PAIRS_CSV)
