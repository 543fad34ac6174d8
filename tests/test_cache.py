"""The cache reader: a complete cache reads back memory-mapped; anything incomplete is refused clearly."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from bedside.preprocess import DEFAULT_RECIPE
from trainer.cache import CacheError, CohortCache, write_json_atomic
from trainer.labels import LABELS
from trainer.prepare import prepare_cohort
from trainer.synth import write_cohort


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("cache")
    write_cohort(base / "cohort", 12, 2)
    prepare_cohort(base / "cohort", base / "cache", workers=1, progress=False)
    return base / "cache"


@pytest.fixture
def cache(built: Path, tmp_path: Path) -> Path:
    """A private copy each test may damage."""
    return Path(shutil.copytree(built, tmp_path / "cache"))


def test_complete_cache_reads_back_memory_mapped(built: Path) -> None:
    c = CohortCache(str(built))
    raw = (built / "manifest.json").read_bytes()
    assert c.manifest_sha256 == hashlib.sha256(raw).hexdigest()
    assert c.labels == LABELS and c.recipe == DEFAULT_RECIPE and c.root == built
    assert c.manifest["format"] == "cromotex-cache" and c.manifest["version"] == 1
    total = 0
    for name in ("train", "val", "test"):
        s = c.split(name)
        n = c.manifest["counts"][name]
        total += n
        assert len(s) == n and s.name == name and s.pairs_csv.is_file()
        assert s.ecg.shape == (n, 12, 1000) and s.ecg.dtype == np.float32
        assert s.cxr.shape == (n, 224, 224) and s.cxr.dtype == np.uint8
        assert s.labels.shape == (n, len(LABELS)) and set(np.unique(s.labels)) <= {0.0, 1.0}
        if n:
            assert isinstance(s.ecg, np.memmap) and not s.ecg.flags.writeable
            assert np.isfinite(s.ecg).all() and np.abs(s.ecg).max() < 20  # mV, not scaled to [-1, 1]
    assert total > 0
    with pytest.raises(CacheError, match="no split 'validation'"):
        c.split("validation")


def test_missing_manifest_is_refused_with_the_fix(cache: Path) -> None:
    (cache / "manifest.json").unlink()
    with pytest.raises(CacheError) as err:
        CohortCache(cache)
    assert str(cache / "manifest.json") in str(err.value) and "trainer prepare" in str(err.value)
    with pytest.raises(CacheError, match="no such cache folder"):
        CohortCache(cache / "nowhere")


def test_truncated_array_is_refused(cache: Path) -> None:
    path = cache / "train" / "ecg.npy"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 4000])
    with pytest.raises(CacheError, match="truncated") as err:
        CohortCache(cache)
    assert str(path) in str(err.value)
    path.write_bytes(data[:50])  # not even a whole .npy header
    with pytest.raises(CacheError, match="not a readable .npy"):
        CohortCache(cache)


def test_counts_that_disagree_with_the_arrays_are_refused(cache: Path) -> None:
    m = json.loads((cache / "manifest.json").read_text())
    m["counts"]["train"] += 1
    write_json_atomic(cache / "manifest.json", m)
    with pytest.raises(CacheError, match="manifest says"):
        CohortCache(cache)


def test_pairs_table_that_disagrees_is_refused(cache: Path) -> None:
    path = cache / "train" / "pairs.csv"
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:-1]))
    with pytest.raises(CacheError, match="rows, the manifest says"):
        CohortCache(cache)


def test_wrong_array_dtype_is_refused(cache: Path) -> None:
    labels = np.load(cache / "test" / "labels.npy")
    np.save(cache / "test" / "labels.npy", labels.astype(np.float64))
    with pytest.raises(CacheError, match="float64"):
        CohortCache(cache)


@pytest.mark.parametrize("change, message", [
    (lambda m: m.update(format="something-else"), "not a cromotex-cache manifest"),
    (lambda m: m.update(version=99), "version 99"),
    (lambda m: m.pop("recipe"), "lacks 'recipe'"),
    (lambda m: m["recipe"].update(scaling="zscore"), "recipe not usable"),
])
def test_foreign_or_future_manifests_are_refused(cache: Path, change, message: str) -> None:
    m = json.loads((cache / "manifest.json").read_text())
    change(m)
    write_json_atomic(cache / "manifest.json", m)
    with pytest.raises(CacheError, match=message):
        CohortCache(cache)


def test_corrupt_manifest_json_is_refused(cache: Path) -> None:
    (cache / "manifest.json").write_text('{"format": "cromotex-cache", "ver')
    with pytest.raises(CacheError, match="not valid JSON"):
        CohortCache(cache)


def test_empty_split_is_valid(cache: Path) -> None:
    m = json.loads((cache / "manifest.json").read_text())
    for name, shape, dtype in (("ecg", (0, 12, 1000), np.float32), ("cxr", (0, 224, 224), np.uint8),
                               ("labels", (0, len(LABELS)), np.float32)):
        np.save(cache / "val" / f"{name}.npy", np.zeros(shape, dtype))
    header = (cache / "val" / "pairs.csv").read_text().splitlines()[0]
    (cache / "val" / "pairs.csv").write_text(header + "\n")
    m["counts"]["val"] = 0
    write_json_atomic(cache / "manifest.json", m)
    assert len(CohortCache(cache).split("val")) == 0
