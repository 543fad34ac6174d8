"""Model variants of one run: the low-label protocol (``@f<fraction>``) and further input scalings (``@<scaling>``)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from click.testing import CliRunner

from tests.trainer_fixtures import tiny_config, write_tiny_cache
from trainer import checkpoint as ckpt
from trainer.cache import CohortCache
from trainer.cli import main
from trainer.config import load_config
from trainer.context import variant_suffix
from trainer.pipeline import make_context


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    """A run context over the tiny cache (48 training pairs, two per subject); nothing trained."""
    root = tmp_path_factory.mktemp("subsets")
    cache = write_tiny_cache(root / "cache")
    context = make_context(load_config(tiny_config(root / "tiny.toml")), cache, root / "run", progress=False)
    yield context
    context.tracker.close()


def test_variant_suffixes():
    assert variant_suffix("fixed_mv", "fixed_mv") == "" and variant_suffix("fixed_mv", "fixed_mv", 1.0) == ""
    assert variant_suffix("minmax", "fixed_mv") == "@minmax"
    assert variant_suffix("fixed_mv", "fixed_mv", 0.05) == "@f0.05"
    assert variant_suffix("minmax", "fixed_mv", 0.5) == "@minmax@f0.5"


def test_labelled_subsets_are_nested_whole_subjects_per_seed(ctx):
    groups = ctx.groups("train")
    subjects = np.unique(groups)
    assert len(subjects) == 24 and ctx.labelled_subset(0, 1.0) is None  # all labels: no subset
    for seed in (0, 1):
        previous: set[int] = set()
        for fraction in (0.05, 0.1, 0.25, 0.5, 0.9):
            rows = ctx.labelled_subset(seed, fraction)
            kept = set(groups[rows].tolist())
            assert len(kept) == max(1, math.ceil(fraction * len(subjects))), fraction
            assert set(rows.tolist()) == set(np.flatnonzero(np.isin(groups, list(kept))).tolist())  # whole subjects
            assert np.all(np.diff(rows) > 0)  # in split order
            assert previous <= kept  # nested: 5 % within 10 % within 25 % ...
            previous = kept
        assert np.array_equal(ctx.labelled_subset(seed, 0.25), ctx.labelled_subset(seed, 0.25))  # repeatable
    assert not np.array_equal(ctx.labelled_subset(0, 0.25), ctx.labelled_subset(1, 0.25))  # seeds differ


@pytest.fixture(scope="module")
def variant_run(tmp_path_factory):
    """One tiny run with two scalings (fixed_mv deployed) and label fractions [0.5, 1.0]; one epoch per stage."""
    root = tmp_path_factory.mktemp("variants")
    cache = write_tiny_cache(root / "cache")
    config = tiny_config(root / "tiny.toml", methods=("features", "cromotex"), steps=3, eval_every=3)
    text = config.read_text().replace('[run]\nname = "tiny"\n', '[run]\nname = "tiny"\nlabel_fractions = [0.5, 1.0]\n')
    text += '\n[preprocess]\nscalings = ["fixed_mv", "minmax"]\n'
    config.write_text(text)
    assert load_config(config).config.run.label_fractions == (0.5, 1.0)
    result = CliRunner().invoke(main, ["run", "--config", str(config), "--cache", str(cache), "--out",
                                       str(root / "run"), "--no-progress"])
    assert result.exit_code == 0, result.output
    run_dir = root / "run"
    return cache, run_dir, json.loads((run_dir / "run.json").read_text())


def models_by_id(doc: dict) -> dict[str, dict]:
    return {m["model_id"]: m for m in doc["models"]}


def test_run_writes_each_variant_once(variant_run):
    _, run_dir, doc = variant_run
    assert doc["scalings"] == ["fixed_mv", "minmax"] and doc["primary_scaling"] == "fixed_mv"
    assert doc["label_fractions"] == [0.5, 1.0]
    # deployed scaling: every label fraction; the other scaling: full labels only; one CXR teacher
    assert set(models_by_id(doc)) == {"cxr-multilabel", "features-multilabel", "features-multilabel@f0.5",
                                      "features-multilabel@minmax", "cromotex-multilabel", "cromotex-multilabel@f0.5",
                                      "cromotex-multilabel@minmax"}
    # alignment uses every ECG-CXR pair whatever the label fraction: one per scaling
    stages = {tag.split("/", 1)[1] for tag in doc["stages"]}
    assert {s for s in stages if s.startswith(("pretrain", "align", "cxr"))} == {
        "pretrain", "pretrain@minmax", "cxr", "align-cromotex", "align-cromotex@minmax"}
    assert doc["deploy"]["checkpoint"] == "seed_0/checkpoints/finetune-cromotex-multilabel.pt"  # full labels, fixed_mv


def test_low_label_models_train_on_fewer_labelled_items(variant_run):
    cache, run_dir, doc = variant_run
    models = models_by_id(doc)
    for method in ("cromotex", "features"):
        low, full = models[f"{method}-multilabel@f0.5"], models[f"{method}-multilabel"]
        assert (low["label_fraction"], full["label_fraction"]) == (0.5, 1.0)
        assert low["scaling"] == full["scaling"] == "fixed_mv"
    stages = doc["stages"]
    n_train = len(CohortCache(cache).split("train"))
    assert stages["seed0/finetune-cromotex-multilabel"]["labelled_train_items"] == n_train
    # 12 of 24 subjects, two pairs each
    assert stages["seed0/finetune-cromotex-multilabel@f0.5"]["labelled_train_items"] == 24 < n_train
    assert stages["seed0/floor-features-multilabel@f0.5"]["labelled_train_items"] == 24
    saved = ckpt.load(run_dir / models["cromotex-multilabel@f0.5"]["checkpoint"])
    assert saved["recipe"]["scaling"] == "fixed_mv"
    # evaluated on the whole validation and test splits, like every model
    with np.load(run_dir / models["cromotex-multilabel@f0.5"]["predictions"]) as z:
        assert len(z["val_logits"]) == len(CohortCache(cache).split("val"))
        assert len(z["test_logits"]) == len(CohortCache(cache).split("test"))


def test_each_scaling_is_recorded_in_its_checkpoints(variant_run):
    _, run_dir, doc = variant_run
    models = models_by_id(doc)
    assert models["cromotex-multilabel"]["scaling"] == "fixed_mv"
    assert models["cromotex-multilabel@minmax"]["scaling"] == "minmax"
    assert models["cromotex-multilabel@minmax"]["label_fraction"] == 1.0
    deployed = ckpt.load(run_dir / models["cromotex-multilabel"]["checkpoint"])
    other = ckpt.load(run_dir / models["cromotex-multilabel@minmax"]["checkpoint"])
    assert deployed["recipe"]["scaling"] == "fixed_mv" and other["recipe"]["scaling"] == "minmax"
    assert deployed["recipe"]["full_scale_mv"] == 4.0
    assert {k: v for k, v in deployed["recipe"].items() if k != "scaling"} == {
        k: v for k, v in other["recipe"].items() if k != "scaling"}  # only the scaling differs
    checkpoints = run_dir / "seed_0" / "checkpoints"
    assert ckpt.load(checkpoints / "pretrain@minmax.pt")["scaling"] == "minmax"
    assert ckpt.load(checkpoints / "pretrain.pt")["scaling"] == "fixed_mv"
    assert ckpt.load(checkpoints / "align-cromotex@minmax.pt")["scaling"] == "minmax"
    # the two scalings trained two different encoders
    a = ckpt.load(checkpoints / "pretrain.pt")["state_dict"]
    b = ckpt.load(checkpoints / "pretrain@minmax.pt")["state_dict"]
    assert any(not np.array_equal(a[k].numpy(), b[k].numpy()) for k in a)
