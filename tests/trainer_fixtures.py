"""Test helpers for the training tests: a tiny cohort cache in trainer.cache's layout, small configs.

The cache is written the way ``trainer prepare`` writes one (``np.lib.format.open_memmap`` arrays,
``pairs.csv``, a ``manifest.json`` written last) and read back through the real
``trainer.cache.CohortCache``. Its ECGs and X-rays carry the labels weakly (ECG) and clearly
(X-ray), like the synthetic cohort, so a model can learn something in a few steps.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from bedside.preprocess import DEFAULT_RECIPE
from trainer.labels import LABELS

SPLITS = {"train": 48, "val": 16, "test": 16}


def write_tiny_cache(root: Path, counts: dict[str, int] | None = None, seed: int = 0) -> Path:
    """A valid cohort cache under ``root`` with ``counts`` pairs per split; returns ``root``."""
    counts = counts or SPLITS
    rng = np.random.default_rng(seed)
    t = np.arange(1000) / 100.0
    yy, xx = np.mgrid[0:224, 0:224]
    for split, n in counts.items():
        folder = root / split
        folder.mkdir(parents=True, exist_ok=True)
        labels = (rng.random((n, len(LABELS))) < 0.4).astype(np.float32)
        ecg = np.lib.format.open_memmap(folder / "ecg.npy", mode="w+", dtype=np.float32, shape=(n, 12, 1000))
        cxr = np.lib.format.open_memmap(folder / "cxr.npy", mode="w+", dtype=np.uint8, shape=(n, 224, 224))
        for i in range(n):
            hr = 1.0 + 0.5 * labels[i, 0] + rng.uniform(-0.2, 0.2)
            amp = 1.0 - 0.3 * labels[i, 1] + 0.4 * labels[i, 2]
            gains = rng.normal(1.0, 0.2, 12)[:, None]
            ecg[i] = amp * gains * np.sin(2 * np.pi * hr * t)[None] ** 9 + rng.normal(0, 0.05, (12, 1000))
            radius = 40 + 30 * labels[i, 2]
            img = 60 + 80 * labels[i, 0] * np.exp(-((xx - 112) ** 2) / 4000.0) + 40 * labels[i, 1] * (yy > 180)
            img = img + 120 * (((xx - 112) ** 2 + (yy - 130) ** 2) < radius**2) + rng.normal(0, 10, (224, 224))
            cxr[i] = np.clip(img, 0, 255).astype(np.uint8)
        ecg.flush()
        cxr.flush()
        del ecg, cxr
        np.save(folder / "labels.npy", labels)
        rows = ["subject_id,study_id"] + [f"{10_000 * (1 + list(counts).index(split)) + i // 2},{1000 + i}"
                                          for i in range(n)]  # two pairs per subject
        (folder / "pairs.csv").write_text("\n".join(rows) + "\n")
    manifest = {"format": "cromotex-cache", "version": 1, "labels": list(LABELS), "recipe": DEFAULT_RECIPE.to_dict(),
                "counts": counts}
    (root / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return root


TINY_CONFIG = """
[run]
name = "tiny"
seeds = [0]
methods = {methods}
protocols = {protocols}
deploy_method = "{deploy}"
device = "cpu"
workers = 0
threads = 1
checkpoint_every_steps = {ckpt_every}
log_every_steps = 1

[model.ecg]
stem_channels = 8
kernel = 10
stride = 10
d_model = 16
layers = 1
heads = 2
ff_dim = 32
dropout = {dropout}

[model.head]
width = 16
depth = 1
dropout = {dropout}

[model.cxr]
arch = "small_cnn"
width = 4

[pretrain]
steps = {steps}
eval_every_steps = {eval_every}
batch_size = 16
lr = 1e-3
warmup_steps = 1
patience = 0
temperature = 0.1
proj_dim = 16

[cxr]
steps = {steps}
eval_every_steps = {eval_every}
warmup_steps = 1
batch_size = 16
lr = 1e-3
patience = 0

[align]
steps = {steps}
eval_every_steps = {eval_every}
warmup_steps = 1
batch_size = 16
lr = 1e-3
patience = 0
temperature = 0.1
proj_dim = 16

[finetune]
steps = {steps}
eval_every_steps = {eval_every}
warmup_steps = 1
batch_size = 16
lr = 1e-3
patience = 0

[report]
bootstrap = 200
"""


def tiny_config(path: Path, *, methods: tuple[str, ...] = ("cromotex",), protocols: tuple[str, ...] = ("multilabel",),
                deploy: str = "cromotex", steps: int = 6, eval_every: int = 3, ckpt_every: int = 1000,
                dropout: float = 0.1, seeds: tuple[int, ...] = (0,)) -> Path:
    """Write a tiny CPU config (seconds per stage) to ``path``; 48 training pairs in batches of 16: 3 steps an epoch."""
    text = TINY_CONFIG.format(methods=json.dumps(list(methods)), protocols=json.dumps(list(protocols)), deploy=deploy,
                              steps=steps, eval_every=eval_every, ckpt_every=ckpt_every, dropout=dropout)
    text = text.replace("seeds = [0]", f"seeds = {json.dumps(list(seeds))}")
    path.write_text(text)
    return path
