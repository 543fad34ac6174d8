"""Test helpers for the exporter: a small real classifier checkpoint and splits labelled from its scores.

The checkpoint follows docs/checkpoints.md with small encoder sizes, so export, quantization and
parity run in about a second. Labels are derived from the model's own FP32 scores, which lets a
test construct a split on which a variant must keep (or must lose) the ranking.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from bedside.preprocess import DEFAULT_RECIPE, scale
from export.data import Split
from trainer.ecg_model import EcgClassifier, EcgEncoderConfig, HeadConfig, ProbabilityModel

LABELS = ["edema", "pleural_effusion", "cardiomegaly"]
TINY_ENCODER = EcgEncoderConfig(stem_channels=16, d_model=32, layers=1, heads=2, ff_dim=64)
TINY_HEAD = HeadConfig(width=32, depth=1, outputs=len(LABELS))


def tiny_checkpoint(path: Path, seed: int = 0, manifest_sha256: str | None = None,
                    cache_dir: Path | None = None) -> tuple[Path, ProbabilityModel]:
    """Write a classifier checkpoint of a small random network; returns (path, the network in eval mode)."""
    torch.manual_seed(seed)
    clf = EcgClassifier(TINY_ENCODER, TINY_HEAD).eval()
    ckpt = {
        "kind": "cromotex-classifier", "version": 1, "encoder_config": TINY_ENCODER.to_dict(),
        "head_config": TINY_HEAD.to_dict(), "state_dict": clf.state_dict(), "labels": list(LABELS),
        "recipe": DEFAULT_RECIPE.to_dict(), "cache_dir": str(cache_dir) if cache_dir else None,
        "cohort_manifest_sha256": manifest_sha256, "config": {}, "config_sha256": "c" * 64,
        "method": "test", "seed": seed, "metrics": {},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, path)
    return path, ProbabilityModel(clf).eval()


def model_scores(model: ProbabilityModel, ecg_mv: np.ndarray) -> np.ndarray:
    """FP32 PyTorch probabilities [N, K] of conditioned windows in mV."""
    with torch.inference_mode():
        return model(torch.from_numpy(scale(ecg_mv, DEFAULT_RECIPE))).numpy()


def random_windows(n: int, seed: int = 0) -> np.ndarray:
    """Conditioned-looking windows [n, 12, 1000] in mV (noise around a few sinusoids)."""
    rng = np.random.default_rng(seed)
    t = np.arange(1000) / 100.0
    base = 0.5 * np.sin(2 * np.pi * rng.uniform(0.8, 2.0, (n, 12, 1)) * t)
    return (base + rng.normal(0, 0.2, (n, 12, 1000))).astype(np.float32)


def labelled_by_model(model: ProbabilityModel, ecg_mv: np.ndarray, noise: float = 0.0,
                      seed: int = 0) -> np.ndarray:
    """Labels [N, K]: 1 where the model's score is above the label's median, then a ``noise`` fraction flipped."""
    p = model_scores(model, ecg_mv)
    y = (p > np.median(p, axis=0)).astype(np.float32)
    flip = np.random.default_rng(seed).random(y.shape) < noise
    y[flip] = 1 - y[flip]
    return y


def splits(model: ProbabilityModel, n_val: int = 120, n_test: int = 120, noise: float = 0.2,
           seed: int = 0) -> tuple[Split, Split]:
    """Validation and test splits whose labels follow the model's scores up to ``noise`` flips."""
    ecg = random_windows(n_val + n_test, seed)
    y = labelled_by_model(model, ecg, noise, seed)
    return Split("val", ecg[:n_val], y[:n_val]), Split("test", ecg[n_val:], y[n_val:])


def _halves(ecg: np.ndarray, y: np.ndarray) -> tuple[Split, Split]:
    n = len(ecg) // 2
    return Split("val", ecg[:n], y[:n]), Split("test", ecg[n:], y[n:])


def robust_splits(model: ProbabilityModel, n: int = 2000, margin_sd: float = 0.85,
                  seed: int = 1) -> tuple[Split, Split]:
    """Splits labelled by the model's score against the median, keeping only windows whose every score
    lies more than ``margin_sd`` standard deviations from it: a ranking INT8 noise cannot upset."""
    ecg = random_windows(n, seed)
    p = model_scores(model, ecg)
    med = np.median(p, axis=0)
    keep = (np.abs(p - med) / p.std(axis=0) > margin_sd).all(axis=1)
    return _halves(ecg[keep], (p[keep] > med).astype(np.float32))


def fragile_splits(model: ProbabilityModel, n: int = 200, jitter_mv: float = 0.003,
                   seed: int = 2) -> tuple[Split, Split]:
    """Splits of near-identical windows (one window plus ``jitter_mv`` noise) labelled by the model's score
    against the median: the ranking rides on differences below INT8's resolution (0.003 mV: the default
    INT8 layout drops test AUROC by 0.01-0.04, well past the 0.005 gate)."""
    rng = np.random.default_rng(seed)
    ecg = (random_windows(1, seed) + rng.normal(0, jitter_mv, (n, 12, 1000))).astype(np.float32)
    p = model_scores(model, ecg)
    return _halves(ecg, (p > np.median(p, axis=0)).astype(np.float32))


def write_cache(root: Path, val: Split, test: Split, labels: list[str] = LABELS) -> str:
    """A cohort cache in ``trainer.cache``'s layout holding ``val`` and ``test``; returns its manifest sha256."""
    import hashlib
    import json

    from trainer.cache import CXR_SIZE, FORMAT, MANIFEST, PAIRS_CSV, VERSION

    for split in (val, test):
        folder = root / split.name
        folder.mkdir(parents=True)
        n = len(split)
        for name, dtype, shape in (("ecg", np.float32, split.ecg.shape), ("labels", np.float32, split.labels.shape),
                                   ("cxr", np.uint8, (n, CXR_SIZE, CXR_SIZE))):
            arr = np.lib.format.open_memmap(folder / f"{name}.npy", mode="w+", dtype=dtype, shape=shape)
            if name != "cxr":
                arr[:] = getattr(split, name)
            arr.flush()
            del arr
        (folder / PAIRS_CSV).write_text("subject_id\n" + "".join(f"{g}\n" for g in split.groups))
    manifest = {"format": FORMAT, "version": VERSION, "labels": list(labels), "recipe": DEFAULT_RECIPE.to_dict(),
                "counts": {val.name: len(val), test.name: len(test)}}
    raw = json.dumps(manifest, indent=2).encode()
    (root / MANIFEST).write_bytes(raw)
    return hashlib.sha256(raw).hexdigest()
