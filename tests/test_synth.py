"""The synthetic cohort: MIMIC layouts and schemas, WFDB records, determinism, and the latent model."""

from __future__ import annotations

import datetime as dt
import filecmp
import gzip
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import wfdb
from scipy.signal import find_peaks

from bedside.leads import CANONICAL_LEADS, LEAD_INDEX
from bedside.records import open_record
from trainer import synth_cxr, synth_ecg
from trainer.labels import LABEL_COLUMNS
from trainer.mimic import (
    CXR_CHEXPERT, CXR_CHEXPERT_COLUMNS, CXR_METADATA, CXR_METADATA_COLUMNS, CXR_SPLIT, CXR_SPLIT_COLUMNS, EDSTAYS,
    EDSTAYS_COLUMNS, EXT_ICD, EXT_ICD_COLUMNS, EXT_ICD_PREFIX, MACHINE_MEASUREMENTS, MACHINE_MEASUREMENTS_COLUMNS,
    RECORD_LIST, RECORD_LIST_COLUMNS,
)
from trainer.synth import SynthError, write_cohort

SUBJECTS = 20
SEED = 7


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth") / "cohort"
    write_cohort(root, SUBJECTS, SEED)
    return root


def _header(path: Path) -> list[str]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as f:
        return f.readline().strip().split(",")


def test_tables_have_the_mimic_schemas(cohort: Path) -> None:
    expected = {
        cohort / "mimic-iv-ecg" / RECORD_LIST: RECORD_LIST_COLUMNS,
        cohort / "mimic-iv-ecg" / MACHINE_MEASUREMENTS: MACHINE_MEASUREMENTS_COLUMNS,
        cohort / "mimic-iv-ecg-ext-icd" / EXT_ICD: EXT_ICD_COLUMNS,
        cohort / "mimic-iv-ed" / EDSTAYS: EDSTAYS_COLUMNS,
        cohort / "mimic-cxr-jpg" / CXR_CHEXPERT: CXR_CHEXPERT_COLUMNS,
        cohort / "mimic-cxr-jpg" / CXR_METADATA: CXR_METADATA_COLUMNS,
        cohort / "mimic-cxr-jpg" / CXR_SPLIT: CXR_SPLIT_COLUMNS,
    }
    for path, columns in expected.items():
        assert path.is_file(), path
        assert [c.strip('"') for c in _header(path)] == list(columns), path
    readme = (cohort / "README.txt").read_text()
    assert "SYNTHETIC" in readme and "NOT CLINICAL" in readme


def test_every_listed_file_exists_in_the_mimic_tree(cohort: Path) -> None:
    rl = pd.read_csv(cohort / "mimic-iv-ecg" / RECORD_LIST)
    for sid, study, path, name in zip(rl["subject_id"], rl["study_id"], rl["path"], rl["file_name"]):
        assert path == f"files/p{str(sid)[:4]}/p{sid}/s{study}/{study}" and str(name) == str(study)
        for ext in ("hea", "dat"):
            assert (cohort / "mimic-iv-ecg" / f"{path}.{ext}").is_file()
    icd = pd.read_csv(cohort / "mimic-iv-ecg-ext-icd" / EXT_ICD)
    merged = icd.merge(rl, on="study_id", suffixes=("", "_rl"))
    assert len(merged) == len(rl) == len(icd)
    assert (merged["file_name"] == EXT_ICD_PREFIX + merged["path"]).all()
    assert (merged["ecg_time"] == merged["ecg_time_rl"]).all()
    meta = pd.read_csv(cohort / "mimic-cxr-jpg" / CXR_METADATA, dtype={"dicom_id": str})
    for sid, study, dicom in zip(meta["subject_id"], meta["study_id"], meta["dicom_id"]):
        assert (cohort / "mimic-cxr-jpg" / f"files/p{str(sid)[:2]}/p{sid}/s{study}/{dicom}.jpg").is_file()
    assert set(meta["ViewPosition"]) >= {"AP", "PA", "LATERAL"}


def test_wfdb_records_look_like_mimic_iv_ecg(cohort: Path) -> None:
    rl = pd.read_csv(cohort / "mimic-iv-ecg" / RECORD_LIST)
    base = str(cohort / "mimic-iv-ecg" / rl["path"].iloc[0])
    h = wfdb.rdheader(base)
    assert h.sig_name == list(CANONICAL_LEADS)
    assert (h.fs, h.sig_len, h.n_sig) == (500, 5000, 12)
    assert set(h.units) == {"mV"} and set(h.fmt) == {"16"} and set(h.adc_gain) == {200.0}
    when = dt.datetime.combine(h.base_date, h.base_time)
    assert when.strftime("%Y-%m-%d %H:%M:%S") == rl["ecg_time"].iloc[0]
    x = open_record(base).read()
    assert x.shape == (12, 5000) and not np.isnan(x).any()
    i, ii, iii = x[LEAD_INDEX["I"]], x[LEAD_INDEX["II"]], x[LEAD_INDEX["III"]]
    assert np.max(np.abs(iii - (ii - i))) <= 2.5 / 200  # consistent limb leads, to the ADC step
    assert 0.3 < np.ptp(ii) < 6.0  # a plausible voltage in mV


def test_fast_writer_writes_the_bytes_of_wrsamp(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(synth_ecg, "_WRITE_FIELDS", None)  # exercise the first-record path too
    rng = np.random.default_rng(0)
    traits = synth_ecg.draw_traits(rng)
    when = dt.datetime(2150, 3, 4, 5, 6)
    for k in range(3):
        x = synth_ecg.synth_ecg(synth_ecg.ecg_state(traits, 0.2 * k, 0.1, 0.3, rng), rng)
        synth_ecg.write_ecg(tmp_path / "fast", 40000000 + k, x, when)
        synth_ecg.write_ecg_wrsamp(tmp_path / "ref", 40000000 + k, x, when)
        for ext in ("hea", "dat"):
            assert filecmp.cmp(tmp_path / "fast" / f"{40000000 + k}.{ext}", tmp_path / "ref" / f"{40000000 + k}.{ext}",
                               shallow=False)


def test_same_seed_same_bytes_other_seed_other_cohort(cohort: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    write_cohort(again, SUBJECTS, SEED)
    files = sorted(p.relative_to(cohort) for p in cohort.rglob("*") if p.is_file() and p.name != "README.txt")
    assert sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file() and p.name != "README.txt") == files
    for rel in files:
        assert filecmp.cmp(cohort / rel, again / rel, shallow=False), rel
    other = tmp_path / "other"
    write_cohort(other, 3, SEED + 1)
    assert (other / "mimic-iv-ecg" / RECORD_LIST).read_bytes() != (cohort / "mimic-iv-ecg" / RECORD_LIST).read_bytes()


def test_events_exercise_the_pairing_rules(cohort: Path) -> None:
    stays = pd.read_csv(cohort / "mimic-iv-ed" / EDSTAYS, parse_dates=["intime", "outtime"])
    icd = pd.read_csv(cohort / "mimic-iv-ecg-ext-icd" / EXT_ICD, parse_dates=["ecg_time"])
    in_stay = icd.dropna(subset=["ed_stay_id"]).merge(stays, left_on="ed_stay_id", right_on="stay_id")
    assert len(in_stay) == icd["ed_stay_id"].notna().sum()  # every linked stay exists
    assert ((in_stay["intime"] <= in_stay["ecg_time"]) & (in_stay["ecg_time"] <= in_stay["outtime"])).all()
    assert icd["ed_stay_id"].isna().any()  # ECGs outside ED stays
    assert (in_stay.groupby("ed_stay_id").size() >= 2).any()  # several ECGs in one stay
    meta = pd.read_csv(cohort / "mimic-cxr-jpg" / CXR_METADATA)
    t = pd.to_datetime(meta["StudyDate"].astype(str), format="%Y%m%d") + pd.to_timedelta(
        (meta["StudyTime"] // 10000) * 3600 + (meta["StudyTime"] // 100 % 100) * 60 + meta["StudyTime"] % 100, unit="s")
    meta = meta.assign(t=t)
    inside = meta.merge(stays, on="subject_id")
    inside = inside[(inside["intime"] <= inside["t"]) & (inside["t"] <= inside["outtime"])]
    assert 0 < inside["dicom_id"].nunique() < len(meta)  # X-rays inside and outside stays
    assert (meta.groupby("subject_id")["study_id"].nunique() >= 2).any()


def test_labels_follow_chexpert_conventions(cohort: Path) -> None:
    chex = pd.read_csv(cohort / "mimic-cxr-jpg" / CXR_CHEXPERT)
    for column in LABEL_COLUMNS.values():
        values = set(chex[column].dropna())
        assert values <= {1.0, 0.0, -1.0}
        assert {1.0, 0.0} <= values and chex[column].isna().any()
    assert (chex[list(LABEL_COLUMNS.values())] == -1.0).any().any()


def _peaks(lead: np.ndarray) -> int:
    return len(find_peaks(lead, height=0.5 * lead.max(), distance=125)[0])


def test_ecg_carries_the_latent_severities() -> None:
    def ecg(card: float, eff: float, edema: float) -> np.ndarray:
        rng = np.random.default_rng(11)
        traits = synth_ecg.draw_traits(np.random.default_rng(3))
        return synth_ecg.synth_ecg(synth_ecg.ecg_state(traits, card, eff, edema, rng), rng)

    base, wet, fluid, big = ecg(0, 0, 0), ecg(0, 0, 1), ecg(0, 1, 0), ecg(1, 0, 0)
    v5 = LEAD_INDEX["V5"]
    assert _peaks(wet[v5]) >= _peaks(base[v5]) + 3  # edema: faster heart rate over 10 s
    assert np.ptp(fluid[v5]) < 0.8 * np.ptp(base[v5])  # effusion: lower voltage
    assert np.ptp(big[v5]) > 1.2 * np.ptp(base[v5])  # cardiomegaly: higher voltage


def _heart_width(img: np.ndarray, anatomy: synth_cxr.Anatomy) -> float:
    """Most heart-bright pixels in a row between the hila and the diaphragm, in pixels."""
    rows = img[int(0.45 * img.shape[0]):int((anatomy.diaphragm - 0.03) * img.shape[0])].astype(float)
    widths = []
    for row in rows:
        bright = row > 0.4 * 255
        lo, hi = int(0.2 * len(row)), int(0.8 * len(row))  # inside the lungs, clear of the chest wall
        widths.append(bright[lo:hi].sum())
    return float(np.max(widths))


def test_radiograph_carries_the_latent_severities() -> None:
    anatomy = synth_cxr.draw_anatomy(np.random.default_rng(5))

    def film(card: float, eff: float, edema: float) -> np.ndarray:
        rng = np.random.default_rng(9)
        return synth_cxr.draw_frontal("PA", anatomy, synth_cxr.ctr_for(card, rng), eff, edema, rng)

    base = film(0, 0, 0)
    assert base.shape == synth_cxr.FRONTAL_SIZE and base.dtype == np.uint8
    assert _heart_width(film(1, 0, 0), anatomy) > 1.2 * _heart_width(base, anatomy)
    rows, cols = base.shape
    base_row = int((anatomy.diaphragm - 0.04) * rows)
    corners = (slice(base_row - 12, base_row),
               np.r_[int(0.17 * cols):int(0.27 * cols), int(0.73 * cols):int(0.83 * cols)])
    assert film(0, 1, 0)[corners].mean() > base[corners].mean() + 30  # blunted costophrenic angles
    hila = (slice(int(0.4 * rows), int(0.52 * rows)),
            np.r_[int(0.3 * cols):int(0.4 * cols), int(0.6 * cols):int(0.7 * cols)])
    assert film(0, 0, 1)[hila].mean() > base[hila].mean() + 15  # perihilar haze


def test_refuses_to_overwrite_what_it_did_not_write(tmp_path: Path) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(SynthError, match="not a synthetic cohort"):
        write_cohort(tmp_path / "mine", 2, 0)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    first = write_cohort(tmp_path / "c", 2, 0)
    assert not first["reused"]
    assert write_cohort(tmp_path / "c", 2, 0)["reused"]
    with pytest.raises(SynthError, match="another synthetic cohort"):
        write_cohort(tmp_path / "c", 2, 1)
    assert write_cohort(tmp_path / "c", 2, 1, overwrite=True)["seed"] == 1
    assert not list(tmp_path.glob(".*partial*"))
    assert not math.isnan(first["pairable_label_rates"]["edema"]["positive"])
