"""Reading the MIMIC cohort tables: one ingestion path for PhysioNet downloads and synthetic cohorts.

A cohort root holds the four PhysioNet projects side by side::

    ROOT/mimic-iv-ecg/              record_list.csv, machine_measurements.csv, files/pNNNN/pNNNNNNNN/sNNNNNNNN/NNNNNNNN.{hea,dat}
    ROOT/mimic-iv-ecg-ext-icd/      records_w_diag_icd10.csv
    ROOT/mimic-iv-ed/               ed/edstays.csv
    ROOT/mimic-cxr-jpg/             mimic-cxr-2.0.0-{chexpert,metadata,split}.csv.gz, files/pNN/pNNNNNNNN/sNNNNNNNN/<dicom_id>.jpg

The layout PhysioNet's ``wget -r`` produces (``physionet.org/files/<project>/<version>/``) is
accepted as is: a project folder holding a single version folder (``mimic-iv-ecg/1.0``) is entered,
and ``mimic-iv-ecg-ext-icd-labels`` is accepted for the Ext-ICD project. Every table may be plain
``.csv`` or ``.csv.gz``. Each sub-root can be given explicitly instead (:meth:`MimicRoots.discover`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from trainer.labels import CHEXPERT_COLUMNS, LABEL_COLUMNS, LABELS

#: Project folder names under a cohort root (what ``trainer synth`` writes), with accepted aliases.
PROJECT_DIRS: dict[str, tuple[str, ...]] = {
    "ecg": ("mimic-iv-ecg",),
    "ecg_ext_icd": ("mimic-iv-ecg-ext-icd", "mimic-iv-ecg-ext-icd-labels"),
    "ed": ("mimic-iv-ed",),
    "cxr": ("mimic-cxr-jpg",),
}
RECORD_LIST = "record_list.csv"
MACHINE_MEASUREMENTS = "machine_measurements.csv"
EXT_ICD = "records_w_diag_icd10.csv"
EDSTAYS = "ed/edstays.csv"
CXR_CHEXPERT = "mimic-cxr-2.0.0-chexpert.csv.gz"
CXR_METADATA = "mimic-cxr-2.0.0-metadata.csv.gz"
CXR_SPLIT = "mimic-cxr-2.0.0-split.csv.gz"
#: The table that marks each project's folder.
MARKER_TABLE: dict[str, str] = {"ecg": RECORD_LIST, "ecg_ext_icd": EXT_ICD, "ed": EDSTAYS, "cxr": CXR_METADATA}
#: Ext-ICD's ``file_name`` is record_list's ``path`` under this prefix.
EXT_ICD_PREFIX = "mimic-iv-ecg-diagnostic-electrocardiogram-matched-subset-1.0/"

RECORD_LIST_COLUMNS = ("subject_id", "study_id", "file_name", "ecg_time", "path")
EXT_ICD_COLUMNS = (
    "file_name", "study_id", "subject_id", "ecg_time", "ed_stay_id", "ed_hadm_id", "hosp_hadm_id",
    "ed_diag_ed", "ed_diag_hosp", "hosp_diag_hosp", "all_diag_hosp", "all_diag_all", "gender", "age",
    "anchor_year", "anchor_age", "dod", "ecg_no_within_stay", "ecg_taken_in_ed", "ecg_taken_in_hosp",
    "ecg_taken_in_ed_or_hosp", "fold", "strat_fold",
)
EDSTAYS_COLUMNS = ("subject_id", "hadm_id", "stay_id", "intime", "outtime", "gender", "race",
                   "arrival_transport", "disposition")
CXR_METADATA_COLUMNS = (
    "dicom_id", "subject_id", "study_id", "PerformedProcedureStepDescription", "ViewPosition", "Rows",
    "Columns", "StudyDate", "StudyTime", "ProcedureCodeSequence_CodeMeaning", "ViewCodeSequence_CodeMeaning",
    "PatientOrientationCodeSequence_CodeMeaning",
)
CXR_CHEXPERT_COLUMNS = ("subject_id", "study_id", *CHEXPERT_COLUMNS)
CXR_SPLIT_COLUMNS = ("dicom_id", "study_id", "subject_id", "split")
MACHINE_MEASUREMENTS_COLUMNS = (
    "subject_id", "study_id", "cart_id", "ecg_time", *(f"report_{i}" for i in range(18)), "bandwidth",
    "filtering", "rr_interval", "p_onset", "p_end", "qrs_onset", "qrs_end", "t_end", "p_axis", "qrs_axis", "t_axis",
)
#: Frontal views kept by the pairing (MIMIC-CXR ``ViewPosition``).
FRONTAL_VIEWS: tuple[str, ...] = ("AP", "PA")
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"


class CohortLayoutError(Exception):
    """A cohort root or table is missing or malformed; the message names it and the fix."""


def find_table(directory: Path, name: str) -> Path:
    """``directory/name`` as ``.csv`` or ``.csv.gz`` (whichever exists), else CohortLayoutError."""
    base = name[:-3] if name.endswith(".gz") else name
    for candidate in (directory / base, directory / (base + ".gz")):
        if candidate.is_file():
            return candidate
    raise CohortLayoutError(f"{directory / base}(.gz): no such table. Point the matching root option at the "
                            "folder of your PhysioNet download that holds it (see docs/cohort.md).")


def _has_marker(directory: Path, key: str) -> bool:
    try:
        find_table(directory, MARKER_TABLE[key])
    except CohortLayoutError:
        return False
    return True


def _project_dir(root: Path, key: str) -> Path:
    """Find a project's folder under ``root``: the folder itself, or its single/highest version folder."""
    tried: list[str] = []
    for name in PROJECT_DIRS[key]:
        folder = root / name
        tried.append(str(folder))
        if _has_marker(folder, key):
            return folder
        if folder.is_dir():
            versions = sorted((p for p in folder.iterdir() if p.is_dir() and _has_marker(p, key)),
                              key=lambda p: [int(x) if x.isdigit() else x for x in p.name.split(".")])
            if versions:
                return versions[-1]
    raise CohortLayoutError(
        f"{root}: no {key} project found (looked for {MARKER_TABLE[key]} in {', '.join(tried)} and their "
        f"version folders). Use the layout in docs/cohort.md, or give this project's folder explicitly.")


@dataclass(frozen=True)
class MimicRoots:
    """The folders of the four projects (each holding its marker table)."""

    ecg: Path
    ecg_ext_icd: Path
    ed: Path
    cxr: Path

    @classmethod
    def discover(cls, root: Path | None = None, *, ecg: Path | None = None, ecg_ext_icd: Path | None = None,
                 ed: Path | None = None, cxr: Path | None = None) -> "MimicRoots":
        """Find each project under ``root`` unless given explicitly; raises CohortLayoutError."""
        given = {"ecg": ecg, "ecg_ext_icd": ecg_ext_icd, "ed": ed, "cxr": cxr}
        found: dict[str, Path] = {}
        for key, path in given.items():
            if path is not None:
                path = Path(path)
                if not _has_marker(path, key):
                    raise CohortLayoutError(f"{path}: the {key} folder must hold {MARKER_TABLE[key]}(.gz)")
                found[key] = path
            elif root is None:
                raise CohortLayoutError(f"no root given for the {key} project: pass the cohort root or its folder")
            else:
                found[key] = _project_dir(Path(root), key)
        return cls(**{k: v.resolve() for k, v in found.items()})

    def to_dict(self) -> dict[str, str]:
        return {"ecg": str(self.ecg), "ecg_ext_icd": str(self.ecg_ext_icd), "ed": str(self.ed), "cxr": str(self.cxr)}


def read_table(path: Path, required: tuple[str, ...] | list[str], **kwargs) -> pd.DataFrame:
    """Read a CSV(.gz) checking that ``required`` columns are present (CohortLayoutError otherwise)."""
    try:
        header = pd.read_csv(path, nrows=0).columns
    except Exception as exc:
        raise CohortLayoutError(f"{path}: not a readable CSV table: {exc}") from exc
    missing = [c for c in required if c not in header]
    if missing:
        raise CohortLayoutError(f"{path}: missing columns {missing}; found {list(header)}. "
                                "Is this the right file of the right PhysioNet project?")
    try:
        return pd.read_csv(path, usecols=list(required), **kwargs)
    except Exception as exc:
        raise CohortLayoutError(f"{path}: cannot read: {exc}") from exc


def _ids(series: pd.Series) -> pd.Series:
    """Integer ids that may be written as floats ('31234567.0') or blank, as nullable Int64."""
    return pd.to_numeric(series, errors="coerce").round().astype("Int64")


def _times(series: pd.Series) -> pd.Series:
    return pd.to_datetime(series, format="ISO8601", errors="coerce")


def read_ecg_records(roots: MimicRoots) -> pd.DataFrame:
    """ECGs with their ED stay (from Ext-ICD) and record path (from record_list.csv, relative).

    Columns: subject_id, ecg_study_id, ecg_time, ecg_path, stay_id (Int64, NA outside ED stays).
    """
    icd = read_table(find_table(roots.ecg_ext_icd, EXT_ICD),
                     ["file_name", "study_id", "subject_id", "ecg_time", "ed_stay_id"], dtype={"file_name": str})
    rl = read_table(find_table(roots.ecg, RECORD_LIST), ["study_id", "path"], dtype={"path": str})
    df = icd.merge(rl, on="study_id", how="left")
    # Ext-ICD's file_name is record_list's path under a prefix; use it when record_list lacks the study
    fallback = df["file_name"].astype(str).str.replace(r"^.*?(?=files/)", "", regex=True)
    return pd.DataFrame({
        "subject_id": _ids(df["subject_id"]),
        "ecg_study_id": _ids(df["study_id"]),
        "ecg_time": _times(df["ecg_time"]),
        "ecg_path": df["path"].fillna(fallback).astype(str),
        "stay_id": _ids(df["ed_stay_id"]),
    })


def read_ed_stays(roots: MimicRoots) -> pd.DataFrame:
    """ED stays: subject_id, stay_id, intime, outtime (datetimes; NaT where unparseable)."""
    df = read_table(find_table(roots.ed, EDSTAYS), ["subject_id", "stay_id", "intime", "outtime"])
    return pd.DataFrame({"subject_id": _ids(df["subject_id"]), "stay_id": _ids(df["stay_id"]),
                         "intime": _times(df["intime"]), "outtime": _times(df["outtime"])})


def cxr_study_time(study_date: pd.Series, study_time: pd.Series) -> pd.Series:
    """StudyDate (YYYYMMDD) + StudyTime (HHMMSS.fff, leading zeros possibly lost) as datetimes."""
    date = pd.to_datetime(pd.to_numeric(study_date, errors="coerce").astype("Int64").astype(str),
                          format="%Y%m%d", errors="coerce")
    t = pd.to_numeric(study_time, errors="coerce")
    seconds = (t // 10000) * 3600 + ((t // 100) % 100) * 60 + (t % 100)
    return date + pd.to_timedelta(seconds.round(3), unit="s")


def cxr_relative_path(subject_id: int, study_id: int, dicom_id: str) -> str:
    """``files/pNN/pNNNNNNNN/sNNNNNNNN/<dicom_id>.jpg`` (pNN: first two digits of the subject)."""
    s = str(int(subject_id))
    return f"files/p{s[:2]}/p{s}/s{int(study_id)}/{dicom_id}.jpg"


def read_cxr_images(roots: MimicRoots) -> pd.DataFrame:
    """Every CXR image with its view, time, path (relative to the CXR root) and raw CheXpert labels.

    Columns: subject_id, cxr_study_id, dicom_id, view, cxr_time, cxr_path, has_labels, then one raw
    column per label named as in CheXpert (NaN for blank or when the study has no CheXpert row).
    """
    meta = read_table(find_table(roots.cxr, CXR_METADATA),
                      ["dicom_id", "subject_id", "study_id", "ViewPosition", "StudyDate", "StudyTime"],
                      dtype={"dicom_id": str, "ViewPosition": str})
    label_cols = [LABEL_COLUMNS[k] for k in LABELS]
    chex = read_table(find_table(roots.cxr, CXR_CHEXPERT), ["subject_id", "study_id", *label_cols])
    chex = chex.drop_duplicates(["subject_id", "study_id"]).assign(has_labels=True)
    blank = meta[["dicom_id", "subject_id", "study_id"]].isna().any(axis=1)
    if blank.any():
        raise CohortLayoutError(f"{find_table(roots.cxr, CXR_METADATA)}: {int(blank.sum())} rows with a blank "
                                "dicom_id, subject_id or study_id; is the file complete? Download it again.")
    df = meta.merge(chex, on=["subject_id", "study_id"], how="left")
    paths = [cxr_relative_path(s, st, d) for s, st, d in zip(df["subject_id"], df["study_id"], df["dicom_id"])]
    out = pd.DataFrame({
        "subject_id": _ids(df["subject_id"]),
        "cxr_study_id": _ids(df["study_id"]),
        "dicom_id": df["dicom_id"].astype(str),
        "view": df["ViewPosition"].fillna("").astype(str).str.strip().str.upper(),
        "cxr_time": cxr_study_time(df["StudyDate"], df["StudyTime"]),
        "cxr_path": paths,
        "has_labels": df["has_labels"].fillna(False).astype(bool),
    })
    for col in label_cols:
        out[col] = pd.to_numeric(df[col], errors="coerce").astype(np.float64)
    return out
