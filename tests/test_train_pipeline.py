"""`trainer run` end to end on a tiny cache: run.json, the classifier contract, resume, refusals, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from bedside.preprocess import scale_minmax
from tests.trainer_fixtures import tiny_config, write_tiny_cache
from trainer import checkpoint as ckpt
from trainer.cache import CohortCache
from trainer.cli import LAZY_COMMANDS, main
from trainer.ecg_model import ProbabilityModel, classifier_from_checkpoint

CONTRACT_KEYS = {"kind", "version", "encoder_config", "head_config", "state_dict", "labels", "recipe", "cache_dir",
                 "cohort_manifest_sha256", "config", "config_sha256", "method", "seed", "metrics"}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline")
    cache = write_tiny_cache(root / "cache", {"train": 32, "val": 12, "test": 12})
    config = tiny_config(root / "tiny.toml", methods=("cromotex",), protocols=("multilabel", "binary"), seeds=(0, 1))
    result = CliRunner().invoke(main, ["run", "--config", str(config), "--cache", str(cache), "--out",
                                       str(root / "run"), "--no-progress"])
    assert result.exit_code == 0, result.output
    return root, cache, config, root / "run", result.output


def test_run_json_names_the_deployable_classifier(finished_run):
    root, cache, config, run_dir, output = finished_run
    doc = json.loads((run_dir / "run.json").read_text())
    assert (run_dir / doc["classifier"]).is_file()
    assert doc["deploy"]["method"] == "cromotex" and doc["deploy"]["seed"] in (0, 1)
    chosen = [m for m in doc["models"] if m["checkpoint"] == doc["classifier"]][0]
    others = [m for m in doc["models"] if m["method"] == "cromotex" and m["protocol"] == "multilabel"]
    assert chosen["val"]["mean_auroc"] == max(m["val"]["mean_auroc"] for m in others)  # chosen on validation
    # 2 seeds x (1 multi-label + 3 binary models + the CXR reference)
    assert len(doc["models"]) == 2 * (4 + 1)
    assert doc["config_sha256"] == ckpt.sha256_file(config) == ckpt.sha256_file(run_dir / "config.toml")
    assert doc["cohort_manifest_sha256"] == CohortCache(cache).manifest_sha256
    assert "deployable classifier" in output and str(run_dir / doc["classifier"]) in output
    # one deployed scaling (the default's), full labels only; every model says which
    assert doc["scalings"] == [doc["primary_scaling"]] == ["minmax"] and doc["label_fractions"] == [1.0]
    assert all(m["scaling"] == "minmax" for m in doc["models"] if m["method"] != "cxr")
    assert all(m["label_fraction"] == 1.0 and set(m["checks"]) >= {"flags", "collapsed", "base_rate", "no_learning"}
               for m in doc["models"])


def test_stage_summaries_are_in_steps_with_their_checks(finished_run):
    root, cache, config, run_dir, output = finished_run
    doc = json.loads((run_dir / "run.json").read_text())
    # 2 seeds x (pretrain, cxr, align multi-label + 3 binary, fine-tune multi-label + 3 binary)
    assert len(doc["stages"]) == 2 * 10
    for tag, s in doc["stages"].items():
        assert s["steps"] == 6 and s["epochs"] == pytest.approx(6 / 2) and s["stopped_early"] is False, tag
        assert s["best_step"] in (0, 3, 6) and s["resumed_from"] is None, tag  # an evaluated step
        assert s["checks"]["final"]["global_step"] == s["best_step"], tag  # checks of the kept evaluation
        written = json.loads((run_dir / f"seed_{s['seed']}" / "checkpoints" / f"{s['stage']}.json").read_text())
        assert s == {k: v for k, v in written.items() if k != "metrics"}, tag
    encoders = [s for s in doc["stages"].values() if s["stage"] == "pretrain" or s["stage"].startswith("align")]
    assert encoders and all({"spread_cos", "eff_rank"} <= set(s["checks"]["final"]) for s in encoders)
    classifiers = [s for s in doc["stages"].values() if "model_id" in s]
    assert all({"base_rate_loss", "logit_sd"} <= set(s["checks"]["final"]) for s in classifiers)
    # run.json lists every flag of every stage, and the CLI shows them (or says there were none)
    flags = [f"{tag}: {f}" for tag, s in sorted(doc["stages"].items()) for f in s["checks"]["flags"]]
    assert doc["check_flags"] == flags
    if flags:
        flagged = {tag for tag, s in doc["stages"].items() if s["checks"]["flags"]}
        assert f"WARNING: {len(flagged)} stage(s) did not learn" in output and all(f in output for f in flags)
    else:
        assert "learning checks: no stage collapsed" in output


def test_classifier_checkpoint_follows_the_contract(finished_run):
    root, cache, config, run_dir, _ = finished_run
    doc = json.loads((run_dir / "run.json").read_text())
    saved = ckpt.load(run_dir / doc["classifier"])  # weights_only: tensors, numbers, strings only
    assert CONTRACT_KEYS <= set(saved)
    assert saved["kind"] == "cromotex-classifier" and saved["version"] == 1
    cohort = CohortCache(cache)
    assert saved["labels"] == list(cohort.labels) and saved["head_config"]["outputs"] == 3
    assert saved["recipe"] == cohort.recipe.to_dict() and saved["cache_dir"] == str(cache.resolve())
    assert saved["config_sha256"] == doc["config_sha256"] and saved["method"] == "cromotex"
    assert set(saved["metrics"]) == {"val", "test"} and set(saved["metrics"]["test"]["auroc"]) == set(cohort.labels)
    assert saved["val_outputs"]["logits"].shape == (len(cohort.split("val")), 3)
    model = classifier_from_checkpoint(saved).eval()
    x = torch.from_numpy(scale_minmax(np.array(cohort.split("test").ecg[:4])))
    with torch.no_grad():
        probs = ProbabilityModel(model)(x)
        assert torch.allclose(probs, torch.sigmoid(model(x)))
    assert probs.shape == (4, 3) and ((probs >= 0) & (probs <= 1)).all()


def test_test_predictions_cover_the_test_split_in_order(finished_run):
    root, cache, config, run_dir, _ = finished_run
    doc = json.loads((run_dir / "run.json").read_text())
    test = CohortCache(cache).split("test")
    binary = [m for m in doc["models"] if m["protocol"] == "binary"]
    assert {m["target"] for m in binary} == set(CohortCache(cache).labels)
    val = CohortCache(cache).split("val")
    for m in doc["models"]:
        with np.load(run_dir / m["predictions"]) as z:
            cols = [list(CohortCache(cache).labels).index(label) for label in z["labels"]]
            assert np.array_equal(z["test_targets"], np.asarray(test.labels)[:, cols])
            assert z["test_logits"].shape == z["test_targets"].shape and np.isfinite(z["test_logits"]).all()
            # subject ids per item, for subject-level statistics (two pairs per subject in the tiny cache)
            assert np.array_equal(z["test_groups"], test.subject_ids())
            assert np.array_equal(z["val_groups"], val.subject_ids()) and len(z["val_groups"]) == len(z["val_logits"])


def test_rerun_reuses_finished_stages(finished_run):
    root, cache, config, run_dir, _ = finished_run
    before = (run_dir / "run.json").read_text()
    stamps = {p: p.stat().st_mtime_ns for p in (run_dir / "seed_0" / "checkpoints").glob("*.pt")}
    result = CliRunner().invoke(main, ["run", "--config", str(config), "--cache", str(cache), "--out", str(run_dir),
                                       "--no-progress"])
    assert result.exit_code == 0, result.output
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps  # nothing retrained
    assert json.loads((run_dir / "run.json").read_text())["classifier"] == json.loads(before)["classifier"]


def test_another_config_in_the_same_run_dir_is_refused(finished_run, tmp_path):
    root, cache, config, run_dir, _ = finished_run
    other = tiny_config(tmp_path / "other.toml", steps=9)
    result = CliRunner().invoke(main, ["run", "--config", str(other), "--cache", str(cache), "--out", str(run_dir)])
    assert result.exit_code == 1 and "another configuration" in result.output and "new --out" in result.output


def test_stage_before_its_inputs_says_what_to_run(tmp_path):
    cache = write_tiny_cache(tmp_path / "cache", {"train": 16, "val": 4, "test": 4})
    config = tiny_config(tmp_path / "tiny.toml")
    result = CliRunner().invoke(main, ["stage", "align", "--config", str(config), "--cache", str(cache), "--out",
                                       str(tmp_path / "run"), "--no-progress"])
    assert result.exit_code == 1
    assert "needs stage 'pretrain'" in result.output and "trainer stage pretrain" in result.output


def test_bad_config_exits_nonzero_naming_the_key(tmp_path):
    cache = write_tiny_cache(tmp_path / "cache", {"train": 16, "val": 4, "test": 4})
    config = tmp_path / "bad.toml"
    config.write_text("[align]\nweighting = 'hardest'\n")
    result = CliRunner().invoke(main, ["run", "--config", str(config), "--cache", str(cache), "--out", str(tmp_path / "r")])
    assert result.exit_code == 1 and "[align] weighting='hardest' unknown" in result.output
    assert not (tmp_path / "r").exists()  # nothing half-made


def test_incomplete_cache_is_refused(tmp_path):
    cache = write_tiny_cache(tmp_path / "cache", {"train": 16, "val": 4, "test": 4})
    (cache / "manifest.json").unlink()
    result = CliRunner().invoke(main, ["run", "--config", str(tiny_config(tmp_path / "t.toml")), "--cache", str(cache),
                                       "--out", str(tmp_path / "r")])
    assert result.exit_code == 1 and "manifest.json: missing" in result.output and "trainer prepare" in result.output


def test_help_lists_every_command_and_survives_a_broken_module(monkeypatch):
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    for name in ("run", "stage", "report", "synth", "prepare", "export"):
        assert name in result.output
    monkeypatch.setitem(LAZY_COMMANDS, "export", "export.no_such_module:export_command")
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0 and "unavailable" in result.output and "run" in result.output
    result = CliRunner().invoke(main, ["export", "RUN", "--out", "x.onnx"])
    assert result.exit_code == 1 and "export.no_such_module" in result.output and "pip install" in result.output


@pytest.mark.slow
def test_synthetic_cohort_to_deployable_classifier(tmp_path):
    """The real path: trainer.synth cohort -> trainer.prepare cache -> trainer run -> run.json."""
    from trainer.prepare import prepare_cohort
    from trainer.synth import write_cohort

    write_cohort(tmp_path / "mimic", subjects=30, seed=1)
    prepare_cohort(tmp_path / "mimic", tmp_path / "cache", progress=False, workers=1)
    cohort = CohortCache(tmp_path / "cache")
    n_train = len(cohort.split("train"))
    assert n_train >= 16, f"30 synthetic subjects gave only {n_train} training pairs"
    config = tiny_config(tmp_path / "tiny.toml")
    result = CliRunner().invoke(main, ["run", "--config", str(config), "--cache", str(tmp_path / "cache"), "--out",
                                       str(tmp_path / "run"), "--no-progress"])
    assert result.exit_code == 0, result.output
    doc = json.loads((tmp_path / "run" / "run.json").read_text())
    saved = ckpt.load(tmp_path / "run" / doc["classifier"])
    assert saved["cohort_manifest_sha256"] == cohort.manifest_sha256 and saved["labels"] == list(cohort.labels)
    assert Path(saved["cache_dir"]) == (tmp_path / "cache").resolve()
