"""Validation and test windows for the exporter, read from the cohort cache the model was trained on.

The cache (``trainer.cache.CohortCache``) holds conditioned windows in mV, [N, 12, 1000] memory
mapped; the model input is ``bedside.preprocess.scale_minmax`` of them, applied batch by batch so a
large split is never loaded whole.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bedside.preprocess import scale_minmax


@dataclass
class Split:
    """One split: conditioned windows ``ecg`` [N, 12, 1000] mV and labels [N, K] in {0, 1}."""

    name: str
    ecg: np.ndarray
    labels: np.ndarray

    def __post_init__(self) -> None:
        if len(self.ecg) != len(self.labels):
            raise ValueError(f"{self.name}: {len(self.ecg)} windows but {len(self.labels)} label rows")

    def __len__(self) -> int:
        return len(self.ecg)

    def subset(self, max_windows: int | None) -> "Split":
        """At most ``max_windows`` windows, evenly spaced (deterministic); the split itself if None."""
        if max_windows is None or len(self) <= max_windows:
            return self
        idx = np.linspace(0, len(self) - 1, max_windows).round().astype(int)
        return Split(self.name, self.ecg[idx], self.labels[idx])

    def batches(self, batch: int) -> Iterator[np.ndarray]:
        """Model inputs (scaled to [-1, 1]) in batches of ``batch`` windows."""
        for i in range(0, len(self), batch):
            yield scale_minmax(np.asarray(self.ecg[i:i + batch], dtype=np.float32))

    def inputs(self, n: int) -> np.ndarray:
        """The first ``n`` model inputs [n, 12, 1000]."""
        return scale_minmax(np.asarray(self.ecg[:n], dtype=np.float32))


def predict(run: Callable[[np.ndarray], np.ndarray], split: Split, batch: int = 64,
            advance: Callable[[int], None] | None = None) -> np.ndarray:
    """Model outputs [N, K] over a split; ``advance(n)`` is called after each batch (progress)."""
    outs = []
    for x in split.batches(batch):
        outs.append(np.asarray(run(x), dtype=np.float32))
        if advance:
            advance(len(x))
    return np.concatenate(outs) if outs else np.zeros((0, split.labels.shape[1]), np.float32)


def open_cache(cache_dir: str | Path, labels: list[str]) -> tuple[Split, Split, str]:
    """(validation, test, manifest sha256) of a ``trainer prepare`` cache, label columns in ``labels`` order."""
    from export.onnx_export import ExportError
    from trainer.cache import CacheError, CohortCache

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
    return (Split("val", val.ecg, np.asarray(val.labels)[:, cols]),
            Split("test", test.ecg, np.asarray(test.labels)[:, cols]), cache.manifest_sha256)
