"""Datasets over the memory-mapped cohort cache, and a resumable, shardable epoch sampler.

The cache (``trainer.cache``) holds conditioned ECGs in mV (``ecg.npy``, [N, 12, 1000] float32),
grey CXRs (``cxr.npy``, [N, 224, 224] uint8) and targets (``labels.npy``, [N, K]). A dataset keeps
only the file paths and the small label array; each DataLoader worker opens its own read-only
memory maps, so the cohort is never loaded into memory and nothing large is pickled to workers.

The ECG path per item: optional 3KG augmentation in mV (``trainer.augment``), then
``bedside.preprocess.scale`` with the run's recipe, the one scaling the bedside applies too. CXRs are mapped to
torchxrayvision's [-1024, 1024] range with ``xrv.utils.normalize(img, 255)``.

Randomness: the sampler's order is a function of (seed, epoch) and each augmentation's random
generator a function of (seed, epoch, index, view), so a run is repeatable with any number of
workers and a resumed run continues with exactly the batches and views it would have seen.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchxrayvision as xrv
from torch.utils.data import DataLoader, Dataset, Sampler

from bedside.preprocess import DEFAULT_RECIPE, Recipe, scale
from trainer.augment import Augment3KG, augment_view

FIELDS: tuple[str, ...] = ("ecg", "cxr")


class CacheDataset(Dataset):
    """Items of one cache split: ``{"index", "labels", "ecg" [views, 12, 1000], "cxr" [1, 224, 224]}``.

    ``fields`` picks what is read (a stage that needs no X-ray never touches ``cxr.npy``);
    ``augment`` (3KG parameters) or None; ``views`` ECG views per item (2 for pretraining);
    ``label_columns`` keeps some label columns (binary protocol) or all when None; ``recipe`` gives
    the input scaling; ``indices`` keeps a subset of the split's items (the low-label protocol), in
    which case item ``i`` is the split's item ``indices[i]``.
    Keys are indices or ``(epoch, index)`` pairs from :class:`EpochSampler`.
    """

    def __init__(self, ecg_path: str | Path, cxr_path: str | Path, labels: np.ndarray, *,
                 fields: Sequence[str] = ("ecg",), augment: Augment3KG | None = None, views: int = 1,
                 seed: int = 0, label_columns: Sequence[int] | None = None, recipe: Recipe = DEFAULT_RECIPE,
                 indices: Sequence[int] | None = None) -> None:
        unknown = set(fields) - set(FIELDS)
        if unknown or not fields:
            raise ValueError(f"fields {list(fields)}: choose from {list(FIELDS)}")
        if views < 1 or (views > 1 and augment is None):
            raise ValueError(f"views={views} needs augment parameters when > 1 (identical views teach nothing)")
        self.ecg_path = Path(ecg_path)
        self.cxr_path = Path(cxr_path)
        labels = np.array(labels, dtype=np.float32)  # a small in-memory copy: [N, K]
        self.rows = np.arange(len(labels)) if indices is None else np.asarray(indices, dtype=np.int64)
        labels = labels[self.rows]
        self.labels = labels if label_columns is None else np.ascontiguousarray(labels[:, list(label_columns)])
        self.recipe = recipe
        self.fields = tuple(fields)
        self.augment = augment
        self.views = views
        self.seed = seed
        self._maps: dict[str, np.ndarray] = {}

    @classmethod
    def from_split(cls, split: Any, **kwargs: Any) -> "CacheDataset":
        """From a ``trainer.cache.CacheSplit``: its arrays lie beside its ``pairs.csv`` (trainer.cache layout)."""
        folder = Path(split.pairs_csv).parent
        return cls(folder / "ecg.npy", folder / "cxr.npy", np.asarray(split.labels), **kwargs)

    def __len__(self) -> int:
        return len(self.labels)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_maps"] = {}  # never pickle a memory map (it would copy the data): workers reopen
        return state

    def _array(self, name: str) -> np.ndarray:
        if name not in self._maps:
            path = self.ecg_path if name == "ecg" else self.cxr_path
            self._maps[name] = np.load(path, mmap_mode="r")
        return self._maps[name]

    def ecg_views(self, epoch: int, index: int) -> np.ndarray:
        """[views, 12, n] model inputs for item ``index`` (augmented when configured)."""
        x_mv = np.asarray(self._array("ecg")[self.rows[index]], dtype=np.float32)
        if self.augment is None:
            return scale(x_mv, self.recipe)[None]
        out = [augment_view(x_mv, np.random.default_rng([self.seed, epoch, index, v]), self.augment, self.recipe)
               for v in range(self.views)]
        return np.stack(out)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        epoch, index = key if isinstance(key, tuple) else (0, key)
        index = int(index)
        item: dict[str, Any] = {"index": index, "labels": torch.from_numpy(self.labels[index])}
        if "ecg" in self.fields:
            item["ecg"] = torch.from_numpy(self.ecg_views(epoch, index))
        if "cxr" in self.fields:
            img = xrv.utils.normalize(np.asarray(self._array("cxr")[self.rows[index]]), 255)
            item["cxr"] = torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32))[None]
        return item


class EpochSampler(Sampler):
    """Yields ``(epoch, index)``: a permutation per (seed, epoch), sharded by rank, from a given batch.

    With ``world`` ranks of per-rank batch ``b``, global step s is the chunk
    ``perm[s*b*world:(s+1)*b*world]`` of the epoch's permutation, rank r taking every world-th item
    of it; a single process with batch ``b*world`` sees the same global batches. The tail that does
    not fill a global batch is dropped (a contrastive batch must not be tiny); its size is
    reported by :attr:`dropped`.
    """

    def __init__(self, n: int, batch_size: int, *, seed: int, rank: int = 0, world: int = 1) -> None:
        self.n, self.batch_size, self.seed, self.rank, self.world = n, batch_size, seed, rank, world
        self.epoch = 0
        self.start_batch = 0
        if self.batches_per_epoch == 0:
            raise ValueError(f"the training split has {n} samples, fewer than one batch of {batch_size} x {world} "
                             "rank(s); lower batch_size in the config or prepare a bigger cohort")

    @property
    def batches_per_epoch(self) -> int:
        return self.n // (self.batch_size * self.world)

    @property
    def dropped(self) -> int:
        """Samples left out of each epoch (a different random few every epoch)."""
        return self.n - self.batches_per_epoch * self.batch_size * self.world

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start_batch = epoch, start_batch

    def permutation(self, epoch: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.n, generator=g)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        used = self.batches_per_epoch * self.batch_size * self.world
        mine = self.permutation(self.epoch)[:used][self.rank::self.world]
        for i in mine[self.start_batch * self.batch_size:].tolist():
            yield (self.epoch, i)

    def __len__(self) -> int:
        return (self.batches_per_epoch - self.start_batch) * self.batch_size


def train_loader(dataset: CacheDataset, sampler: EpochSampler, workers: int, pin_memory: bool = False) -> DataLoader:
    """Loader over the sampler's (epoch, index) keys; batches of the sampler's per-rank size."""
    return DataLoader(dataset, batch_size=sampler.batch_size, sampler=sampler, num_workers=workers,
                      pin_memory=pin_memory, drop_last=False, persistent_workers=False,
                      prefetch_factor=4 if workers else None)


def eval_loader(dataset: CacheDataset, batch_size: int, workers: int, pin_memory: bool = False) -> DataLoader:
    """Sequential loader over the whole split (nothing dropped)."""
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers, pin_memory=pin_memory,
                      drop_last=False, prefetch_factor=4 if workers else None)

