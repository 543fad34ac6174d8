"""One chunk of pairs: converting each ECG and X-ray to its cached form, and the chunk file.

:func:`process_chunk` runs in worker processes; it loads each pair, names and counts what cannot be
loaded, and writes ``CACHE/.work/chunks/<split>-NNNNN.npz`` atomically (temporary file, fsync,
rename), tagged with the plan's sha256 so that a resumed run can trust it.

Skip reasons: ``ecg_missing`` (no .hea or .dat), ``ecg_unreadable`` (wfdb cannot parse the header or
read the samples: corrupt or truncated), ``ecg_refused`` (readable but unusable by the model: leads,
units, length), ``ecg_gap`` (NaN samples in the window), ``cxr_missing``, ``cxr_unreadable``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from bedside.errors import GapError, RecordError
from bedside.preprocess import DEFAULT_RECIPE, Recipe, condition
from bedside.records import open_record
from trainer.cache import CXR_SIZE, item_shapes


def load_ecg(path: str | os.PathLike[str], recipe: Recipe = DEFAULT_RECIPE) -> np.ndarray:
    """A WFDB record to the cached form: ``condition(open_record(path).read(), fs)``, [12, 1000] mV."""
    record = open_record(path, recipe)
    return condition(record.read(), record.fs_hz, recipe)


def load_cxr(path: str | os.PathLike[str], size: int = CXR_SIZE) -> np.ndarray:
    """An image file to the cached form: grey, centre square crop, area-resized to ``size``, uint8.

    The crop is torchxrayvision's ``XRayCenterCrop`` (same offsets); the resize averages areas like
    its cv2 engine (``INTER_AREA``) via Pillow's BOX filter.
    """
    with Image.open(path) as im:
        im.load()
        grey = im.convert("L")
    w, h = grey.size
    side = min(w, h)
    x0, y0 = w // 2 - side // 2, h // 2 - side // 2
    out = grey.crop((x0, y0, x0 + side, y0 + side)).resize((size, size), Image.Resampling.BOX)
    return np.asarray(out, dtype=np.uint8)


def ecg_problem(exc: Exception, base: str) -> str:
    """The skip reason for a record that failed to load (see docs/cohort.md for the list)."""
    if isinstance(exc, GapError):
        return "ecg_gap"
    if not Path(base + ".hea").is_file():
        return "ecg_missing"
    read_failed = isinstance(exc, RecordError) and exc.__cause__ is not None
    if read_failed and not Path(base + ".dat").is_file():
        return "ecg_missing"
    if read_failed:
        return "ecg_unreadable"  # wfdb could not parse the header or read the samples
    return "ecg_refused"  # readable, but not usable by the model: leads, units, length


def process_chunk(task: dict[str, Any]) -> dict[str, Any]:
    """Convert one chunk of pairs and write its ``.npz`` atomically; returns its counts.

    ``task``: chunk (id), rows (plan row numbers), ecg (absolute record paths), cxr (absolute image
    paths), ecg_rel/cxr_rel (portable names), recipe (dict), plan_sha256, shard ("I/N"), path.
    """
    recipe = Recipe.from_dict(task["recipe"])
    ecg_done: dict[str, np.ndarray | tuple[str, str]] = {}
    ecgs, cxrs, rows, skipped = [], [], [], []
    for row, ecg_path, cxr_path, ecg_rel, cxr_rel in zip(task["rows"], task["ecg"], task["cxr"],
                                                         task["ecg_rel"], task["cxr_rel"]):
        if ecg_path not in ecg_done:
            try:
                ecg_done[ecg_path] = load_ecg(ecg_path, recipe)
            except (RecordError, GapError, ValueError) as exc:
                ecg_done[ecg_path] = (ecg_problem(exc, ecg_path), str(exc))
        ecg = ecg_done[ecg_path]
        if isinstance(ecg, tuple):
            skipped.append({"row": row, "path": ecg_path, "source": f"ecg:{ecg_rel}", "reason": ecg[0],
                            "detail": ecg[1]})
            continue
        try:
            cxr = load_cxr(cxr_path)
        except FileNotFoundError as exc:
            skipped.append({"row": row, "path": cxr_path, "source": f"cxr:{cxr_rel}", "reason": "cxr_missing",
                            "detail": str(exc)})
            continue
        except (UnidentifiedImageError, OSError, ValueError) as exc:
            skipped.append({"row": row, "path": cxr_path, "source": f"cxr:{cxr_rel}", "reason": "cxr_unreadable",
                            "detail": f"{type(exc).__name__}: {exc}"})
            continue
        ecgs.append(ecg)
        cxrs.append(cxr)
        rows.append(row)
    shapes = item_shapes(recipe, 0)
    arrays = {
        "ecg": np.stack(ecgs).astype(np.float32) if ecgs else np.zeros((0, *shapes["ecg"]), np.float32),
        "cxr": np.stack(cxrs) if cxrs else np.zeros((0, *shapes["cxr"]), np.uint8),
        "rows": np.asarray(rows, dtype=np.int64),
        "skipped": np.asarray(json.dumps(skipped)),
        "plan_sha256": np.asarray(task["plan_sha256"]),
        "shard": np.asarray(task["shard"]),
    }
    path = Path(task["path"])
    tmp = path.with_name(path.name + ".partial")
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return {"chunk": task["chunk"], "ok": len(rows), "skipped": len(skipped), "pairs": len(task["rows"])}


def chunk_path(work: Path, chunk: str) -> Path:
    """Where chunk ``chunk`` of a preparation lives under its ``.work`` folder."""
    return work / "chunks" / f"{chunk}.npz"


def chunk_done(path: Path, sha: str) -> bool:
    """True when ``path`` is a complete chunk of the plan ``sha`` (a damaged one counts as not done)."""
    if not path.is_file():
        return False
    try:
        with np.load(path, allow_pickle=False) as z:
            return str(z["plan_sha256"]) == sha
    except Exception:  # a damaged chunk is simply redone
        return False
