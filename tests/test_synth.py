"""The synthetic cohort: MIMIC layouts and schemas, WFDB records, determinism, and the latent model."""

from __future__ import annotations

import dataclasses
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
from sklearn.metrics import roc_auc_score

from bedside.leads import CANONICAL_LEADS, INDEPENDENT_LEADS, LEAD_INDEX
from bedside.preprocess import DEFAULT_RECIPE, Recipe, condition, scale
from bedside.records import open_record
from trainer import synth_cxr, synth_ecg
from trainer.features import FEATURE_NAMES, crude_features, fit_feature_baseline
from trainer.labels import LABEL_COLUMNS, LABELS
from trainer.mimic import (
    CXR_CHEXPERT, CXR_CHEXPERT_COLUMNS, CXR_METADATA, CXR_METADATA_COLUMNS, CXR_SPLIT, CXR_SPLIT_COLUMNS, EDSTAYS,
    EDSTAYS_COLUMNS, EXT_ICD, EXT_ICD_COLUMNS, EXT_ICD_PREFIX, MACHINE_MEASUREMENTS, MACHINE_MEASUREMENTS_COLUMNS,
    RECORD_LIST, RECORD_LIST_COLUMNS,
)
from trainer.synth import SynthError, write_cohort
from trainer.synth_cohort import draw_cohort

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


def _features(*xs_mv: np.ndarray) -> np.ndarray:
    """Crude features of 500 Hz records, conditioned as the cache conditions them."""
    return crude_features(np.stack([condition(x, synth_ecg.FS_HZ) for x in xs_mv]), DEFAULT_RECIPE.fs_hz)


def _traits(seed: int, **changes) -> synth_ecg.EcgTraits:
    """A subject's traits, with sinus rhythm and normal conduction unless ``changes`` say otherwise."""
    traits = synth_ecg.draw_traits(np.random.default_rng(seed))
    return dataclasses.replace(traits, **{"af_u": 1.0, "lbbb_u": 1.0, "noise_mv": 0.01, **changes})


def _ecg(traits: synth_ecg.EcgTraits, card: float, eff: float, edema: float, seed: int = 11,
         **state_changes) -> tuple[np.ndarray, synth_ecg.EcgState]:
    rng = np.random.default_rng(seed)
    state = dataclasses.replace(synth_ecg.ecg_state(traits, card, eff, edema, rng), **state_changes)
    return synth_ecg.synth_ecg(state, rng), state


def test_ecg_carries_the_latent_severities() -> None:
    traits = _traits(3)
    (base, _), (wet, _), (fluid, _), (big, _) = (_ecg(traits, 0, 0, 0), _ecg(traits, 0, 0, 1),
                                                 _ecg(traits, 0, 1, 0, alternans=0.0), _ecg(traits, 1, 0, 0))
    v5 = LEAD_INDEX["V5"]
    assert _peaks(wet[v5]) >= _peaks(base[v5]) + 2  # edema: faster heart rate over 10 s
    assert np.ptp(fluid[v5]) < 0.8 * np.ptp(base[v5])  # effusion: lower voltage
    assert np.ptp(big[v5]) > 1.2 * np.ptp(base[v5])  # cardiomegaly: higher voltage
    f = _features(base, fluid, big)
    limb = [FEATURE_NAMES.index(f"qrs_pp_{lead}") for lead in ("I", "II", "aVF")]
    chest = [FEATURE_NAMES.index(f"qrs_pp_{lead}") for lead in ("V2", "V4", "V6")]
    # effusion lowers the limb leads more than the chest leads (Madias: low limb-lead voltage)
    assert f[1, limb].sum() / f[0, limb].sum() < f[1, chest].sum() / f[0, chest].sum() < 0.85
    sokolow = FEATURE_NAMES.index("sokolow_lyon")
    assert f[2, sokolow] > 1.3 * f[0, sokolow]  # cardiomegaly: LVH voltage (S in V1 + R in V5/V6)


def test_edema_raises_the_heart_rate_across_subjects() -> None:
    hr = FEATURE_NAMES.index("hr_bpm")
    dry = _features(*(_ecg(_traits(s), 0, 0, 0, seed=s)[0] for s in range(12)))[:, hr]
    wet = _features(*(_ecg(_traits(s), 0, 0, 1, seed=s)[0] for s in range(12)))[:, hr]
    assert np.mean(wet - dry) > 14 and np.mean(wet > dry) >= 0.9


def test_atrial_fibrillation_has_irregular_rr_and_no_p_wave() -> None:
    traits = _traits(5, af_u=0.0)  # below any AF share: this subject is in AF whenever edema > 0
    recordings = [_ecg(traits, 0, 0, 0.6, seed=s) for s in range(4)]
    assert all(state.af and state.p_mv == 0.0 for _, state in recordings)
    sinus = [_ecg(_traits(5), 0, 0, 0.6, seed=s) for s in range(4)]
    assert not any(state.af for _, state in sinus)
    f = _features(*(x for x, _ in recordings + sinus))
    af, sr = f[:4], f[4:]
    for name in ("rr_cv", "rr_rmssd_rel"):
        col = FEATURE_NAMES.index(name)
        assert af[:, col].min() > 0.08 > 0.06 > sr[:, col].max(), name  # irregularly irregular
    col = FEATURE_NAMES.index("p_consistency")
    assert af[:, col].max() < 0.4 < sr[:, col].min()  # no repeating P wave, a fibrillatory baseline
    # no P wave in the beat: the P part of the kernel is never added
    p_kernel, _, _, _ = synth_ecg.beat_kernels(recordings[0][1], synth_ecg.FS_HZ, np.random.default_rng(0))
    assert np.abs(p_kernel).max() == 0.0


def test_alternans_alternates_the_qrs_amplitude() -> None:
    traits = _traits(7)
    x, state = _ecg(traits, 0, 0.9, 0, alternans=0.2)
    plain, _ = _ecg(traits, 0, 0.9, 0, alternans=0.0)
    v5 = x[LEAD_INDEX["V5"]]
    peaks = find_peaks(v5, height=0.4 * v5.max(), distance=int(0.3 * synth_ecg.FS_HZ))[0]
    r = v5[peaks]
    steps = np.sign(np.diff(r))
    assert len(r) >= 6 and np.all(steps[1:] == -steps[:-1])  # up, down, up, down...
    assert np.median(np.abs(np.diff(r))) > 0.25 * np.median(r)
    col = FEATURE_NAMES.index("qrs_alternans")
    f = _features(x, plain)
    assert f[0, col] > 0.25 > 0.08 > f[1, col]


def test_effusion_brings_alternans_to_a_share_of_recordings() -> None:
    traits = _traits(2)
    shares = [np.mean([synth_ecg.ecg_state(traits, 0, eff, 0, np.random.default_rng(s)).alternans > 0
                       for s in range(300)]) for eff in (0.0, 0.5, 1.0)]
    assert shares[0] == 0.0 < shares[1] < shares[2] and 0.3 < shares[2] < 0.6


def test_lbbb_and_left_atrial_abnormality_change_the_morphology() -> None:
    traits = _traits(4)
    rng = np.random.default_rng(0)
    normal = synth_ecg.ecg_state(traits, 0, 0, 0, rng)
    lbbb = dataclasses.replace(normal, lbbb=True, qrs_ms=140.0)
    f = _features(*(synth_ecg.synth_ecg(s, np.random.default_rng(1)) for s in (normal, lbbb)))
    width = FEATURE_NAMES.index("qrs_width_ms")
    assert f[1, width] > f[0, width] + 30
    # left-atrial abnormality: a longer P in II (both humps), a deeper terminal negative P in V1
    ii, v1 = synth_ecg.DOWER[1], synth_ecg.DOWER[2]
    p0, *_ = synth_ecg.beat_kernels(normal, synth_ecg.FS_HZ, np.random.default_rng(0))
    p1, *_ = synth_ecg.beat_kernels(dataclasses.replace(normal, la=1.0), synth_ecg.FS_HZ, np.random.default_rng(0))

    def p_ms(p: np.ndarray) -> float:
        lead = ii @ p
        on = np.flatnonzero(np.abs(lead) > 0.1 * np.abs(lead).max())
        return 1000.0 * (on[-1] - on[0]) / synth_ecg.FS_HZ

    assert p_ms(p1) > p_ms(p0) + 30 and p_ms(p1) >= 120
    assert (v1 @ p1).min() < 2.0 * (v1 @ p0).min() < 0


def test_cardiomegaly_strain_inverts_lateral_t_waves() -> None:
    traits = _traits(6, strain_gain=1.0)
    _, _, t_plain, _ = synth_ecg.beat_kernels(synth_ecg.ecg_state(traits, 0, 0, 0, np.random.default_rng(0)),
                                              synth_ecg.FS_HZ, np.random.default_rng(0))
    strained = synth_ecg.ecg_state(traits, 1, 0, 0, np.random.default_rng(0))
    assert strained.strain == pytest.approx(synth_ecg.EFFECTS["cardio_strain"]) and strained.strain >= 0.5
    _, _, t_strain, _ = synth_ecg.beat_kernels(strained, synth_ecg.FS_HZ, np.random.default_rng(0))
    v5 = synth_ecg.DOWER[INDEPENDENT_LEADS.index("V5")]
    assert (v5 @ t_plain).max() > 0.05 and (v5 @ t_strain).min() < -0.05 and (v5 @ t_strain).max() < 0.01


def test_crude_features_separate_each_label_on_a_small_cohort() -> None:
    """~200 subjects, one ECG each, label = latent severity > 0.5: every label separable, both scalings."""
    seed = 0
    xs, ys = [], []
    for person in draw_cohort(240, seed):
        if not person.ecgs:
            continue
        rng = np.random.default_rng([seed, 3, person.index])
        traits = synth_ecg.draw_traits(rng)
        ecg = person.ecgs[0]
        erng = np.random.default_rng([seed, 4, person.index, 0])
        sev = ecg.severity
        state = synth_ecg.ecg_state(traits, sev["cardiomegaly"], sev["pleural_effusion"], sev["edema"], erng)
        xs.append(condition(synth_ecg.synth_ecg(state, erng), synth_ecg.FS_HZ))
        ys.append([sev[label] > 0.5 for label in LABELS])
    x, y = np.stack(xs), np.asarray(ys, dtype=np.float32)
    half = len(x) // 2
    for scaling in ("fixed_mv", "minmax"):
        f = crude_features(scale(x, Recipe(scaling=scaling)), DEFAULT_RECIPE.fs_hz)
        (logits,) = fit_feature_baseline(f[:half], y[:half], [f[half:]])
        for k, label in enumerate(LABELS):
            assert roc_auc_score(y[half:, k], logits[:, k]) > 0.6, (scaling, label)


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
