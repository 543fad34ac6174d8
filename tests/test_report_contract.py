"""`trainer report` on run directories of the current contract (scalings, label fractions, learning
checks, subject ids): subject-level intervals, paired differences, the feature floor, warnings,
the low-label section. Runs are fabricated (run.json, predictions, metrics.jsonl); nothing trains."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from trainer.bootstrap import bootstrap_metric, paired_difference
from trainer.report import build_report
from trainer.report_data import GroupKey, read_runs
from trainer.report_markdown import _floor, checks_cell
from trainer.report_plots import _flag, _stage_kind, _stage_method
from trainer.report_stats import Replicates

LABELS = ["edema", "pleural_effusion", "cardiomegaly"]
ECG = ("features", "supervised", "ssl", "clip", "supcon", "cromotex")


def fabricated_subjects(n_subjects: int, pairs: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Subject id per test pair (pairs of a subject adjacent, ids not 0..S-1) and targets shared per subject."""
    subjects = np.repeat(rng.choice(10 * n_subjects, n_subjects, replace=False), pairs).astype(np.int64)
    _, inverse = np.unique(subjects, return_inverse=True)
    y_subject = rng.random((n_subjects, len(LABELS))) < 0.35
    y_subject[:2] = [True, False, True], [False, True, False]  # every label has both classes
    return subjects, y_subject[inverse].astype(np.float32)


def fabricate(run_dir: Path, quality: dict[str, float], *, seeds: tuple[int, ...] = (0, 1, 2),
              scalings: tuple[str, ...] = ("fixed_mv",), fractions: tuple[float, ...] = (1.0,),
              binary: bool = False, n_subjects: int = 80, pairs: int = 3, subject_sd: float = 1.0,
              pair_sd: float = 0.3, same_as: dict[str, str] | None = None, subject_ids: bool = True,
              check_flags: tuple[str, ...] = (), flagged_models: dict[tuple[str, int], str] | None = None,
              seed: int = 0) -> dict[str, Any]:
    """A finished run directory of the current contract; returns its run.json document.

    Logits: ``quality * (2y - 1)`` (ECG methods scaled down at low label fractions), plus noise shared
    by a subject's pairs (``subject_sd``) and per pair (``pair_sd``). ``same_as`` {method: other}
    copies another method's logits exactly; ``flagged_models`` {(method, seed): flag} fails checks.
    """
    rng = np.random.default_rng(seed)
    subjects, targets = fabricated_subjects(n_subjects, pairs, rng)
    _, inverse = np.unique(subjects, return_inverse=True)
    same_as, flagged_models = same_as or {}, flagged_models or {}
    logits_of: dict[tuple, np.ndarray] = {}
    models, stages = [], {}
    for s in seeds:
        for method in [m for m in quality if m not in same_as] + list(same_as):
            for scaling in scalings if method != "cxr" else scalings[:1]:
                for fraction in fractions if method != "cxr" else (1.0,):
                    for protocol, target in [("multilabel", None)] + (
                            [("binary", t) for t in LABELS] if binary and method != "cxr" else []):
                        cols = list(range(3)) if target is None else [LABELS.index(target)]
                        where = (protocol, target, scaling, fraction, s)
                        if method in same_as:
                            logits = logits_of[(same_as[method], *where)]
                        else:
                            q = quality[method] * (fraction ** 0.3 if method != "cxr" else 1.0)
                            noise = subject_sd * rng.normal(size=(n_subjects, 3))[inverse] + \
                                pair_sd * rng.normal(size=targets.shape)
                            logits = (q * (2 * targets - 1) + noise)[:, cols].astype(np.float32)
                        logits_of[(method, *where)] = logits
                        model_id = f"{method}-{protocol}" + (f"-{target}" if target else "") + \
                            f"-{scaling}-f{fraction:g}"
                        path = run_dir / f"seed_{s}" / "predictions" / f"{model_id}.npz"
                        path.parent.mkdir(parents=True, exist_ok=True)
                        arrays = dict(labels=np.array([LABELS[c] for c in cols]), test_logits=logits,
                                      test_targets=targets[:, cols], val_logits=logits[:9],
                                      val_targets=targets[:9, cols])
                        if subject_ids:
                            arrays.update(test_groups=subjects, val_groups=subjects[:9])
                        np.savez(path, **arrays)
                        flag = flagged_models.get((method, s))
                        models.append({"model_id": model_id, "method": method, "protocol": protocol,
                                       "target": target, "seed": s, "scaling": scaling, "label_fraction": fraction,
                                       "checkpoint": None, "predictions": str(path.relative_to(run_dir)),
                                       "val": {}, "test": {},
                                       "checks": {"collapsed": False, "base_rate": flag is not None,
                                                  "flags": [flag] if flag else []}})
        for stage in ("pretrain", "cxr", "align-cromotex", "finetune-cromotex-multilabel"):
            flagged = any(f.startswith(f"seed{s}/{stage}:") for f in check_flags)
            stages[f"seed{s}/{stage}"] = {"seconds": 1.0, "steps": 40, "checks": {
                "collapsed": flagged, "base_rate": False, "flags": [f for f in check_flags
                                                                    if f.startswith(f"seed{s}/{stage}:")],
                "final": {}}}
    with open(run_dir / "metrics.jsonl", "w") as f:
        for tag in stages:
            encoder = "pretrain" in tag or "align" in tag
            for e in range(4):
                row = {"stage": tag, "split": "val", "global_step": 10 * (e + 1), "epoch": e + 1.0,
                       "score": 0.5 + 0.05 * e, "train_loss": 1.0 - 0.1 * e, "loss": 0.9 - 0.05 * e}
                if encoder:
                    row.update(spread_cos=0.3, eff_rank=8.0 - e, probe_mean_auroc=0.6 + 0.02 * e,
                               probe_auroc={lb: 0.6 for lb in LABELS}, collapsed=False)
                else:
                    row.update(base_rate_loss=0.62, at_base_rate=False)
                f.write(json.dumps(row) + "\n")
            f.write(json.dumps({"stage": tag, "split": "train", "global_step": 3, "loss": 1.2}) + "\n")
    doc = {"format": 1, "name": "fabricated", "labels": LABELS, "seeds": list(seeds),
           "cohort_manifest_sha256": "abc", "seconds": 1.0, "device": "cpu", "primary_scaling": scalings[0],
           "label_fractions": list(fractions), "check_flags": list(check_flags), "stages": stages,
           "deploy": {}, "classifier": None, "models": models}
    (run_dir / "run.json").write_text(json.dumps(doc))
    return doc


def _width(ci: dict[str, Any]) -> float:
    return ci["high"] - ci["low"]


def test_subject_level_intervals_are_wider_than_pair_level_ones(tmp_path):
    quality = {"features": 0.4, "cromotex": 1.0}
    fabricate(tmp_path / "subj", quality, subject_sd=1.5, pair_sd=0.2, pairs=5)
    fabricate(tmp_path / "pairs", quality, subject_sd=1.5, pair_sd=0.2, pairs=5, subject_ids=False)
    by_subject = build_report([tmp_path / "subj"], tmp_path / "r1", replicates=400, plots=False)
    by_pair = build_report([tmp_path / "pairs"], tmp_path / "r2", replicates=400, plots=False)
    assert by_subject["bootstrap_level"] == "subject" and by_pair["bootstrap_level"] == "pair"
    key = "cromotex/multilabel/fixed_mv/1"
    for label in LABELS:
        a, b = by_subject["models"][key]["labels"][label], by_pair["models"][key]["labels"][label]
        assert a["auroc"]["mean"] == b["auroc"]["mean"]  # same predictions, only the resampling differs
        assert _width(a["auroc"]["ci"]) > 1.4 * _width(b["auroc"]["ci"])  # 5 correlated pairs per subject
        assert a["subjects"] == 80 and a["n"] == 400 and b["subjects"] is None
    md = (tmp_path / "r1" / "report.md").read_text()
    assert "400 pairs from 80 subjects" in md and "subject-level bootstrap" in md
    assert "pair-level bootstrap" in (tmp_path / "r2" / "report.md").read_text()


def test_interval_and_differences_are_the_bootstrap_modules(tmp_path):
    fabricate(tmp_path / "run", {"features": 0.4, "supervised": 0.6, "cromotex": 1.0}, n_subjects=40)
    runs = read_runs([tmp_path / "run"])
    reps = Replicates(runs.groups, runs.labels, runs.subjects, replicates=300, ci=0.9)
    a, b = GroupKey("cromotex", "multilabel", "fixed_mv", 1.0), GroupKey("features", "multilabel", "fixed_mv", 1.0)
    for k in range(3):
        ga, gb, y = runs.groups[a].probs[:, :, k], runs.groups[b].probs[:, :, k], runs.groups[a].targets[:, k]
        for metric in ("auroc", "ap"):
            ci = bootstrap_metric(metric, ga, y, replicates=300, ci=0.9, seed=k, groups=runs.subjects)
            assert reps.metric(a, k, metric)["ci"] == ci
            ref = paired_difference(metric, ga, gb, y, replicates=300, ci=0.9, groups=runs.subjects, seed=k)
            mine = reps.difference(a, b, k, metric)
            assert mine["diff"] == pytest.approx(ref["diff"], abs=1e-12)
            assert {n: mine[n] for n in ("low", "high", "undefined", "p_not_better")} == \
                {n: ref[n] for n in ("low", "high", "undefined", "p_not_better")}
        # (c) a model against itself: difference 0, an interval of zero width
        same = reps.difference(a, a, k, "auroc")
        assert same["diff"] == 0.0 and same["low"] == 0.0 and same["high"] == 0.0 and same["p_not_better"] == 1.0


def test_model_equal_to_the_floor_does_not_beat_it(tmp_path):
    fabricate(tmp_path / "run", {"features": 0.5, "cromotex": 3.0, "cxr": 3.0}, same_as={"supervised": "features"})
    summary = build_report([tmp_path / "run"], tmp_path / "r", replicates=300, plots=False)
    floor = {r["model"]: r for r in summary["comparisons"]["floor"]}
    same, better = floor["supervised/multilabel/fixed_mv/1"], floor["cromotex/multilabel/fixed_mv/1"]
    assert same["against"] == "features/multilabel/fixed_mv/1"
    assert "cxr/multilabel/fixed_mv/1" not in floor and "features/multilabel/fixed_mv/1" not in floor
    for label in LABELS:
        d = same["labels"][label]["auroc"]
        assert d["diff"] == 0.0 and d["low"] == 0.0 == d["high"] and same["beats_floor"][label] is False
        assert better["beats_floor"][label] is True and better["labels"][label]["auroc"]["low"] > 0.1
    md = (tmp_path / "r" / "report.md").read_text()
    verdicts = md.split("Verdicts", 1)[1].split("\n## ", 1)[0]
    for label in LABELS:
        assert f"- **{label}**: does not beat the feature floor:\n" \
               "  - fixed_mv, 100% labels: ECG supervised (scratch) (multilabel)\n" in verdicts
    assert "CroMoTEX" not in verdicts
    assert "## Full method against the other ECG methods" in md
    full = summary["comparisons"]["full_method"]
    assert [r["against_method"] for r in full] == ["supervised"]  # the floor is its own family


def test_flags_appear_in_warnings_tables_and_json(tmp_path):
    flag = "seed1/align-cromotex: collapsed (mean off-diagonal cosine 0.997 >= 0.95; effective rank 1.3 < 2.0)"
    model_flag = "at base rate (val loss 0.62 >= base-rate loss 0.61)"
    fabricate(tmp_path / "run", {"features": 0.5, "ssl": 1.0, "cromotex": 1.0}, check_flags=(flag,),
              flagged_models={("ssl", 2): model_flag})
    summary = build_report([tmp_path / "run"], tmp_path / "r", replicates=200)
    md = (tmp_path / "r" / "report.md").read_text()
    warnings = md.split("## Warnings", 1)[1].split("\n## ", 1)[0]
    assert flag in warnings and model_flag in warnings and "seed2/ssl-multilabel-fixed_mv-f1" in warnings
    assert md.index("## Warnings") < md.index("## AUROC")
    assert summary["warnings"]["check_flags"] == [flag]
    assert summary["warnings"]["model_flags"] == [f"run:seed2/ssl-multilabel-fixed_mv-f1: {model_flag}"]
    assert summary["warnings"]["model_flags_not_in_check_flags"] == summary["warnings"]["model_flags"]
    assert json.loads((tmp_path / "r" / "report.json").read_text())["warnings"]["check_flags"] == [flag]
    assert "| ECG SSL (3KG) + fine-tune | multilabel | 3 | base rate 1/3 |" in md
    assert "| ECG full method (CroMoTEX) | multilabel | 3 | OK |" in md
    assert (tmp_path / "r" / "curves.png").read_bytes()[:4] == b"\x89PNG"


def test_stage_flag_comes_from_run_json_checks_else_the_last_evaluation():
    assert _flag({"checks": {"collapsed": True, "base_rate": False}}, []) == "collapsed"
    assert _flag({"checks": {"collapsed": False, "base_rate": True}}, [{"collapsed": True}]) == "base rate"
    assert _flag(None, [{"at_base_rate": False}, {"at_base_rate": True}]) == "base rate"
    assert _flag(None, []) is None
    assert _stage_kind("seed0/finetune-cromotex-binary-edema@minmax") == "finetune"
    assert _stage_method("seed0/finetune-cromotex-binary-edema@minmax") == "cromotex"
    assert _stage_method("seed0/align-supcon@minmax") == "supcon" and _stage_method("seed1/pretrain") == "pretrain"
    assert checks_cell({}) == "not recorded"
    assert checks_cell({"checked": 3, "collapsed": ["a"], "base_rate": ["a", "b"], "flags": ["x"]}) == \
        "collapsed 1/3, base rate 2/3"


def test_low_label_section_and_figure(tmp_path):
    fractions = (0.05, 0.1, 0.25, 1.0)
    fabricate(tmp_path / "run", {"features": 0.5, "supervised": 1.0, "ssl": 1.0, "cromotex": 1.2, "cxr": 3.0},
              fractions=fractions, n_subjects=40, seeds=(0, 1))
    summary = build_report([tmp_path / "run"], tmp_path / "r", replicates=200)
    low = summary["low_label"]
    assert low["fractions"] == list(fractions) and low["scaling"] == "fixed_mv"
    assert set(low["series"]["cromotex/multilabel"]) == {"0.05", "0.1", "0.25", "1"}
    md = (tmp_path / "r" / "report.md").read_text()
    section = md.split("## Low-label fractions (fixed_mv scaling)", 1)[1]
    assert "| model | protocol | 5% | 10% | 25% | 100% |" in section
    for label in LABELS:
        assert f"### {label}" in section
    assert "| AUROC difference | protocol | 5% | 10% | 25% | 100% |" in section
    assert "| ECG full method (CroMoTEX) - ECG supervised (scratch) | multilabel |" in section
    assert "| ECG full method (CroMoTEX) - ECG SSL (3KG) + fine-tune | multilabel |" in section
    diffs = [r for r in summary["comparisons"]["full_method"] if r["against_method"] == "supervised"]
    assert sorted(r["label_fraction"] for r in diffs) == list(fractions)
    assert (tmp_path / "r" / "low_label.png").read_bytes()[:4] == b"\x89PNG"
    # the main tables stay at fraction 1.0
    main = md.split("## AUROC, fixed_mv scaling, all training labels", 1)[1].split("\n## ", 1)[0]
    assert main.count("| ECG full method (CroMoTEX) |") == 1


def test_one_fraction_omits_the_low_label_section(tmp_path):
    fabricate(tmp_path / "run", {"features": 0.5, "cromotex": 1.0}, n_subjects=30)
    out = tmp_path / "r"
    out.mkdir()
    (out / "low_label.png").write_bytes(b"stale")
    summary = build_report([tmp_path / "run"], out, replicates=200)
    assert summary["low_label"] is None and not (out / "low_label.png").exists()
    assert "Low-label" not in (out / "report.md").read_text()


def test_scaling_comparison_pairs_each_method_across_scalings(tmp_path):
    fabricate(tmp_path / "run", {"features": 0.5, "supervised": 1.0, "cromotex": 1.0, "cxr": 3.0},
              scalings=("fixed_mv", "minmax"), binary=True, n_subjects=40, seeds=(0, 1))
    summary = build_report([tmp_path / "run"], tmp_path / "r", replicates=200, plots=False)
    assert summary["scalings"] == ["fixed_mv", "minmax"]
    pairs = {(r["model"], r["against"]) for r in summary["comparisons"]["scaling"]}
    assert ("cromotex/binary/fixed_mv/1", "cromotex/binary/minmax/1") in pairs
    assert ("features/multilabel/fixed_mv/1", "features/multilabel/minmax/1") in pairs
    assert len(pairs) == 6  # 3 methods x 2 protocols; the CXR reference has one scaling
    md = (tmp_path / "r" / "report.md").read_text()
    assert md.index("## AUROC, fixed_mv scaling") < md.index("## AUROC, minmax scaling") < \
        md.index("## Scaling comparison")
    assert "| ECG full method (CroMoTEX) | binary | fixed_mv vs minmax |" in md
    # the binary models are compared with the binary floor of their scaling
    floor = {r["model"]: r["against"] for r in summary["comparisons"]["floor"]}
    assert floor["cromotex/binary/minmax/1"] == "features/binary/minmax/1"
    # the X-ray reference row appears in both scalings' tables
    assert md.count("| CXR-only classifier (reference) | multilabel |") == 4


def test_floor_verdicts_in_words():
    def row(method: str, beats: dict[str, bool | None]) -> dict[str, Any]:
        return {"model": f"{method}/multilabel/fixed_mv/1", "against": "features/multilabel/fixed_mv/1",
                "method": method, "protocol": "multilabel", "scaling": "fixed_mv", "label_fraction": 1.0,
                "labels": {}, "beats_floor": beats}

    summary = {"comparisons": {"floor": [row("ssl", {"edema": True, "cardiomegaly": None}),
                                         row("cromotex", {"edema": True, "cardiomegaly": True})]}}
    text = "\n".join(_floor(summary, ("edema", "pleural_effusion", "cardiomegaly")))
    assert "- **edema**: every ECG model beats the feature floor." in text
    assert "- **pleural_effusion**: no comparison (the test split holds a single class)." in text
    assert "- **cardiomegaly**: does not beat the feature floor:\n" \
           "  - fixed_mv, 100% labels: ECG SSL (3KG) + fine-tune (multilabel, interval undefined)" in text


def test_a_model_flag_already_in_check_flags_is_listed_once(tmp_path):
    model_flag = "at the base rate (validation loss 0.6200 not 2% below the base-rate loss 0.6210)"
    stage_line = f"seed1/finetune-ssl-multilabel-fixed_mv-f1: {model_flag}"
    fabricate(tmp_path / "run", {"features": 0.5, "ssl": 1.0}, n_subjects=30, check_flags=(stage_line,),
              flagged_models={("ssl", 1): model_flag})
    summary = build_report([tmp_path / "run"], tmp_path / "r", replicates=200, plots=False)
    assert summary["warnings"]["model_flags"] == [f"run:seed1/ssl-multilabel-fixed_mv-f1: {model_flag}"]
    assert summary["warnings"]["model_flags_not_in_check_flags"] == []
    md = (tmp_path / "r" / "report.md").read_text()
    assert md.count(model_flag) == 1 and stage_line in md
