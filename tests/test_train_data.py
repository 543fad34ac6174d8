"""Datasets over the cache and the epoch sampler: scaling, augmentation, determinism, sharding, resume."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from bedside.preprocess import DEFAULT_RECIPE, scale_fixed_mv, scale_minmax
from tests.trainer_fixtures import write_tiny_cache
from trainer.augment import Augment3KG
from trainer.cache import CohortCache
from trainer.data import CacheDataset, EpochSampler, eval_loader, train_loader


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> CohortCache:
    return CohortCache(write_tiny_cache(tmp_path_factory.mktemp("cache"), {"train": 20, "val": 6, "test": 6}))


def test_ecg_is_the_shared_scaling_of_the_cached_millivolts(cache):
    split = cache.split("train")
    ds = CacheDataset.from_split(split, fields=("ecg",))
    item = ds[3]
    assert item["ecg"].shape == (1, 12, 1000) and item["ecg"].dtype == torch.float32
    assert np.array_equal(item["ecg"][0].numpy(), scale_minmax(np.asarray(split.ecg[3])))
    assert np.array_equal(item["labels"].numpy(), split.labels[3])
    assert "cxr" not in item


def test_recipe_picks_the_scaling(cache):
    split = cache.split("train")
    fixed = CacheDataset.from_split(split, fields=("ecg",), recipe=replace(DEFAULT_RECIPE, scaling="fixed_mv",
                                                                           full_scale_mv=2.0))
    raw = np.asarray(split.ecg[3])
    assert np.array_equal(fixed[3]["ecg"][0].numpy(), scale_fixed_mv(raw, 2.0))
    assert not np.allclose(fixed[3]["ecg"][0].numpy(), scale_minmax(raw))  # the amplitude is kept, not stretched


def test_indices_keep_a_subset_of_the_split(cache):
    """The low-label protocol: item i is the split's item indices[i], its labels, X-ray and label columns too."""
    split = cache.split("train")
    rows = [7, 2, 11]
    ds = CacheDataset.from_split(split, fields=("ecg", "cxr"), indices=rows)
    full = CacheDataset.from_split(split, fields=("ecg", "cxr"))
    assert len(ds) == 3 and np.array_equal(ds.labels, np.asarray(split.labels)[rows])
    for i, row in enumerate(rows):
        a, b = ds[i], full[row]
        assert torch.equal(a["ecg"], b["ecg"]) and torch.equal(a["cxr"], b["cxr"]) and torch.equal(a["labels"], b["labels"])
    binary = CacheDataset.from_split(split, fields=("ecg",), indices=rows, label_columns=[1])
    assert np.array_equal(binary.labels, np.asarray(split.labels)[rows][:, [1]])
    augmented = CacheDataset.from_split(split, fields=("ecg",), indices=rows, augment=Augment3KG(), seed=2)
    assert augmented[(0, 1)]["ecg"].shape == (1, 12, 1000)


def test_cxr_in_torchxrayvision_range(cache):
    split = cache.split("val")
    item = CacheDataset.from_split(split, fields=("cxr",))[2]
    img = item["cxr"]
    assert img.shape == (1, 224, 224) and img.dtype == torch.float32
    raw = np.asarray(split.cxr[2], dtype=np.float64)
    assert np.allclose(img[0].numpy(), (raw / 255.0 * 2 - 1) * 1024, atol=1e-3)
    assert "ecg" not in item


def test_augmented_views_depend_on_seed_epoch_index_and_view(cache):
    split = cache.split("train")
    ds = CacheDataset.from_split(split, fields=("ecg",), augment=Augment3KG(), views=2, seed=5)
    a = ds[(0, 4)]["ecg"]
    assert a.shape == (2, 12, 1000)
    assert not torch.allclose(a[0], a[1])  # two different views
    assert torch.equal(a, ds[(0, 4)]["ecg"])  # repeatable
    assert not torch.allclose(a, ds[(1, 4)]["ecg"])  # a new epoch, new views
    other_seed = CacheDataset.from_split(split, fields=("ecg",), augment=Augment3KG(), views=2, seed=6)
    assert not torch.allclose(a, other_seed[(0, 4)]["ecg"])
    assert float(a.abs().max()) <= 1.0


def test_binary_target_keeps_one_label_column(cache):
    split = cache.split("train")
    ds = CacheDataset.from_split(split, fields=("ecg",), label_columns=[2])
    assert ds[0]["labels"].shape == (1,) and float(ds[0]["labels"][0]) == split.labels[0, 2]


def test_bad_arguments(cache):
    split = cache.split("train")
    with pytest.raises(ValueError, match="fields"):
        CacheDataset.from_split(split, fields=("eeg",))
    with pytest.raises(ValueError, match="views"):
        CacheDataset.from_split(split, fields=("ecg",), views=2)


def test_workers_read_the_same_items_as_the_main_process(cache):
    ds = CacheDataset.from_split(cache.split("train"), fields=("ecg", "cxr"), augment=Augment3KG(), seed=1)
    sampler = EpochSampler(len(ds), 4, seed=3)
    sampler.set_epoch(1)
    plain = list(train_loader(ds, sampler, workers=0))
    with_workers = list(train_loader(ds, sampler, workers=2))
    assert len(plain) == len(with_workers) == 5
    for a, b in zip(plain, with_workers):
        assert torch.equal(a["index"], b["index"]) and torch.equal(a["ecg"], b["ecg"]) and torch.equal(a["cxr"], b["cxr"])
    assert ds._maps and CacheDataset.__getstate__(ds)["_maps"] == {}  # open maps are never pickled to workers


def test_sampler_epochs_are_permutations_and_differ():
    s = EpochSampler(23, 5, seed=0)
    assert s.batches_per_epoch == 4 and s.dropped == 3
    s.set_epoch(0)
    e0 = [i for _, i in s]
    s.set_epoch(1)
    e1 = [i for _, i in s]
    assert len(e0) == len(set(e0)) == 20 and e0 != e1
    assert all(epoch == 1 for epoch, _ in s)


def test_sampler_resumes_mid_epoch():
    s = EpochSampler(40, 4, seed=2)
    s.set_epoch(3)
    full = list(s)
    s.set_epoch(3, start_batch=6)
    assert list(s) == full[24:] and len(s) == len(full) - 24


def test_shards_form_the_single_process_global_batches():
    """Two ranks of batch 4 see, step by step, the same samples as one process of batch 8."""
    single = EpochSampler(50, 8, seed=9)
    ranks = [EpochSampler(50, 4, seed=9, rank=r, world=2) for r in range(2)]
    for s in (single, *ranks):
        s.set_epoch(2)
    one = [i for _, i in single]
    r0, r1 = ([i for _, i in r] for r in ranks)
    assert single.batches_per_epoch == ranks[0].batches_per_epoch == 6
    for step in range(6):
        assert sorted(one[8 * step:8 * step + 8]) == sorted(r0[4 * step:4 * step + 4] + r1[4 * step:4 * step + 4])
    assert not set(r0) & set(r1)


def test_split_smaller_than_a_batch_is_refused():
    with pytest.raises(ValueError, match="fewer than one batch of 16"):
        EpochSampler(10, 16, seed=0)


def test_eval_loader_keeps_every_sample_in_order(cache):
    ds = CacheDataset.from_split(cache.split("test"), fields=("ecg",))
    idx = torch.cat([b["index"] for b in eval_loader(ds, 4, workers=0)])
    assert idx.tolist() == list(range(6))


def test_cache_file_paths_follow_the_split_folder(cache):
    ds = CacheDataset.from_split(cache.split("val"), fields=("ecg",))
    assert ds.ecg_path == Path(cache.root) / "val" / "ecg.npy"
