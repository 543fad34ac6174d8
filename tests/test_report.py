"""`trainer report`: metrics equal scikit-learn's, bootstrap intervals, and reports of older run directories
(no scaling, label fraction, checks or subject ids) with their table, plots, JSON and refusals.

The current run.json contract is tested in tests/test_report_contract.py."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from sklearn.metrics import average_precision_score, roc_auc_score

from trainer.bootstrap import bootstrap_metric, weighted_auroc, weighted_average_precision
from trainer.cli import main
from trainer.report import ReportError, build_report

LABELS = ["edema", "pleural_effusion", "cardiomegaly"]


@pytest.mark.parametrize("seed", range(6))
def test_vectorised_metrics_equal_sklearn_with_sample_weights(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(20, 200))
    y = rng.integers(0, 2, n)
    scores = np.round(rng.normal(size=n) + 0.8 * y, 1)  # rounding makes ties
    weights = rng.multinomial(n, np.full(n, 1 / n), size=5).astype(float)
    auroc, ap = weighted_auroc(scores, y, weights), weighted_average_precision(scores, y, weights)
    for b in range(5):
        assert auroc[b] == pytest.approx(roc_auc_score(y, scores, sample_weight=weights[b]), abs=1e-12)
        assert ap[b] == pytest.approx(average_precision_score(y, scores, sample_weight=weights[b]), abs=1e-12)
    ones = np.ones((1, n))
    assert weighted_auroc(scores, y, ones)[0] == pytest.approx(roc_auc_score(y, scores), abs=1e-12)


def test_undefined_replicates_are_nan():
    y = np.array([1, 0, 0, 0])
    w = np.array([[0.0, 2, 1, 1], [1, 1, 1, 1]])
    auroc = weighted_auroc(np.array([0.9, 0.1, 0.2, 0.3]), y, w)
    assert np.isnan(auroc[0]) and auroc[1] == 1.0
    assert np.isnan(weighted_average_precision(np.array([0.9, 0.1, 0.2, 0.3]), y, w)[0])


def test_bootstrap_interval_brackets_the_estimate_and_shrinks_with_n():
    rng = np.random.default_rng(0)
    widths = []
    for n in (100, 1600):
        y = rng.integers(0, 2, n)
        probs = np.stack([rng.normal(size=n) + y for _ in range(3)])
        ci = bootstrap_metric("auroc", probs, y, replicates=400, ci=0.95)
        mean = np.mean([roc_auc_score(y, p) for p in probs])
        assert ci["low"] < mean < ci["high"] and ci["undefined"] == 0
        widths.append(ci["high"] - ci["low"])
    assert widths[1] < widths[0] / 2  # about 1/sqrt(16)


def test_rare_class_counts_undefined_replicates():
    y = np.zeros(50, dtype=int)
    y[0] = 1
    ci = bootstrap_metric("auroc", np.random.default_rng(1).normal(size=(1, 50)), y, replicates=300, ci=0.95)
    assert ci["undefined"] > 50  # about (49/50)^50 = 36 % of resamples hold no positive


def write_run(run_dir: Path, seeds: list[int], *, targets: np.ndarray, quality: dict[str, float],
              manifest: str = "abc", rng: np.random.Generator) -> None:
    """A finished run directory as `trainer run` wrote it before scalings, fractions, checks and subject ids."""
    models = []
    for seed in seeds:
        for method, q in quality.items():
            protocols = ["multilabel", "binary"] if method != "cxr" else ["multilabel"]
            for protocol in protocols:
                targets_list = [None] if protocol == "multilabel" else LABELS
                for target in targets_list:
                    cols = list(range(3)) if target is None else [LABELS.index(target)]
                    t = targets[:, cols]
                    logits = q * (2 * t - 1) + rng.normal(size=t.shape)
                    model_id = f"{method}-{protocol}" + (f"-{target}" if target else "")
                    path = run_dir / f"seed_{seed}" / "predictions" / f"{model_id}.npz"
                    path.parent.mkdir(parents=True, exist_ok=True)
                    np.savez(path, labels=np.array([LABELS[c] for c in cols]), test_logits=logits.astype(np.float32),
                             test_targets=t.astype(np.float32), val_logits=logits[:5], val_targets=t[:5])
                    models.append({"model_id": model_id, "method": method, "protocol": protocol, "target": target,
                                   "seed": seed, "checkpoint": "x.pt",
                                   "predictions": str(path.relative_to(run_dir))})
    with open(run_dir / "metrics.jsonl", "w") as f:
        for seed in seeds:
            for epoch in range(3):
                for stage in ("pretrain", "cxr", "align-cromotex", "finetune-cromotex-multilabel"):
                    f.write(json.dumps({"stage": f"seed{seed}/{stage}", "split": "val", "epoch": epoch,
                                        "score": 0.5 + 0.1 * epoch, "train_loss": 1.0 - 0.1 * epoch}) + "\n")
    (run_dir / "run.json").write_text(json.dumps({"name": "t", "labels": LABELS, "cohort_manifest_sha256": manifest,
                                                  "seeds": seeds, "seconds": 1.0, "device": "cpu", "models": models}))


@pytest.fixture
def runs(tmp_path):
    rng = np.random.default_rng(0)
    targets = (rng.random((120, 3)) < 0.3).astype(float)
    quality = {"supervised": 0.5, "cromotex": 1.0, "cxr": 2.5}
    write_run(tmp_path / "a", [0, 1], targets=targets, quality=quality, rng=rng)
    write_run(tmp_path / "b", [2], targets=targets, quality=quality, rng=rng)
    return tmp_path, targets


def test_old_format_report_over_two_run_dirs(runs):
    root, targets = runs
    out = root / "report"
    summary = build_report([root / "a", root / "b"], out, replicates=300)
    assert list(summary["models"]) == ["supervised/binary/minmax/1", "supervised/multilabel/minmax/1",
                                       "cromotex/binary/minmax/1", "cromotex/multilabel/minmax/1",
                                       "cxr/multilabel/minmax/1"]
    assert summary["bootstrap_level"] == "pair" and summary["primary_scaling"] == "minmax"
    assert summary["low_label"] is None and summary["comparisons"]["floor"] == []
    entry = summary["models"]["cromotex/multilabel/minmax/1"]
    assert entry["scaling"] == "minmax" and entry["label_fraction"] == 1.0 and entry["checks"]["checked"] == 0
    assert len(entry["seeds"]) == 3
    for k, label in enumerate(LABELS):
        row = entry["labels"][label]
        assert row["n"] == 120 and row["positives"] == int(targets[:, k].sum())
        # per-seed numbers are scikit-learn's on the stored predictions
        with np.load(root / "a" / "seed_0" / "predictions" / "cromotex-multilabel.npz") as z:
            probs = 1 / (1 + np.exp(-z["test_logits"][:, k]))
        assert row["auroc"]["per_seed"][0] == pytest.approx(roc_auc_score(targets[:, k], probs))
        assert row["ap"]["per_seed"][0] == pytest.approx(average_precision_score(targets[:, k], probs))
        assert row["auroc"]["mean"] == pytest.approx(np.mean(row["auroc"]["per_seed"]))
        assert row["auroc"]["ci"]["low"] <= row["auroc"]["mean"] <= row["auroc"]["ci"]["high"]
    assert summary["models"]["cxr/multilabel/minmax/1"]["labels"]["edema"]["auroc"]["mean"] > \
        summary["models"]["supervised/multilabel/minmax/1"]["labels"]["edema"]["auroc"]["mean"]
    md = (out / "report.md").read_text()
    assert "| CXR-only classifier (reference) | multilabel | 3 | not recorded |" in md
    assert "## Average precision, minmax scaling" in md and "pair-level bootstrap" in md
    assert "no subject ids (older run)" in md and "no learning checks recorded (older run)" in md
    assert "No Crude ECG features + logistic regression (floor) in these runs" in md
    # the full method against the supervised baseline, per protocol
    full = {(r["protocol"], r["against_method"]) for r in summary["comparisons"]["full_method"]}
    assert full == {("binary", "supervised"), ("multilabel", "supervised")}
    assert json.loads((out / "report.json").read_text()) == json.loads(json.dumps(summary))
    for name in ("roc.png", "pr.png", "curves.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (out / "low_label.png").exists()


def test_report_command_prints_the_table(runs):
    root, _ = runs
    result = CliRunner().invoke(main, ["report", str(root / "a"), "--bootstrap", "200"])
    assert result.exit_code == 0, result.output
    assert "## AUROC" in result.output and "ECG full method (CroMoTEX)" in result.output
    assert (root / "a" / "report" / "report.md").is_file()


def test_runs_on_other_caches_are_not_mixed(runs):
    root, targets = runs
    write_run(root / "c", [5], targets=targets, quality={"cromotex": 1.0}, manifest="other",
              rng=np.random.default_rng(1))
    with pytest.raises(ReportError, match="different caches"):
        build_report([root / "a", root / "c"], root / "r", replicates=200)


def test_seeds_tested_on_other_samples_are_refused(runs):
    root, targets = runs
    flipped = targets.copy()
    flipped[0] = 1 - flipped[0]
    write_run(root / "d", [7], targets=flipped, quality={"cromotex": 1.0}, rng=np.random.default_rng(2))
    with pytest.raises(ReportError, match="tested on other samples"):
        build_report([root / "a", root / "d"], root / "r", replicates=200)


def test_unfinished_run_dir_is_refused(tmp_path):
    result = CliRunner().invoke(main, ["report", str(tmp_path)])
    assert result.exit_code == 1 and "no run.json" in result.output and "trainer run" in result.output
