"""Learning and collapse checks (trainer.checks): the measures, the flags, and a run that cannot learn."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from tests.trainer_fixtures import tiny_config, write_tiny_cache
from trainer.checks import CheckConfig, assess, base_rate_loss, embedding_spread, linear_probe
from trainer.cli import main

CFG = CheckConfig()
LABELS = ("edema", "pleural_effusion", "cardiomegaly")


# --- the measures ------------------------------------------------------------------------------------

def test_identical_embeddings_are_collapsed():
    z = np.tile(np.random.default_rng(0).normal(size=(1, 32)), (50, 1))
    spread = embedding_spread(z)
    assert spread["spread_cos"] == pytest.approx(1.0, abs=1e-9) and spread["eff_rank"] == pytest.approx(1.0)


def test_embeddings_along_one_direction_have_rank_one():
    rng = np.random.default_rng(1)
    z = rng.uniform(0.5, 2.0, (60, 1)) * rng.normal(size=(1, 16))  # one direction, different lengths
    spread = embedding_spread(z)
    assert spread["spread_cos"] == pytest.approx(1.0) and spread["eff_rank"] == pytest.approx(1.0, abs=1e-6)


def test_random_gaussian_embeddings_are_spread():
    z = np.random.default_rng(2).normal(size=(500, 32))
    spread = embedding_spread(z)
    assert abs(spread["spread_cos"]) < 0.02 and spread["eff_rank"] > 28  # of at most 32


def test_mean_cosine_is_the_mean_over_distinct_pairs():
    z = np.random.default_rng(3).normal(size=(7, 5)) + 0.5
    unit = z / np.linalg.norm(z, axis=1, keepdims=True)
    cos = unit @ unit.T
    expected = (cos.sum() - np.trace(cos)) / (7 * 6)
    assert embedding_spread(z)["spread_cos"] == pytest.approx(expected)
    assert all(math.isnan(v) for v in embedding_spread(z[:1]).values())  # one sample: undefined, not 0 or 1


def test_linear_probe_separates_separable_labels_and_not_noise():
    rng = np.random.default_rng(4)

    def data(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = (rng.random((n, 3)) < 0.4).astype(np.float32)
        z = rng.normal(size=(n, 8))
        z[:, 0] += 3.0 * y[:, 0]  # edema is written along one axis, effusion along another
        z[:, 1] -= 3.0 * y[:, 1]
        return z, y  # cardiomegaly is written nowhere

    (tz, ty), (vz, vy) = data(300), data(200)
    auroc = linear_probe(tz, ty, vz, vy, LABELS)
    assert auroc["edema"] > 0.9 and auroc["pleural_effusion"] > 0.9
    assert 0.35 < auroc["cardiomegaly"] < 0.65
    vy[:, 2] = 0  # a label with one class in validation has no AUROC
    assert linear_probe(tz, ty, vz, vy, LABELS)["cardiomegaly"] is None


def test_base_rate_loss_is_the_bce_of_the_training_prevalence():
    train = np.array([[1, 0], [0, 0], [1, 0], [1, 1]], dtype=np.float32)  # prevalences 0.75, 0.25
    val = np.array([[1, 1], [0, 0]], dtype=np.float32)
    expected = np.mean([-np.log(0.75), -np.log(0.25), -np.log(0.25), -np.log(0.75)])
    assert base_rate_loss(train, val) == pytest.approx(expected)
    # on its own training labels it is the best constant prediction
    y = (np.random.default_rng(5).random((200, 3)) < 0.3).astype(np.float32)
    best = base_rate_loss(y, y)
    for shift in (-0.05, 0.05):
        p = y.mean(axis=0) + shift
        assert best < float(np.mean(-(y * np.log(p) + (1 - y) * np.log(1 - p))))


# --- the flags -----------------------------------------------------------------------------------------

def test_good_encoder_and_classifier_are_not_flagged():
    enc = assess("encoder", {"global_step": 0, "loss": 3.0}, {"global_step": 30, "loss": 2.0, "spread_cos": 0.4,
                                                             "eff_rank": 6.0}, CFG)
    assert enc["flags"] == [] and not (enc["collapsed"] or enc["base_rate"] or enc["no_learning"])
    assert enc["final"] == {"global_step": 30, "loss": 2.0, "spread_cos": 0.4, "eff_rank": 6.0}
    clf = assess("classifier", {"loss": 0.69}, {"loss": 0.55, "base_rate_loss": 0.68, "mean_auroc": 0.8,
                                               "logit_sd": 0.9}, CFG)
    assert clf["flags"] == [] and not (clf["collapsed"] or clf["base_rate"] or clf["no_learning"])


@pytest.mark.parametrize("cos, rank, reason", [(0.99, 6.0, "mean off-diagonal cosine 0.990 >= 0.95"),
                                               (0.30, 1.2, "effective rank 1.20 < 2")])
def test_collapsed_encoder_is_flagged(cos, rank, reason):
    out = assess("encoder", {"loss": 3.0}, {"loss": 2.0, "spread_cos": cos, "eff_rank": rank}, CFG)
    assert out["collapsed"] and not out["no_learning"] and out["flags"] == [f"collapsed ({reason})"]


def test_thresholds_come_from_the_config():
    kept = {"loss": 2.0, "spread_cos": 0.97, "eff_rank": 6.0}
    assert assess("encoder", None, kept, CFG)["collapsed"]
    assert not assess("encoder", None, kept, CheckConfig(collapse_cos=0.99))["collapsed"]
    clf = {"loss": 0.5, "base_rate_loss": 0.7, "mean_auroc": 0.55, "logit_sd": 0.04}
    assert assess("classifier", None, clf, CFG)["base_rate"]
    assert not assess("classifier", None, clf, CheckConfig(min_logit_sd=0.01))["base_rate"]
    # a narrow logit range on a model that ranks well is not the base rate (selection is on AUROC)
    assert not assess("classifier", None, {**clf, "mean_auroc": 0.92}, CFG)["base_rate"]


def test_classifier_learning_is_judged_on_auroc_not_loss():
    """Kept for AUROC 0.72 at a loss a hair above the start: it learnt (loss is not what selects it)."""
    out = assess("classifier", {"loss": 0.7078, "mean_auroc": 0.52},
                 {"loss": 0.7082, "base_rate_loss": 0.69, "mean_auroc": 0.72, "logit_sd": 0.3}, CFG)
    assert not out["no_learning"] and out["flags"] == []
    same = assess("classifier", {"loss": 0.70, "mean_auroc": 0.61},
                  {"loss": 0.60, "base_rate_loss": 0.68, "mean_auroc": 0.615, "logit_sd": 0.3}, CFG)
    assert same["no_learning"] and "mean AUROC 0.615 vs 0.610" in same["flags"][0]


def test_classifier_with_constant_outputs_is_at_the_base_rate():
    out = assess("classifier", {"loss": 0.70}, {"loss": 0.60, "base_rate_loss": 0.68, "mean_auroc": 0.55,
                                               "logit_sd": 0.01}, CFG)
    assert out["base_rate"] and not out["no_learning"] and not out["collapsed"]
    assert out["flags"] == ["at the base rate (validation logits vary by SD 0.010 < 0.05: the same output for "
                            "every sample; mean AUROC 0.550)"]


def test_classifier_at_the_base_rate_loss_without_ranking_is_flagged():
    kept = {"loss": 0.675, "base_rate_loss": 0.68, "mean_auroc": 0.52, "logit_sd": 0.3}
    out = assess("classifier", {"loss": 0.75}, kept, CFG)
    assert out["base_rate"] and len(out["flags"]) == 1 and out["flags"][0].startswith("at the base rate (validation "
                                                                                    "loss 0.6750 not 2% below")
    # the same loss with a good ranking is a miscalibrated model kept early, not the base rate
    assert not assess("classifier", {"loss": 0.75}, {**kept, "mean_auroc": 0.77}, CFG)["base_rate"]
    # and a loss well below the base rate is not flagged whatever the AUROC
    assert not assess("classifier", {"loss": 0.75}, {**kept, "loss": 0.60}, CFG)["base_rate"]


def test_an_encoder_that_kept_its_starting_point_did_not_learn():
    start = {"global_step": 0, "loss": 0.69, "spread_cos": 0.5, "eff_rank": 5.0}
    out = assess("encoder", start, start, CFG)  # lr = 0: every evaluation equals the first, which is kept
    assert out["no_learning"] and out["flags"] == ["did not learn (validation loss 0.6900 vs 0.6900 before the "
                                                   "first step)"]
    barely = assess("encoder", start, {**start, "global_step": 9, "loss": 0.69 * 0.995}, CFG)  # < 1 % lower
    assert barely["no_learning"]
    assert not assess("encoder", start, {**start, "global_step": 9, "loss": 0.69 * 0.98}, CFG)["no_learning"]


def test_a_classifier_that_kept_its_starting_point_did_not_learn():
    start = {"global_step": 0, "loss": 0.69, "base_rate_loss": 0.9, "mean_auroc": 0.8, "logit_sd": 0.5}
    out = assess("classifier", start, start, CFG)
    assert out["no_learning"] and out["flags"] == ["did not learn (validation mean AUROC 0.800 vs 0.800 before the "
                                                   "first step)"]
    assert assess("classifier", start, {**start, "global_step": 9, "mean_auroc": 0.805}, CFG)["no_learning"]
    assert not assess("classifier", start, {**start, "global_step": 9, "mean_auroc": 0.82}, CFG)["no_learning"]
    # a stage resumed past its first evaluation has nothing to compare with: no flag rather than a guess
    assert not assess("classifier", None, start, CFG)["no_learning"]


# --- end to end: a run with lr = 0 -------------------------------------------------------------------

def run_cli(config: Path, cache: Path, out: Path) -> tuple[dict, str]:
    result = CliRunner().invoke(main, ["run", "--config", str(config), "--cache", str(cache), "--out", str(out),
                                       "--no-progress"])
    assert result.exit_code == 0, result.output
    return json.loads((out / "run.json").read_text()), result.output  # output: stdout and stderr


def flagged_stages(doc: dict) -> set[str]:
    return {line.split(": ", 1)[0] for line in doc["check_flags"]}


@pytest.fixture(scope="module")
def frozen_run(tmp_path_factory):
    """Every stage with lr = 0: nothing can learn, so the checks must say so."""
    root = tmp_path_factory.mktemp("lr0")
    cache = write_tiny_cache(root / "cache")
    config = tiny_config(root / "lr0.toml", methods=("cromotex",), steps=6, eval_every=3)
    text = config.read_text()
    assert text.count("lr = 1e-3") == 4  # pretrain, cxr, align, finetune
    config.write_text(text.replace("lr = 1e-3", "lr = 0"))
    doc, output = run_cli(config, cache, root / "run")
    return root, cache, doc, output


def test_lr_zero_run_flags_the_encoders_and_the_classifier(frozen_run):
    _, _, doc, _ = frozen_run
    flags = doc["check_flags"]

    def of(stage: str) -> list[str]:
        return [f.split(": ", 1)[1] for f in flags if f.startswith(f"seed0/{stage}: ")]

    for encoder in ("pretrain", "align-cromotex"):
        assert any(f.startswith(("collapsed", "did not learn")) for f in of(encoder)), (encoder, flags)
    assert any(f.startswith(("at the base rate", "did not learn")) for f in of("finetune-cromotex-multilabel")), flags
    # nothing moved, so each of these kept the evaluation before its first step and says it did not learn
    for stage in ("pretrain", "align-cromotex", "finetune-cromotex-multilabel"):
        summary = doc["stages"][f"seed0/{stage}"]
        assert summary["best_step"] == 0 and summary["checks"]["no_learning"], stage
    model = next(m for m in doc["models"] if m["model_id"] == "cromotex-multilabel")
    assert model["checks"]["flags"] and model["checks"] == doc["stages"]["seed0/finetune-cromotex-multilabel"]["checks"]


def test_lr_zero_run_prints_the_warning_block(frozen_run):
    _, _, doc, output = frozen_run
    stages = flagged_stages(doc)
    assert len(stages) >= 3
    assert f"WARNING: {len(stages)} stage(s) did not learn as they should" in output  # stages, not flags
    for line in doc["check_flags"]:
        assert f"  {line}" in output
    assert "learning checks: no stage collapsed" not in output


def test_a_run_that_learns_flags_fewer_stages(frozen_run):
    """The same tiny run with lr 1e-3 and 4x the steps: not necessarily clean (the cache is tiny), but cleaner."""
    root, cache, frozen, _ = frozen_run
    config = tiny_config(root / "learns.toml", methods=("cromotex",), steps=24, eval_every=6)
    doc, output = run_cli(config, cache, root / "learns")
    assert len(flagged_stages(doc)) < len(flagged_stages(frozen))
    assert len(doc["check_flags"]) < len(frozen["check_flags"])
    if not doc["check_flags"]:
        assert "learning checks: no stage collapsed" in output
    learnt = [t for t, s in doc["stages"].items() if not s["checks"]["no_learning"]]
    assert len(learnt) > len([t for t, s in frozen["stages"].items() if not s["checks"]["no_learning"]])
