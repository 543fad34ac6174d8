"""``trainer synth``: write a synthetic cohort in the file layouts and CSV schemas of the MIMIC projects.

SYNTHETIC, NOT CLINICAL DATA. The cohort exists so that the whole pipeline (preparation, training,
export, bedside replay) runs without credentialed data; nothing learnt from it says anything about
patients. The layout under the root is the one :mod:`trainer.mimic` reads (``mimic-iv-ecg/``,
``mimic-iv-ecg-ext-icd/``, ``mimic-iv-ed/``, ``mimic-cxr-jpg/``), so real PhysioNet downloads and
synthetic cohorts go through one ingestion path.

People and events come from :mod:`trainer.synth_cohort`, ECG waveforms from
:mod:`trainer.synth_ecg`, radiographs from :mod:`trainer.synth_cxr`. Output is deterministic in
(subjects, seed): the same arguments give byte-identical CSV tables, WFDB records and JPEGs.
The cohort is written into a temporary sibling folder and renamed into place when complete.
"""

from __future__ import annotations

import gzip
import io
import json
import math
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from trainer import synth_cxr, synth_ecg
from trainer.progress import progress_bar
from trainer.labels import LABEL_COLUMNS, LABELS
from trainer.mimic import (
    CXR_CHEXPERT, CXR_CHEXPERT_COLUMNS, CXR_METADATA, CXR_METADATA_COLUMNS, CXR_SPLIT, CXR_SPLIT_COLUMNS,
    EDSTAYS, EDSTAYS_COLUMNS, EXT_ICD, EXT_ICD_COLUMNS, EXT_ICD_PREFIX, FRONTAL_VIEWS, MACHINE_MEASUREMENTS,
    MACHINE_MEASUREMENTS_COLUMNS, PROJECT_DIRS, RECORD_LIST, RECORD_LIST_COLUMNS, TIME_FORMAT, cxr_relative_path,
)
from trainer.synth_cohort import Subject, draw_cohort

GENERATOR = "cromotex-synth-2"
SUMMARY_FILE = "synth.json"
VIEW_MEANING = {"PA": "postero-anterior", "AP": "antero-posterior", "LATERAL": "lateral", "LL": "left lateral"}
ICD = {"cardiomegaly": "I517", "pleural_effusion": "J90", "edema": "J810"}
BACKGROUND_ICD = ("I10", "E785", "Z87891", "E119", "N179", "R0602", "I4891")


class SynthError(Exception):
    """The synthetic cohort cannot be written where asked; the message says what to do."""


def _dirs(root: Path) -> dict[str, Path]:
    return {key: root / names[0] for key, names in PROJECT_DIRS.items()}


def ecg_relative_path(subject_id: int, study_id: int) -> str:
    s = str(subject_id)
    return f"files/p{s[:4]}/p{s}/s{study_id}/{study_id}"


def _render(root: str, seed: int, people: list[Subject]) -> list[dict[str, Any]]:
    """Write the WFDB records and JPEGs of ``people``; returns their machine-measurement rows."""
    dirs = _dirs(Path(root))
    rows: list[dict[str, Any]] = []
    for person in people:
        rng = np.random.default_rng([seed, 3, person.index])
        traits = synth_ecg.draw_traits(rng)
        anatomy = synth_cxr.draw_anatomy(rng)
        for j, ecg in enumerate(person.ecgs):
            erng = np.random.default_rng([seed, 4, person.index, j])
            sev = ecg.severity
            state = synth_ecg.ecg_state(traits, sev["cardiomegaly"], sev["pleural_effusion"], sev["edema"], erng)
            x = synth_ecg.synth_ecg(state, erng)
            synth_ecg.write_ecg(synth_ecg.ecg_record_dir(dirs["ecg"], person.subject_id, ecg.study_id),
                                ecg.study_id, x, ecg.time)
            rows.append(_measurements(person, ecg, state))
        for k, study in enumerate(person.cxrs):
            sev = study.severity
            for m, (view, dicom_id) in enumerate(zip(study.views, study.dicom_ids)):
                crng = np.random.default_rng([seed, 5, person.index, k, m])
                ctr = synth_cxr.ctr_for(sev["cardiomegaly"], crng)
                if view in FRONTAL_VIEWS:
                    img = synth_cxr.draw_frontal(view, anatomy, ctr, sev["pleural_effusion"], sev["edema"], crng)
                else:
                    img = synth_cxr.draw_lateral(anatomy, ctr, sev["pleural_effusion"], sev["edema"], crng)
                synth_cxr.write_jpeg(dirs["cxr"] / cxr_relative_path(person.subject_id, study.study_id, dicom_id), img)
    return rows


def _measurements(person: Subject, ecg, state: synth_ecg.EcgState) -> dict[str, Any]:
    """A machine_measurements.csv row: intervals in ms, axes in degrees, the cart's report lines."""
    rr = 60000.0 / state.hr_bpm
    if state.af:
        reports = ["Atrial fibrillation" + (" with rapid ventricular response" if state.hr_bpm > 100 else "")]
    else:
        reports = ["Sinus tachycardia" if state.hr_bpm > 100 else "Sinus bradycardia" if state.hr_bpm < 60
                   else "Sinus rhythm"]
    if state.lbbb:
        reports.append("Left bundle branch block")
    if state.alternans > 0:
        reports.append("Electrical alternans")
    if state.axis_deg < -30:
        reports.append("Left axis deviation")
    if state.qrs_mv < 0.7:
        reports.append("Low QRS voltages in limb leads")
    if state.qrs_mv > 2.0:
        reports.append("Left ventricular hypertrophy")
    if state.t_mv < 0.15:
        reports.append("Nonspecific T wave abnormality")
    reports.append("Normal ECG" if len(reports) == 1 and reports[0] == "Sinus rhythm" else "Abnormal ECG")
    qrs_on = 200
    row: dict[str, Any] = {"subject_id": person.subject_id, "study_id": ecg.study_id, "cart_id": ecg.cart_id,
                           "ecg_time": ecg.time.strftime(TIME_FORMAT)}
    for i in range(18):
        row[f"report_{i}"] = reports[i] if i < len(reports) else None
    row.update({
        "bandwidth": "0.005-150 Hz", "filtering": "60 Hz notch Baseline filter", "rr_interval": int(round(rr)),
        "p_onset": 40, "p_end": 140, "qrs_onset": qrs_on, "qrs_end": qrs_on + int(round(state.qrs_ms)),
        "t_end": qrs_on + int(round(400 * math.sqrt(rr / 1000.0) + 20)), "p_axis": 60,
        "qrs_axis": int(round(state.axis_deg)), "t_axis": int(round(state.axis_deg)),
    })
    return row


def _diagnoses(sev: dict[str, float], rng: np.random.Generator) -> list[str]:
    codes = [ICD[k] for k in LABELS if sev[k] > 0.5]
    if len(codes) >= 2:
        codes.insert(0, "I5023")
    codes += [c for c in BACKGROUND_ICD if rng.random() < 0.2]
    return codes


def _tables(people: list[Subject], seed: int) -> dict[str, pd.DataFrame]:
    rng = np.random.default_rng([seed, 6])
    record_list, ext_icd, stays, chexpert, metadata, split = [], [], [], [], [], []
    for p in people:
        for stay in p.stays:
            stays.append({"subject_id": p.subject_id, "hadm_id": stay.hadm_id, "stay_id": stay.stay_id,
                          "intime": stay.intime.strftime(TIME_FORMAT), "outtime": stay.outtime.strftime(TIME_FORMAT),
                          "gender": p.gender, "race": p.race, "arrival_transport": stay.arrival,
                          "disposition": "ADMITTED" if stay.admitted
                          else str(rng.choice(["HOME", "HOME", "TRANSFER", "OTHER"]))})
        for ecg in p.ecgs:
            path = ecg_relative_path(p.subject_id, ecg.study_id)
            when = ecg.time.strftime(TIME_FORMAT)
            record_list.append({"subject_id": p.subject_id, "study_id": ecg.study_id, "file_name": str(ecg.study_id),
                                "ecg_time": when, "path": path})
            stay = ecg.stay
            diag = _diagnoses(ecg.severity, rng) if stay is not None else []
            hosp = diag if stay is not None and stay.admitted else []
            ext_icd.append({
                "file_name": EXT_ICD_PREFIX + path, "study_id": ecg.study_id, "subject_id": p.subject_id,
                "ecg_time": when, "ed_stay_id": stay.stay_id if stay else None,
                "ed_hadm_id": stay.hadm_id if stay else None, "hosp_hadm_id": stay.hadm_id if stay else None,
                "ed_diag_ed": str(diag[:2]), "ed_diag_hosp": str(hosp), "hosp_diag_hosp": str(hosp),
                "all_diag_hosp": str(hosp), "all_diag_all": str(hosp or diag[:2]), "gender": p.gender,
                "age": p.anchor_age + ecg.time.year - p.anchor_year, "anchor_year": p.anchor_year,
                "anchor_age": p.anchor_age, "dod": None, "ecg_no_within_stay": ecg.within_stay,
                "ecg_taken_in_ed": stay is not None, "ecg_taken_in_hosp": bool(stay and stay.admitted),
                "ecg_taken_in_ed_or_hosp": stay is not None, "fold": p.fold, "strat_fold": (p.fold * 7) % 20,
            })
        for study in p.cxrs:
            chexpert.append({"subject_id": p.subject_id, "study_id": study.study_id, **study.chexpert})
            t = study.time
            lateral = any(v not in FRONTAL_VIEWS for v in study.views)
            for view, dicom_id in zip(study.views, study.dicom_ids):
                rows, cols = synth_cxr.FRONTAL_SIZE if view in FRONTAL_VIEWS else synth_cxr.LATERAL_SIZE
                desc = ("CHEST (PORTABLE AP)" if "AP" in study.views
                        else "CHEST (PA AND LAT)" if lateral else "CHEST (PA)")
                metadata.append({
                    "dicom_id": dicom_id, "subject_id": p.subject_id, "study_id": study.study_id,
                    "PerformedProcedureStepDescription": desc, "ViewPosition": view, "Rows": rows, "Columns": cols,
                    "StudyDate": int(t.strftime("%Y%m%d")),
                    "StudyTime": f"{t.hour * 10000 + t.minute * 100 + t.second + t.microsecond / 1e6:.3f}",
                    "ProcedureCodeSequence_CodeMeaning": desc, "ViewCodeSequence_CodeMeaning": VIEW_MEANING[view],
                    "PatientOrientationCodeSequence_CodeMeaning": "Recumbent" if view == "AP" else "Erect",
                })
                split.append({"dicom_id": dicom_id, "study_id": study.study_id, "subject_id": p.subject_id,
                              "split": "test" if p.fold == 19 else "validate" if p.fold == 18 else "train"})
    ints = ["ed_stay_id", "ed_hadm_id", "hosp_hadm_id", "hadm_id"]

    def frame(rows: list[dict[str, Any]], columns: tuple[str, ...]) -> pd.DataFrame:
        df = pd.DataFrame(rows, columns=list(columns))
        for c in ints:
            if c in df:
                df[c] = df[c].astype("Int64")
        return df

    return {
        "record_list": frame(record_list, RECORD_LIST_COLUMNS),
        "ext_icd": frame(ext_icd, EXT_ICD_COLUMNS),
        "edstays": frame(stays, EDSTAYS_COLUMNS),
        "chexpert": frame(chexpert, CXR_CHEXPERT_COLUMNS),
        "metadata": frame(metadata, CXR_METADATA_COLUMNS),
        "split": frame(split, CXR_SPLIT_COLUMNS),
    }


def write_csv(df: pd.DataFrame, path: Path) -> None:
    """Write a table as CSV, gzip-compressed when the name ends in .gz (mtime 0: same bytes every run)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = df.to_csv(index=False, lineterminator="\n").encode("utf-8")
    if path.suffix == ".gz":
        buf = io.BytesIO()
        with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0) as gz:
            gz.write(text)
        text = buf.getvalue()
    path.write_bytes(text)


README = """SYNTHETIC COHORT - NOT CLINICAL DATA
====================================

Written by `trainer synth` ({generator}, seed {seed}, {subjects} subjects). Every person, time, ECG,
radiograph and label in this folder is made up by a program. It imitates the file layouts and CSV
schemas of four PhysioNet projects so that the CroMoTEX pipeline can run end to end without
credentialed data. Do not use it to draw any clinical conclusion.

  mimic-iv-ecg/          MIMIC-IV-ECG 1.0 layout: record_list.csv, machine_measurements.csv,
                         files/pNNNN/pNNNNNNNN/sNNNNNNNN/NNNNNNNN.{{hea,dat}} (WFDB, 12 leads, 500 Hz, 10 s)
  mimic-iv-ecg-ext-icd/  MIMIC-IV-ECG-Ext-ICD 1.0.1 layout: records_w_diag_icd10.csv
  mimic-iv-ed/           MIMIC-IV-ED 2.2 layout: ed/edstays.csv
  mimic-cxr-jpg/         MIMIC-CXR-JPG 2.x layout: mimic-cxr-2.0.0-{{chexpert,metadata,split}}.csv.gz,
                         files/pNN/pNNNNNNNN/sNNNNNNNN/<dicom_id>.jpg

Three findings (edema, pleural effusion, cardiomegaly) show in both modalities through shared
latent severities: clearly on the radiographs, weakly and noisily on the ECGs. See docs/cohort.md
in the project for the generative model.

Prepare it for training with:  trainer prepare --mimic-root {root_name} --out CACHE
"""


def _summary(people: list[Subject], subjects: int, seed: int) -> dict[str, Any]:
    studies = [c for p in people for c in p.cxrs]
    images = [v for c in studies for v in c.views]
    stays_with_ecg = {id(e.stay) for p in people for e in p.ecgs if e.stay is not None}
    pairable = [c for p in people for c in p.cxrs for v in c.views
                if v in FRONTAL_VIEWS
                and any(s.intime <= c.time <= s.outtime and id(s) in stays_with_ecg for s in p.stays)]
    rates = {}
    for label in LABELS:
        col = LABEL_COLUMNS[label]
        values = [c.chexpert[col] for c in pairable]
        rates[label] = {"positive": _share(values, 1.0), "uncertain": _share(values, -1.0),
                        "negative": _share(values, 0.0),
                        "blank": sum(math.isnan(v) for v in values) / max(1, len(values))}
    return {
        "generator": GENERATOR, "synthetic": True, "seed": seed, "subjects": subjects,
        "ed_stays": sum(len(p.stays) for p in people),
        "ecg_records": sum(len(p.ecgs) for p in people),
        "ecg_records_in_ed_stays": sum(e.stay is not None for p in people for e in p.ecgs),
        "cxr_studies": len(studies), "cxr_images": len(images),
        "cxr_frontal_images": sum(v in FRONTAL_VIEWS for v in images),
        "cxr_frontal_images_pairable": len(pairable),
        "pairable_label_rates": rates,
    }


def _share(values: list[float], target: float) -> float:
    return sum(v == target for v in values) / max(1, len(values))


def write_cohort(out: Path, subjects: int = 200, seed: int = 0, *, workers: int | None = None,
                 progress: bool = False, overwrite: bool = False) -> dict[str, Any]:
    """Write a synthetic cohort of ``subjects`` people under ``out``; returns its summary.

    ``out`` must not exist, unless it already holds the cohort these arguments make (returned as
    is) or ``overwrite`` is set and it holds a synthetic cohort (replaced). ``workers`` processes
    render the waveforms and images (default: 1 below 100 subjects, else the CPU count).
    """
    out = Path(out)
    if subjects < 1:
        raise SynthError(f"--subjects {subjects}: give at least 1 subject")
    marker = out / SUMMARY_FILE
    if out.exists():
        try:
            previous = json.loads(marker.read_text()) if marker.is_file() else None
        except ValueError:
            previous = None
        if not isinstance(previous, dict) or not previous.get("synthetic"):
            raise SynthError(f"{out}: exists and is not a synthetic cohort; choose a new --out folder")
        same = [previous.get(k) for k in ("generator", "seed", "subjects")] == [GENERATOR, seed, subjects]
        if same and not overwrite:
            return {**previous, "root": str(out), "reused": True, "seconds": 0.0}
        if not overwrite:
            raise SynthError(f"{out}: holds another synthetic cohort (seed {previous.get('seed')}, "
                             f"{previous.get('subjects')} subjects); choose a new --out folder or overwrite it")
    t0 = time.perf_counter()
    tmp = out.parent / f".{out.name}.partial"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    people = draw_cohort(subjects, seed)
    workers = (1 if subjects < 100 else os.cpu_count() or 1) if workers is None else max(1, workers)
    batches = [people[i::max(1, workers * 4)] for i in range(max(1, workers * 4))]
    batches = [b for b in batches if b]
    measurements: list[dict[str, Any]] = []
    with progress_bar(progress, len(people), "synthesising subjects") as advance:
        if workers == 1:
            for batch in batches:
                measurements += _render(str(tmp), seed, batch)
                advance(len(batch))
        else:
            pool = ProcessPoolExecutor(workers, mp_context=get_context("spawn"))
            try:
                for batch, rows in zip(batches, pool.map(_render, [str(tmp)] * len(batches), [seed] * len(batches),
                                                         batches)):
                    measurements += rows
                    advance(len(batch))
            except BaseException:  # Ctrl-C or a failure: stop at once; the partial folder is removed next time
                pool.shutdown(wait=False, cancel_futures=True)
                raise
            pool.shutdown()
    dirs = _dirs(tmp)
    tables = _tables(people, seed)
    write_csv(tables["record_list"], dirs["ecg"] / RECORD_LIST)
    mm = pd.DataFrame(measurements, columns=list(MACHINE_MEASUREMENTS_COLUMNS))
    write_csv(mm.sort_values(["subject_id", "ecg_time", "study_id"], kind="stable"), dirs["ecg"] / MACHINE_MEASUREMENTS)
    write_csv(tables["ext_icd"], dirs["ecg_ext_icd"] / EXT_ICD)
    write_csv(tables["edstays"], dirs["ed"] / EDSTAYS)
    write_csv(tables["chexpert"], dirs["cxr"] / CXR_CHEXPERT)
    write_csv(tables["metadata"], dirs["cxr"] / CXR_METADATA)
    write_csv(tables["split"], dirs["cxr"] / CXR_SPLIT)
    summary = _summary(people, subjects, seed)
    (tmp / "README.txt").write_text(README.format(generator=GENERATOR, seed=seed, subjects=subjects, root_name=out))
    (tmp / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n")
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return {**summary, "root": str(out), "reused": False, "seconds": round(time.perf_counter() - t0, 2)}
