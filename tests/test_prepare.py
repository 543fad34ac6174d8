"""Cohort preparation: pairing rules, subject splits, bad files, resume, shards, train/bedside identity."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import socket
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import wfdb
from click.testing import CliRunner

from bedside.preprocess import condition
from bedside.records import open_record
from trainer import prepare as prep
from trainer.cache import CacheError, CohortCache
from trainer.cli_data import prepare as prepare_cmd
from trainer.labels import LABEL_COLUMNS, LABELS, binarize
from trainer.mimic import EDSTAYS, CohortLayoutError, MimicRoots, read_ed_stays
from trainer.pairing import pair_cohort, split_subjects
from trainer.prepare import PrepareError, build_plan, load_cxr, load_ecg, merge_shards, prepare_cohort
from trainer.synth import write_cohort

SUBJECTS = 24
SEED = 5
CHUNK = 16  # small chunks, so resume and shards have several to work with


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("prep") / "cohort"
    write_cohort(root, SUBJECTS, SEED)
    return root


@pytest.fixture(scope="module")
def cache(cohort: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("prep") / "cache"
    prepare_cohort(cohort, out, seed=1, workers=1, progress=False, chunk_pairs=CHUNK)
    return out


# --- pairing rules on hand-made tables --------------------------------------------------------------


def _t(text: str) -> pd.Timestamp:
    return pd.Timestamp(text)


def _tables() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    stays = pd.DataFrame({
        "subject_id": [1, 1, 1, 2],
        "stay_id": [101, 102, 103, 201],
        "intime": [_t("2150-01-01 10:00"), _t("2150-02-01 10:00"), _t("2150-03-01 10:00"), _t("2150-01-01 10:00")],
        "outtime": [_t("2150-01-01 20:00"), _t("2150-02-01 12:00"), _t("2150-03-01 12:00"), _t("2150-01-01 20:00")],
    })
    ecgs = pd.DataFrame({
        "subject_id": [1, 1, 1, 1],
        "ecg_study_id": [41, 42, 43, 44],
        "ecg_time": [_t("2150-01-01 11:00"), _t("2150-01-01 15:00"), _t("2150-02-01 11:00"), _t("2150-01-01 13:50")],
        "ecg_path": ["e41", "e42", "e43", "e44"],
        "stay_id": pd.array([101, 101, 102, None], dtype="Int64"),  # 44: outside any ED stay
    })
    rows = [  # dicom, subject, view, time, labelled
        ("c_nearest", 1, "PA", "2150-01-01 14:00", True),   # e42 (1 h) beats e41 (3 h) and stay-less e44
        ("c_lateral", 1, "LATERAL", "2150-01-01 14:00", True),
        ("c_after", 1, "AP", "2150-01-01 20:30", True),     # after outtime: no stay
        ("c_intime", 1, "AP", "2150-01-01 10:00", True),    # exactly at intime: inside
        ("c_stay2", 1, "AP", "2150-02-01 11:30", True),     # e43
        ("c_no_ecg", 1, "PA", "2150-03-01 11:00", True),    # stay 103 has no ECG
        ("c_unlabelled", 1, "PA", "2150-01-01 14:00", False),
        ("c_late", 1, "PA", "2150-01-01 19:30", True),      # nearest e42 is 4.5 h away
        ("c_other_subject", 2, "PA", "2150-01-01 14:00", True),  # subject 2's stay has no ECG
    ]
    cxrs = pd.DataFrame({
        "subject_id": [r[1] for r in rows], "cxr_study_id": range(51, 51 + len(rows)),
        "dicom_id": [r[0] for r in rows], "view": [r[2] for r in rows], "cxr_time": [_t(r[3]) for r in rows],
        "cxr_path": [f"{r[0]}.jpg" for r in rows], "has_labels": [r[4] for r in rows],
        "Edema": 1.0, "Pleural Effusion": np.nan, "Cardiomegaly": -1.0,
    })
    for frame in (stays, ecgs, cxrs):
        frame["subject_id"] = frame["subject_id"].astype("Int64")
    stays["stay_id"] = stays["stay_id"].astype("Int64")
    return ecgs, stays, cxrs


def test_pairing_picks_the_nearest_ecg_of_the_stay_and_only_frontal_views() -> None:
    pairs, funnel = pair_cohort(*_tables())
    got = dict(zip(pairs["dicom_id"], pairs["ecg_study_id"]))
    assert got == {"c_nearest": 42, "c_intime": 41, "c_stay2": 43, "c_late": 42}
    gap = dict(zip(pairs["dicom_id"], pairs["gap_hours"]))
    assert gap["c_nearest"] == pytest.approx(-1.0) and gap["c_late"] == pytest.approx(4.5)
    assert funnel["not_frontal"] == 1 and funnel["no_chexpert_row"] == 1
    assert funnel["not_in_ed_stay"] == 1  # c_after
    assert funnel["ed_stay_without_ecg"] == 2  # c_no_ecg, c_other_subject
    assert funnel["paired"] == 4 and funnel["beyond_max_gap"] == 0
    assert set(pairs["view"]) <= {"AP", "PA"}


def test_max_gap_drops_far_pairs_and_counts_them() -> None:
    pairs, funnel = pair_cohort(*_tables(), max_gap_hours=2.0)
    assert set(pairs["dicom_id"]) == {"c_nearest", "c_intime", "c_stay2"}
    assert funnel["beyond_max_gap"] == 1
    assert (pairs["gap_hours"].abs() <= 2.0).all()
    with pytest.raises(ValueError, match="max_gap_hours"):
        pair_cohort(*_tables(), max_gap_hours=0)


def test_subject_split_is_70_10_20_disjoint_and_seeded() -> None:
    ids = list(range(1000, 1100))
    a = split_subjects(ids, seed=3)
    assert sorted(a) == ids
    assert [sum(v == s for v in a.values()) for s in ("train", "val", "test")] == [70, 10, 20]
    assert split_subjects(list(reversed(ids)), seed=3) == a  # order of input does not matter
    assert split_subjects(ids, seed=4) != a
    with pytest.raises(ValueError, match="fractions"):
        split_subjects(ids, 0, (0.5, 0.5, 0.5))


def test_finds_the_projects_in_a_physionet_download(cohort: Path, tmp_path: Path) -> None:
    files = tmp_path / "physionet.org" / "files"  # what `wget -r https://physionet.org/files/...` makes
    for name, version, src in (("mimic-iv-ecg", "1.0", "mimic-iv-ecg"),
                               ("mimic-iv-ecg-ext-icd-labels", "1.0.1", "mimic-iv-ecg-ext-icd"),
                               ("mimic-cxr-jpg", "2.1.0", "mimic-cxr-jpg")):
        (files / name).mkdir(parents=True)
        (files / name / version).symlink_to(cohort / src)
    ed = files / "mimic-iv-ed" / "2.2" / "ed"
    ed.mkdir(parents=True)
    (files / "mimic-iv-ed" / "1.0").mkdir()  # an older, empty version folder is passed over
    with gzip.open(ed / "edstays.csv.gz", "wb") as f:  # PhysioNet ships it compressed
        f.write((cohort / "mimic-iv-ed" / EDSTAYS).read_bytes())
    roots = MimicRoots.discover(files)
    assert roots.ecg == (cohort / "mimic-iv-ecg").resolve() and roots.ed == (files / "mimic-iv-ed" / "2.2").resolve()
    assert read_ed_stays(roots).equals(read_ed_stays(MimicRoots.discover(cohort)))
    override = MimicRoots.discover(files, cxr=cohort / "mimic-cxr-jpg")
    assert override.cxr == (cohort / "mimic-cxr-jpg").resolve()
    with pytest.raises(CohortLayoutError, match="no ecg project found"):
        MimicRoots.discover(tmp_path / "physionet.org")
    with pytest.raises(CohortLayoutError, match="must hold record_list.csv"):
        MimicRoots.discover(files, ecg=files)


# --- the prepared cache --------------------------------------------------------------------------


def test_cache_follows_the_pairing_rules(cohort: Path, cache: Path) -> None:
    c = CohortCache(cache)
    subjects = {}
    stays = pd.read_csv(cohort / "mimic-iv-ed" / EDSTAYS, parse_dates=["intime", "outtime"])
    for name in ("train", "val", "test"):
        split = c.split(name)
        pairs = pd.read_csv(split.pairs_csv, parse_dates=["ecg_time", "cxr_time"])
        assert len(pairs) == len(split) == c.manifest["counts"][name]
        assert set(pairs["view"]) <= {"AP", "PA"}
        s = pairs.merge(stays, on=["subject_id", "stay_id"])
        assert len(s) == len(pairs)
        assert ((s["intime"] <= s["cxr_time"]) & (s["cxr_time"] <= s["outtime"])).all()
        gap = (pairs["cxr_time"] - pairs["ecg_time"]).dt.total_seconds() / 3600
        assert np.allclose(gap, pairs["gap_hours"], atol=1e-4)
        raw = pairs[[LABEL_COLUMNS[k] for k in LABELS]].to_numpy(float)
        assert np.array_equal(np.asarray(split.labels), binarize(raw, (1.0,)))
        subjects[name] = set(pairs["subject_id"])
    assert not subjects["train"] & subjects["val"]
    assert not subjects["train"] & subjects["test"] and not subjects["val"] & subjects["test"]
    assert c.manifest["cohort"]["paired"] == sum(c.manifest["counts"].values())
    assert c.manifest["cohort"]["not_frontal"] > 0 and c.manifest["cohort"]["not_in_ed_stay"] > 0


def test_cached_ecg_is_bedside_conditioning_of_the_record(cohort: Path, cache: Path) -> None:
    """Train/bedside identity: the cache holds exactly what bedside.preprocess.condition makes."""
    split = CohortCache(cache).split("train")
    pairs = pd.read_csv(split.pairs_csv, dtype={"dicom_id": str})
    for i in (0, len(pairs) // 2, len(pairs) - 1):
        record = open_record(cohort / "mimic-iv-ecg" / pairs["ecg_path"][i])
        expected = condition(record.read(), record.fs_hz)
        assert np.array_equal(np.asarray(split.ecg[i]), expected)
        assert np.array_equal(np.asarray(split.cxr[i]), load_cxr(cohort / "mimic-cxr-jpg" / pairs["cxr_path"][i]))


def test_cxr_follows_the_torchxrayvision_convention(cohort: Path) -> None:
    xrv = pytest.importorskip("torchxrayvision")
    path = next((cohort / "mimic-cxr-jpg" / "files").rglob("*.jpg"))
    ours = load_cxr(path)
    from PIL import Image
    img = np.asarray(Image.open(path).convert("L"), dtype=np.float32)[None]
    ref = xrv.datasets.XRayResizer(224)(xrv.datasets.XRayCenterCrop()(img))[0]
    assert ours.shape == (224, 224) and ours.dtype == np.uint8
    assert np.abs(ours.astype(np.float32) - ref).mean() < 2.0  # grey levels


def test_plan_is_deterministic_by_seed(cohort: Path) -> None:
    roots = MimicRoots.discover(cohort)
    kw = dict(max_gap_hours=None, label_positive=(1.0,), recipe=prep.DEFAULT_RECIPE,
              split_fractions=(0.7, 0.1, 0.2), chunk_pairs=CHUNK)
    a, b, c = build_plan(roots, seed=1, **kw), build_plan(roots, seed=1, **kw), build_plan(roots, seed=2, **kw)
    assert a["plan_sha256"] == b["plan_sha256"] and a["csv"] == b["csv"]
    assert a["plan_sha256"] != c["plan_sha256"]
    gap = build_plan(roots, seed=1, **{**kw, "max_gap_hours": 1.0})
    assert len(gap["table"]) < len(a["table"]) and (gap["table"]["gap_hours"].abs() <= 1.0).all()


def test_same_out_same_settings_is_reused_other_settings_refused(cohort: Path, cache: Path) -> None:
    manifest = json.loads((cache / "manifest.json").read_text())
    assert prepare_cohort(cohort, cache, seed=1, progress=False, chunk_pairs=CHUNK) == manifest
    with pytest.raises(PrepareError, match="other data or settings"):
        prepare_cohort(cohort, cache, seed=2, progress=False, chunk_pairs=CHUNK)


# --- bad files, interruption, shards --------------------------------------------------------------


def _arrays_equal(a: Path, b: Path) -> None:
    for name in ("train", "val", "test"):
        for f in ("ecg.npy", "cxr.npy", "labels.npy"):
            assert np.array_equal(np.load(a / name / f), np.load(b / name / f)), (name, f)
        assert (a / name / "pairs.csv").read_bytes() == (b / name / "pairs.csv").read_bytes()


def test_bad_files_are_named_skipped_and_counted(cohort: Path, cache: Path, tmp_path: Path) -> None:
    broken = tmp_path / "cohort"
    shutil.copytree(cohort, broken)
    pairs = pd.concat(pd.read_csv(cache / s / "pairs.csv", dtype={"dicom_id": str}) for s in ("train", "val", "test"))
    ecgs = list(dict.fromkeys(pairs["ecg_path"]))
    ecg_root, cxr_root = broken / "mimic-iv-ecg", broken / "mimic-cxr-jpg"
    dat = ecg_root / (ecgs[0] + ".dat")
    dat.write_bytes(dat.read_bytes()[:1000])  # truncated signal file
    (ecg_root / (ecgs[1] + ".hea")).write_text("this is not a header\n")  # garbage header
    (ecg_root / (ecgs[2] + ".dat")).unlink()  # missing signal file
    x, fields = wfdb.rdsamp(str(ecg_root / ecgs[3]))
    x[1000:1200, 4] = np.nan  # a gap in aVF
    wfdb.wrsamp(Path(ecgs[3]).name, fs=fields["fs"], units=fields["units"], sig_name=fields["sig_name"], p_signal=x,
                fmt=["16"] * 12, adc_gain=[200.0] * 12, baseline=[0] * 12, write_dir=str((ecg_root / ecgs[3]).parent))
    clean = pairs[~pairs["ecg_path"].isin(ecgs[:4])]
    cxr_gone, cxr_bad = clean["cxr_path"].iloc[0], clean["cxr_path"].iloc[1]
    (cxr_root / cxr_gone).unlink()
    jpg = cxr_root / cxr_bad
    jpg.write_bytes(jpg.read_bytes()[:300])  # truncated JPEG

    out = tmp_path / "cache"
    m = prepare_cohort(broken, out, seed=1, workers=1, progress=False, chunk_pairs=CHUNK)
    assert m["skipped"] == {"cxr_missing": 1, "cxr_unreadable": 1, "ecg_gap": 1, "ecg_missing": 1, "ecg_unreadable": 2}
    named = {(e["reason"], Path(e["path"]).name) for e in m["skipped_files"]}
    assert ("ecg_unreadable", Path(ecgs[0]).name) in named and ("ecg_unreadable", Path(ecgs[1]).name) in named
    assert ("ecg_missing", Path(ecgs[2]).name) in named and ("ecg_gap", Path(ecgs[3]).name) in named
    assert ("cxr_missing", Path(cxr_gone).name) in named and ("cxr_unreadable", Path(cxr_bad).name) in named
    lost = pairs["ecg_path"].isin(ecgs[:4]).sum() + 2
    assert sum(m["pairs_dropped"].values()) == lost
    assert sum(m["counts"].values()) == len(pairs) - lost
    kept = pd.concat(pd.read_csv(out / s / "pairs.csv") for s in ("train", "val", "test"))
    assert not kept["ecg_path"].isin(ecgs[:4]).any() and not kept["cxr_path"].isin([cxr_gone, cxr_bad]).any()


def test_interrupted_run_leaves_no_cache_and_resumes(cohort: Path, cache: Path, tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "cache"
    real = prep.process_chunk
    calls: list[str] = []

    def interrupted(task):
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append(task["chunk"])
        return real(task)

    monkeypatch.setattr(prep, "process_chunk", interrupted)
    with pytest.raises(KeyboardInterrupt):
        prepare_cohort(cohort, out, seed=1, workers=1, progress=False, chunk_pairs=CHUNK)
    assert not (out / "manifest.json").exists()
    with pytest.raises(CacheError, match="manifest.json: missing"):
        CohortCache(out)
    assert len(list((out / ".work" / "chunks").glob("*.npz"))) == 2
    resumed: list[str] = []
    monkeypatch.setattr(prep, "process_chunk", lambda task: (resumed.append(task["chunk"]), real(task))[1])
    lock = out / ".work" / "assemble.lock"
    lock.write_text(f"{socket.gethostname()} {os.getpid()}")  # a live process is assembling
    status = prepare_cohort(cohort, out, seed=1, workers=1, progress=False, chunk_pairs=CHUNK)
    assert status["complete"] is False and status["chunks_missing"] == 0 and status["assembling_elsewhere"]
    assert not (out / "manifest.json").exists()
    gone = subprocess.Popen(["true"])
    gone.wait()
    lock.write_text(f"{socket.gethostname()} {gone.pid}")  # its holder died: the lock is taken over
    m = prepare_cohort(cohort, out, seed=1, workers=1, progress=False, chunk_pairs=CHUNK)
    chunks = sum(-(-n // CHUNK) for n in m["counts"].values())
    assert not set(resumed) & set(calls) and len(resumed) + len(calls) == chunks  # nothing done twice
    assert m["counts"] == json.loads((cache / "manifest.json").read_text())["counts"]
    _arrays_equal(out, cache)
    assert not (out / ".work").exists()


def test_shards_merge_into_the_unsharded_cache(cohort: Path, cache: Path, tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    ra = prepare_cohort(cohort, a, seed=1, shard=(0, 2), workers=1, progress=False, chunk_pairs=CHUNK)
    rb = prepare_cohort(cohort, b, seed=1, shard=(1, 2), workers=1, progress=False, chunk_pairs=CHUNK)
    assert ra["complete"] is False and rb["complete"] is False
    with pytest.raises(CacheError):
        CohortCache(a)
    with pytest.raises(PrepareError, match="chunks are in none"):
        merge_shards([a], tmp_path / "only_a")
    m = merge_shards([a, b], tmp_path / "merged")
    _arrays_equal(tmp_path / "merged", cache)
    ref = json.loads((cache / "manifest.json").read_text())
    for key in ("counts", "positive_rates", "skipped", "cohort", "plan_sha256", "recipe", "labels"):
        assert m[key] == ref[key], key
    assert m["shards"] == ["0/2", "1/2"]
    # shards sharing one folder: the last one to finish assembles the cache
    shared = tmp_path / "shared"
    shutil.copytree(b, shared)  # as if shard 1/2 had run here
    done = prepare_cohort(cohort, shared, seed=1, shard=(0, 2), workers=1, progress=False, chunk_pairs=CHUNK)
    assert done["counts"] == ref["counts"]
    _arrays_equal(shared, cache)


def test_load_ecg_refuses_what_the_bedside_refuses(tmp_path: Path) -> None:
    x = np.zeros((3000, 2))
    wfdb.wrsamp("short", fs=500, units=["mV", "mV"], sig_name=["II", "V5"], p_signal=x, fmt=["16", "16"],
                write_dir=str(tmp_path))
    with pytest.raises(prep.RecordError) as err:
        load_ecg(tmp_path / "short")
    assert prep.ecg_problem(err.value, str(tmp_path / "short")) == "ecg_refused"


def test_cli_prepare_reports_and_rejects_bad_options(cohort: Path, tmp_path: Path) -> None:
    """Also the process-pool path (--workers 2)."""
    runner = CliRunner()
    res = runner.invoke(prepare_cmd, ["--mimic-root", str(cohort), "--out", str(tmp_path / "c"), "--workers", "2",
                                      "--max-gap-hours", "6", "--label-positive", "1.0,-1.0"])
    assert res.exit_code == 0, res.output
    assert "complete" in res.output and "pairing:" in res.output
    m = CohortCache(tmp_path / "c").manifest
    assert m["max_gap_hours"] == 6 and m["label_positive"] == [1.0, -1.0]
    bad = runner.invoke(prepare_cmd, ["--mimic-root", str(cohort), "--out", str(tmp_path / "d"), "--shard", "2/2"])
    assert bad.exit_code == 2 and "0 <= I < N" in bad.output
    bad = runner.invoke(prepare_cmd, ["--mimic-root", str(tmp_path), "--out", str(tmp_path / "d")])
    assert bad.exit_code == 1 and "no ecg project found" in bad.output
    bad = runner.invoke(prepare_cmd, ["--mimic-root", str(cohort), "--out", str(tmp_path / "d"),
                                      "--label-positive", "2"])
    assert bad.exit_code == 2 and "not a CheXpert value" in bad.output
