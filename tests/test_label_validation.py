"""Per-label deployability: a label whose validation AUROC is not credibly above chance never alarms.

Export side: subject ids from the cache, the ``label_validation`` block, the refusal when no label is
validated (and ``--allow-unvalidated``), the run's training checks. Bedside side: the bundle's
semantic checks, ``bedside verify``'s lines, no alarm machine for a not-validated label in a replay,
the greyed "not validated" risk on the monitor screen, and the replay summary.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from textual.app import App, ComposeResult

from bedside.alarm_config import load_alarm_config
from bedside.alarms import AlarmSystem
from bedside.bundle import METADATA_KEY, load_bundle, verify_bundle
from bedside.cli import main as bedside_main
from bedside.errors import BundleError
from bedside.events import AlarmChange, AlarmKind, WindowResult
from bedside.preprocess import DEFAULT_RECIPE, Recipe, scale_fixed_mv
from bedside.replay import ReplayOptions, build_replay_engine
from bedside.ui.app import engine_settings
from bedside.ui.monitor_state import MonitorState
from bedside.ui.risk_panel import RiskPanel
from bedside.verify import verify_command
from bundles import LABELS, fixture_signing_key, make_bundle
from export.bundle_writer import atomic_write, bundle_bytes
from export.cli import export_command
from export.data import Split, open_cache
from export.onnx_export import load_checkpoint
from export.pipeline import ExportSettings, run_export
from export.validation import UnvalidatedModel, label_validation, training_checks
from export_fixtures import model_scores, random_windows, tiny_checkpoint, write_cache
from tests.engine_helpers import synthetic_ecg, write_record

CPU = ("CPUExecutionProvider",)


def reseal(path, edit_meta):
    """Rewrite a bundle with edited metadata, re-signed by the trusted test key, with a valid checksum."""
    model = onnx.load(path)
    meta = json.loads({p.key: p.value for p in model.metadata_props}[METADATA_KEY])
    edit_meta(meta)
    atomic_write(path, bundle_bytes(model, meta, fixture_signing_key()))


def refused(path) -> BundleError:
    with pytest.raises(BundleError) as info:
        verify_bundle(path, CPU)
    return info.value


# -- export side ---------------------------------------------------------------------------------------
def twin_split(name: str, ecg: np.ndarray, y: np.ndarray, chance: list[int]) -> Split:
    """Every window twice, one subject per pair; for the label columns in ``chance`` one copy is positive
    and the other negative: positives and negatives score alike, so that AUROC is exactly 0.5."""
    labels = np.concatenate([y, y]).astype(np.float32)
    half = len(y)
    labels[:half, chance], labels[half:, chance] = 1.0, 0.0
    groups = np.concatenate([np.arange(half), np.arange(half)]) + 1000
    return Split(name, np.concatenate([ecg, ecg]), labels, groups)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "classifier.pt")


def splits_with(model, chance: list[int], n: int = 60) -> tuple[Split, Split]:
    ecg = random_windows(2 * n, seed=4)
    p = model_scores(model, ecg)
    y = (p > np.median(p, axis=0)).astype(np.float32)  # the model ranks these labels perfectly
    return twin_split("val", ecg[:n], y[:n], chance), twin_split("test", ecg[n:], y[n:], chance)


def test_label_validation_block_follows_the_rule_on_subjects():
    rng = np.random.default_rng(0)
    groups = np.arange(200) // 2  # 100 subjects of 2 windows
    # a: learned; b: each subject one positive and one negative window scored alike (AUROC 0.5); c: no positive
    y = np.stack([rng.integers(0, 2, 200), np.tile([1, 0], 100), np.zeros(200)], axis=1)
    raw = np.stack([y[:, 0] * 0.6 + rng.uniform(0, 0.5, 200), rng.uniform(0, 1, 100).repeat(2),
                    rng.uniform(0, 1, 200)], axis=1)
    block = label_validation(y, raw, groups, ["a", "b", "c"], replicates=200)
    assert (block["split"], block["unit"], block["ci"], block["replicates"]) == ("validation", "subject", 0.95, 200)
    a, b, c = (block["labels"][k] for k in "abc")
    assert a["validated"] and a["low"] > 0.5 and a["subjects"] == 100 and a["n"] == 200
    assert not b["validated"] and [b["low"], b["high"]] == pytest.approx([0.5, 0.5])
    assert "not credibly above chance" in b["reason"]
    assert not c["validated"] and c["auroc"] is None and c["low"] is None and "AUROC undefined" in c["reason"]


def test_split_scales_by_its_recipe_and_keeps_subjects_through_subset():
    ecg = random_windows(10) * 3
    fixed = Recipe(scaling="fixed_mv", full_scale_mv=2.0)
    s = Split("val", ecg, np.zeros((10, 3)), np.arange(10) // 2, fixed)
    np.testing.assert_array_equal(s.inputs(10), scale_fixed_mv(ecg, 2.0))
    sub = s.subset(5)
    assert sub.recipe == fixed and len(sub.groups) == 5 and sub.with_recipe(DEFAULT_RECIPE).recipe == DEFAULT_RECIPE
    with pytest.raises(ValueError, match="subject ids"):
        Split("val", ecg, np.zeros((10, 3)), np.arange(3))


def test_export_marks_the_unlearned_label_and_bootstraps_subjects(tiny, tmp_path):
    path, model = tiny
    val, test = splits_with(model, chance=[0])  # edema at chance, the others learned
    cache = tmp_path / "cache"
    write_cache(cache, val, test)
    val, test, _ = open_cache(cache, LABELS)
    np.testing.assert_array_equal(val.groups, np.r_[np.arange(60), np.arange(60)] + 1000)  # from pairs.csv
    said: list[str] = []
    out = tmp_path / "model.onnx"
    run_export(load_checkpoint(path), val, test, None, out, ExportSettings(bootstrap=200, signing_key=fixture_signing_key()), say=said.append)
    bundle = verify_bundle(out, CPU)
    lv = bundle.metadata["label_validation"]
    assert set(lv["labels"]) == set(LABELS) and lv["replicates"] == 200
    edema = lv["labels"]["edema"]
    assert not edema["validated"] and [edema["auroc"], edema["low"], edema["high"]] == pytest.approx([0.5] * 3)
    assert edema["subjects"] == 60 and edema["n"] == 120 and edema["positives"] == 60
    assert bundle.unvalidated_labels == ["edema"] and bundle.validated_labels == ["pleural_effusion", "cardiomegaly"]
    assert any(line.startswith("WARNING: labels not validated: edema") for line in said)
    m = bundle.metadata["test_metrics"]["cardiomegaly"]
    assert m["auroc_ci_unit"] == "subject" and m["subjects"] == 60
    assert "training_checks" not in bundle.metadata  # a checkpoint file, no run: nothing to copy


def make_run(tmp_path, val: Split, test: Split):
    """A run directory whose run.json records training checks for seeds 0 (deployed) and 1."""
    cache = tmp_path / "cache"
    sha = write_cache(cache, val, test)
    run = tmp_path / "run"
    tiny_checkpoint(run / "checkpoints" / "classifier.pt", manifest_sha256=sha, cache_dir=cache)
    checks = {"collapsed": True, "base_rate": False, "flags": ["embedding collapsed (feature std 1e-05)"]}
    stages = {"seed0/pretrain": {"seconds": 1.0, "checks": checks},
              "seed0/finetune/cromotex/multilabel": {"checks": {"collapsed": False, "base_rate": True,
                                                                "flags": ["predicts the base rate"]}},
              "seed1/pretrain": {"checks": {**checks, "flags": ["seed 1 only"]}}}
    (run / "run.json").write_text(json.dumps({"classifier": "checkpoints/classifier.pt", "stages": stages,
                                              "check_flags": ["seed0/pretrain: embedding collapsed"]}))
    (run / "config.toml").write_text("[run]\nname = 'test'\n")
    return run


def test_export_with_no_validated_label_is_refused_unless_allowed(tiny, tmp_path):
    _, model = tiny
    run = make_run(tmp_path, *splits_with(model, chance=[0, 1, 2]))
    out = tmp_path / "dist" / "model.onnx"
    res = CliRunner().invoke(export_command, [str(run), "--out", str(out), "--parity-windows", "16"])
    assert res.exit_code == 1, res.output
    text = " ".join(res.output.split())
    assert "export refused, no label is validated" in text
    for label in LABELS:
        assert f"{label} (val AUROC 0.500 [0.500, 0.500], 60 subjects" in text
    assert "bigger cohort" in text and "step budgets" in text and "--allow-unvalidated" in text
    assert not (tmp_path / "dist").exists() or not any((tmp_path / "dist").iterdir())

    res = CliRunner().invoke(export_command, [str(run), "--out", str(out), "--parity-windows", "16",
                                              "--allow-unvalidated"])
    assert res.exit_code == 0, res.output
    said = " ".join(res.output.split())
    assert "WARNING training check: seed0/pretrain: embedding collapsed (feature std 1e-05)" in said
    assert "seed 1 only" not in said and "NOT VALIDATED: edema" in said
    bundle = verify_bundle(out, CPU)
    assert bundle.validated_labels == [] and bundle.unvalidated_labels == LABELS
    checks = bundle.metadata["training_checks"]
    assert set(checks["stages"]) == {"seed0/pretrain", "seed0/finetune/cromotex/multilabel"}
    assert checks["stages"]["seed0/pretrain"] == {"collapsed": True, "base_rate": False,
                                                  "flags": ["embedding collapsed (feature std 1e-05)"]}
    assert checks["flags"] == ["seed0/finetune/cromotex/multilabel: predicts the base rate",
                               "seed0/pretrain: embedding collapsed (feature std 1e-05)"]
    report = json.loads((tmp_path / "dist" / "model.report.json").read_text())
    assert report["label_validation"] == bundle.metadata["label_validation"]
    res = CliRunner().invoke(verify_command, [str(out), "--provider", "cpu"])
    assert res.exit_code == 0, res.output
    assert "NOT VALIDATED (no alarms): edema (val AUROC 0.50 [0.50, 0.50])" in res.output
    assert "no label is validated" in res.output
    assert "training check: seed0/pretrain: embedding collapsed (feature std 1e-05)" in res.output


def test_run_export_raises_unvalidated_model(tiny, tmp_path):
    path, model = tiny
    val, test = splits_with(model, chance=[0, 1, 2], n=30)
    with pytest.raises(UnvalidatedModel, match="no label is validated"):
        run_export(load_checkpoint(path), val, test, None, tmp_path / "m.onnx", ExportSettings(bootstrap=100))
    assert not (tmp_path / "m.onnx").exists()


def test_training_checks_of_older_runs_are_absent(tmp_path):
    assert training_checks(None, 0) is None
    (tmp_path / "run.json").write_text(json.dumps({"classifier": "c.pt", "stages": {"seed0/pretrain": {}}}))
    assert training_checks(tmp_path, 0) is None


# -- bundle and verify -----------------------------------------------------------------------------------
@pytest.fixture
def half_validated(tmp_path):
    return make_bundle(tmp_path / "model.onnx", not_validated=["edema"])


def test_verify_lists_validated_and_not_validated_labels(half_validated):
    bundle = verify_bundle(half_validated, CPU)
    assert bundle.validated_labels == ["pleural_effusion", "cardiomegaly"] and bundle.unvalidated_labels == ["edema"]
    res = CliRunner().invoke(bedside_main, ["verify", str(half_validated), "--provider", "cpu"])
    assert res.exit_code == 0, res.output
    assert "validated: cardiomegaly (val AUROC 0.80 [0.70, 0.88])" in res.output
    assert "NOT VALIDATED (no alarms): edema (val AUROC 0.52 [0.44, 0.60])" in res.output
    assert "training check" not in res.output
    reseal(half_validated, edit_meta=lambda m: m.update(training_checks={
        "flags": ["seed0/pretrain: embedding collapsed"],
        "stages": {"seed0/pretrain": {"collapsed": True, "base_rate": False, "flags": ["embedding collapsed"]}}}))
    res = CliRunner().invoke(bedside_main, ["verify", str(half_validated), "--provider", "cpu"])
    assert res.exit_code == 0 and "training check: seed0/pretrain: embedding collapsed" in res.output


def _validated_with_low(m, low):
    m["label_validation"]["labels"]["edema"].update(validated=True, low=low)


@pytest.mark.parametrize("edit,where", [
    (lambda m: m.pop("label_validation"), "label_validation"),
    (lambda m: m["label_validation"]["labels"].pop("edema"), "label_validation/labels covers"),
    (lambda m: m["label_validation"]["labels"].update(ascites=m["label_validation"]["labels"]["edema"]),
     "label_validation/labels covers"),
    (lambda m: _validated_with_low(m, 0.5), "label_validation/labels/edema: validated is true but low=0.5"),
    (lambda m: _validated_with_low(m, None), "label_validation/labels/edema: validated is true but low=None"),
    (lambda m: m["label_validation"]["labels"]["edema"].pop("reason"), "label_validation/labels/edema"),
    (lambda m: m["label_validation"].update(unit="window"), "label_validation/unit"),
    (lambda m: m.update(training_checks={"flags": "collapsed", "stages": {}}), "training_checks/flags"),
])
def test_inconsistent_label_validation_is_refused(half_validated, edit, where):
    reseal(half_validated, edit_meta=edit)
    err = refused(half_validated)
    assert err.check == "schema" and where in str(err), str(err)


def test_alarm_system_has_no_machine_for_a_label_not_validated():
    system = AlarmSystem(load_alarm_config(), LABELS, {k: 0.5 for k in LABELS}, 5.0, validated=["cardiomegaly"])
    assert "cardiomegaly" in system.machines and "edema" not in system.machines
    high = {k: 0.99 for k in LABELS}
    changes = []
    for i in range(6):
        w = WindowResult(t_s=10.0 + 5 * i, index=i, scored=True, reason="", scores=high)
        changes += system.on_window(replace(w, smoothed=system.smooth(w)))
    assert {c.alarm for c in changes} == {"cardiomegaly"}
    with pytest.raises(ValueError, match="not among the labels"):
        AlarmSystem(load_alarm_config(), LABELS, {}, 5.0, validated=["ascites"])


# -- replay: risk logged, never alarmed ------------------------------------------------------------------
@pytest.fixture(scope="module")
def both_high(tmp_path_factory):
    """A bundle scoring edema and cardiomegaly ~0.998 on any input (threshold 0.5), edema not validated,
    and a 60 s record."""
    folder = tmp_path_factory.mktemp("nv")
    bias = np.array([6.0 if k in ("edema", "cardiomegaly") else -6.0 for k in LABELS], dtype=np.float32)
    bundle = make_bundle(folder / "b.onnx", weights=np.zeros((12 * 1000, len(LABELS)), np.float32), bias=bias,
                         not_validated=["edema"])
    return bundle, write_record(folder, "r", synthetic_ecg(60, 500.0, seed=7), 500.0)


def test_replay_logs_a_not_validated_risk_but_never_alarms_it(both_high, tmp_path):
    bundle, record = both_high
    db = tmp_path / "a.db"
    engine = build_replay_engine(ReplayOptions(record=str(record), model=str(bundle), db=str(db)))
    events: list[object] = []
    engine.subscribe(events.append)
    summary = engine.run()
    engine.close()
    changes = [e for e in events if isinstance(e, AlarmChange)]
    windows = [e for e in events if isinstance(e, WindowResult) and e.scored]
    assert windows and all(w.smoothed["edema"] > 0.99 and w.smoothed["cardiomegaly"] > 0.99 for w in windows)
    assert [c.alarm for c in changes if c.kind is AlarmKind.PHYSIOLOGICAL] == ["cardiomegaly"]
    assert "edema" not in {c.alarm for c in summary.transitions}
    con = sqlite3.connect(db)
    assert con.execute("select alarm, state from alarm_transitions").fetchall() == [("cardiomegaly", "active")]
    logged = [json.loads(s) for (s,) in con.execute("select smoothed from windows where scored")]
    assert len(logged) == len(windows) and all(s["edema"] > 0.99 for s in logged)


def test_replay_summary_names_the_labels_not_validated(both_high, tmp_path):
    bundle, record = both_high
    res = CliRunner().invoke(bedside_main, ["replay", str(record), "--model", str(bundle), "--db",
                                            str(tmp_path / "s.db")], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert "cardiomegaly ACTIVE" in res.output and "edema ACTIVE" not in res.output
    assert "labels not validated (risks logged, never alarmed): edema" in " ".join(res.output.split())


# -- the monitor screen ----------------------------------------------------------------------------------
class PanelApp(App[None]):
    CSS_PATH = "../bedside/ui/monitor_screen.tcss"

    def __init__(self, state: MonitorState) -> None:
        super().__init__()
        self.state = state

    def compose(self) -> ComposeResult:
        yield RiskPanel(self.state, id="risks")


def panel_text(state: MonitorState, size: tuple[int, int]) -> str:
    async def run() -> str:
        app = PanelApp(state)
        async with app.run_test(size=size) as pilot:
            await pilot.pause()
            return app.query_one(RiskPanel).render().plain
    return asyncio.run(run())


@pytest.mark.parametrize("size", [(40, 16), (24, 16)])
def test_risk_panel_shows_a_not_validated_risk_greyed_without_threshold(size):
    state = MonitorState(LABELS, {k: 0.5 for k in LABELS}, not_validated=["edema"])
    for i in range(5):
        state.apply(WindowResult(t_s=10.0 + 5 * i, index=i, scored=True, reason="",
                                 scores={k: 0.95 for k in LABELS}, smoothed={k: 0.95 for k in LABELS}))
    text = panel_text(state, size)
    rows = text.splitlines()
    edema = next(i for i, r in enumerate(rows) if r.startswith("Edema"))
    cardio = next(i for i, r in enumerate(rows) if r.startswith("Cardiomeg"))  # "Cardiomeg." when narrow
    assert "0.95" in rows[edema] and "0.50" not in rows[edema] and "≥" not in rows[edema]
    assert "not validated" in rows[edema] or "not validated" in rows[edema + 1]
    assert "0.950 ≥0.500" in rows[cardio] and "not validated" not in text.split("Cardiomeg")[1]
    assert "┈" not in "\n".join(rows[edema:edema + 3])  # no threshold mark in the edema trend


def test_the_screen_learns_the_not_validated_labels_from_the_engine(half_validated):
    engine = SimpleNamespace(bundle=load_bundle(half_validated), config=load_alarm_config())
    labels, thresholds, _, not_validated = engine_settings(engine)
    assert labels == LABELS and not_validated == ["edema"]
