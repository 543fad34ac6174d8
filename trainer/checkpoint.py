"""Checkpoint files: atomic writes, safe loads, seeding, and the deployable classifier dict.

Every file is written to a temporary name and renamed, so a kill never leaves a half-written
checkpoint under the real name. Every file loads with ``torch.load(weights_only=True)``: only
tensors, numbers, strings, lists and dicts are stored (no pickled objects, no numpy arrays).

Per stage the engine writes (names relative to ``RUN_DIR/seed_<k>/checkpoints/``):

- ``<stage>_last.pt``: the resumable state (model, optimizer, scheduler, RNG, epoch and the next
  batch within it, early-stopping counters) every ``checkpoint_every_steps`` steps and per epoch;
  ``<stage>_last.json`` beside it says where it is, for people and scripts;
- ``<stage>_best.pt``: the weights of the best validation epoch so far;
- ``<stage>.pt``: the finished stage (best weights and metadata). Its presence marks the stage done;
  the ``_last``/``_best`` files are removed then.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bedside.files import atomic_write_bytes

from trainer.ecg_model import EcgClassifier, HeadConfig

CLASSIFIER_KIND = "cromotex-classifier"
CLASSIFIER_VERSION = 1


def json_safe(obj: Any) -> Any:
    """``obj`` with non-finite floats as None (JSON has no NaN or infinity) and tuples as lists."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def atomic_write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON (strict: no NaN) atomically."""
    text = json.dumps(json_safe(obj), indent=2, sort_keys=True, allow_nan=False)
    atomic_write_bytes(path, (text + "\n").encode())


def sha256_file(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def json_load(path: Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def save(obj: dict[str, Any], path: Path) -> None:
    """``torch.save`` to ``path`` atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load(path: Path) -> dict[str, Any]:
    """Load a checkpoint written by this package (weights only: no code runs on load)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise FileNotFoundError(f"checkpoint {path} not found; run the stage that writes it first") from None
    except Exception as err:  # noqa: BLE001 - a truncated or foreign file
        raise ValueError(f"checkpoint {path} cannot be read ({type(err).__name__}: {err}); delete it and rerun "
                         "the stage") from None


def seed_everything(seed: int) -> None:
    """Seed torch, numpy and random for a repeatable run."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def classifier_checkpoint(model: EcgClassifier, head_cfg: HeadConfig, *, labels: tuple[str, ...],
                          recipe: dict[str, Any], cache_dir: Path, manifest_sha256: str, config: dict[str, Any],
                          config_sha256: str, method: str, protocol: str, seed: int, metrics: dict[str, Any],
                          val_outputs: dict[str, torch.Tensor]) -> dict[str, Any]:
    """The classifier dict of docs/checkpoints.md (what ``trainer export`` reads)."""
    if head_cfg.outputs != len(labels):
        raise ValueError(f"head has {head_cfg.outputs} outputs for {len(labels)} labels {list(labels)}")
    return {
        "kind": CLASSIFIER_KIND,
        "version": CLASSIFIER_VERSION,
        "encoder_config": model.encoder.cfg.to_dict(),
        "head_config": head_cfg.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "labels": list(labels),
        "recipe": recipe,
        "cache_dir": str(Path(cache_dir).resolve()),
        "cohort_manifest_sha256": manifest_sha256,
        "config": config,
        "config_sha256": config_sha256,
        "method": method,
        "protocol": protocol,
        "seed": seed,
        "metrics": metrics,
        "val_outputs": {k: v.detach().cpu().float() for k, v in val_outputs.items()},
    }

