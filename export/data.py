"""Validation and test windows for the exporter, read from the cohort cache the model was trained on.

The cache (``trainer.cache.CohortCache``) holds conditioned windows in mV, [N, 12, 1000] memory
mapped; the model input is ``bedside.preprocess.scale`` of them under the model's recipe (``minmax``
or ``fixed_mv``), applied batch by batch so a large split is never loaded whole. Each window carries
the id of its subject (``subject_id`` of ``CACHE/<split>/pairs.csv``, one row per item in array
order), so intervals can resample subjects rather than windows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from bedside.preprocess import DEFAULT_RECIPE, Recipe, scale


@dataclass
class Split:
    """One split: conditioned windows ``ecg`` [N, 12, 1000] mV, labels [N, K] in {0, 1}, subject ids [N].

    ``groups`` None means every window is its own subject (hand-made splits in tests); ``recipe``
    names the input scaling the model was trained with.
    """

    name: str
    ecg: np.ndarray
    labels: np.ndarray
    groups: np.ndarray | None = None
    recipe: Recipe = DEFAULT_RECIPE

    def __post_init__(self) -> None:
        if len(self.ecg) != len(self.labels):
            raise ValueError(f"{self.name}: {len(self.ecg)} windows but {len(self.labels)} label rows")
        if self.groups is None:
            self.groups = np.arange(len(self.ecg), dtype=np.int64)
        self.groups = np.asarray(self.groups, dtype=np.int64)
        if self.groups.shape != (len(self.ecg),):
            raise ValueError(f"{self.name}: {len(self.ecg)} windows but subject ids of shape {self.groups.shape}")

    def __len__(self) -> int:
        return len(self.ecg)

    @property
    def subjects(self) -> int:
        """How many distinct subjects the split holds."""
        return int(len(np.unique(self.groups)))

    def subset(self, max_windows: int | None) -> "Split":
        """At most ``max_windows`` windows, evenly spaced (deterministic); the split itself if None."""
        if max_windows is None or len(self) <= max_windows:
            return self
        idx = np.linspace(0, len(self) - 1, max_windows).round().astype(int)
        return replace(self, ecg=self.ecg[idx], labels=self.labels[idx], groups=self.groups[idx])

    def with_recipe(self, recipe: Recipe) -> "Split":
        """The same windows scaled under ``recipe`` (the checkpoint's)."""
        return self if recipe == self.recipe else replace(self, recipe=recipe)

    def batches(self, batch: int) -> Iterator[np.ndarray]:
        """Model inputs (the recipe's scaling, in [-1, 1]) in batches of ``batch`` windows."""
        for i in range(0, len(self), batch):
            yield scale(np.asarray(self.ecg[i:i + batch], dtype=np.float32), self.recipe)

    def inputs(self, n: int) -> np.ndarray:
        """The first ``n`` model inputs [n, 12, 1000]."""
        return scale(np.asarray(self.ecg[:n], dtype=np.float32), self.recipe)


def predict(run: Callable[[np.ndarray], np.ndarray], split: Split, batch: int = 64,
            advance: Callable[[int], None] | None = None) -> np.ndarray:
    """Model outputs [N, K] over a split; ``advance(n)`` is called after each batch (progress)."""
    outs = []
    for x in split.batches(batch):
        outs.append(np.asarray(run(x), dtype=np.float32))
        if advance:
            advance(len(x))
    return np.concatenate(outs) if outs else np.zeros((0, split.labels.shape[1]), np.float32)


def open_cache(cache_dir: str | Path, labels: list[str],
               recipe: Recipe = DEFAULT_RECIPE) -> tuple[Split, Split, str]:
    """(validation, test, manifest sha256) of a ``trainer prepare`` cache, label columns in ``labels`` order.

    ``recipe`` is the checkpoint's preprocessing recipe (its scaling makes the model input).
    """
    from export.onnx_export import ExportError
    from trainer.cache import CacheError, CacheSplit, CohortCache

    try:
        cache = CohortCache(cache_dir)
        val, test = cache.split("val"), cache.split("test")
    except CacheError as exc:
        raise ExportError(f"cache: {exc}") from exc
    missing = [label for label in labels if label not in cache.labels]
    if missing:
        raise ExportError(f"cache {cache_dir} has labels {list(cache.labels)}, the model predicts {labels} "
                          f"({missing} missing); give --cache the cache the model was trained on")
    cols = [cache.labels.index(label) for label in labels]

    def split(s: CacheSplit) -> Split:
        try:
            groups = s.subject_ids()
        except CacheError as exc:
            raise ExportError(f"cache: {exc}") from exc
        return Split(s.name, s.ecg, np.asarray(s.labels)[:, cols], groups, recipe)

    return split(val), split(test), cache.manifest_sha256
