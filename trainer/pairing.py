"""The paper's ECG-CXR pairing and the subject-level split, on the tables of :mod:`trainer.mimic`.

Pairing (CroMoTEX, with two improvements):

1. CXR images: frontal views only (``ViewPosition`` AP or PA) with a CheXpert row for their study.
2. ECG candidates: ECGs of the same subject linked by MIMIC-IV-ECG-Ext-ICD to an ED stay
   (``ed_stay_id``) whose MIMIC-IV-ED ``intime <= cxr_time <= outtime`` (bounds included).
3. Among the candidates, the ECG nearest in time to the CXR is taken (ties: earlier ECG, then the
   lower study id). The public code takes the first unmatched candidate in file order; nearest is
   deterministic and keeps the two recordings closest to one clinical state.
4. ``gap_hours = (cxr_time - ecg_time)`` in hours is recorded; ``max_gap_hours`` drops pairs
   whose |gap| is larger (the paper has no such limit).

Every image is accounted for in a funnel of counts (how many were lateral, unlabelled, outside
any ED stay, in a stay without ECGs, beyond the gap limit), so nothing leaves the cohort unseen.

Split: the subjects with at least one pair are sorted, shuffled with ``numpy.random.default_rng(seed)``
and cut 70/10/20 into train/val/test, so each subject is in exactly one split.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from trainer.mimic import FRONTAL_VIEWS

SPLITS: tuple[str, ...] = ("train", "val", "test")
SPLIT_FRACTIONS: tuple[float, ...] = (0.7, 0.1, 0.2)

PAIR_COLUMNS: tuple[str, ...] = (
    "subject_id", "ecg_study_id", "ecg_path", "ecg_time", "stay_id", "cxr_study_id", "dicom_id", "cxr_time",
    "view", "gap_hours",
)


def pair_cohort(ecgs: pd.DataFrame, stays: pd.DataFrame, cxrs: pd.DataFrame,
                max_gap_hours: float | None = None) -> tuple[pd.DataFrame, dict[str, int]]:
    """Pair each usable frontal CXR image with one ECG; returns (pairs, funnel counts).

    ``ecgs``: subject_id, ecg_study_id, ecg_time, ecg_path, stay_id (see
    :func:`trainer.mimic.read_ecg_records`); ``stays``: subject_id, stay_id, intime, outtime;
    ``cxrs``: subject_id, cxr_study_id, dicom_id, view, cxr_time, cxr_path, has_labels and the raw
    label columns. Pairs keep :data:`PAIR_COLUMNS`, ``cxr_path`` and the label columns, sorted by
    subject, CXR time and dicom id.
    """
    if max_gap_hours is not None and not max_gap_hours > 0:
        raise ValueError(f"max_gap_hours={max_gap_hours} must be positive (or None for no limit)")
    funnel: dict[str, int] = {"cxr_images": len(cxrs)}
    unique = cxrs.drop_duplicates("dicom_id")
    funnel["duplicate_dicom_id"] = len(cxrs) - len(unique)
    frontal = unique[unique["view"].isin(FRONTAL_VIEWS)]
    funnel["not_frontal"] = len(unique) - len(frontal)
    labelled = frontal[frontal["has_labels"]]
    funnel["no_chexpert_row"] = len(frontal) - len(labelled)
    timed = labelled[labelled["cxr_time"].notna()]
    funnel["cxr_time_unreadable"] = len(labelled) - len(timed)

    good_stays = stays.dropna(subset=["subject_id", "stay_id", "intime", "outtime"])
    funnel["ed_stays"] = len(stays)
    funnel["ed_stays_without_times"] = len(stays) - len(good_stays)
    linked = ecgs.dropna(subset=["stay_id", "subject_id"])
    funnel["ecg_records"] = len(ecgs)
    funnel["ecg_records_in_ed_stays"] = len(linked)
    usable_ecgs = linked[linked["ecg_time"].notna()]
    funnel["ecg_time_unreadable"] = len(linked) - len(usable_ecgs)

    # CXR -> the ED stays of its subject that contain its time
    in_stay = timed.merge(good_stays, on="subject_id", how="inner")
    in_stay = in_stay[(in_stay["intime"] <= in_stay["cxr_time"]) & (in_stay["cxr_time"] <= in_stay["outtime"])]
    funnel["not_in_ed_stay"] = len(timed) - in_stay["dicom_id"].nunique()
    # -> the ECGs linked to those stays
    cand = in_stay.merge(usable_ecgs, on=["subject_id", "stay_id"], how="inner")
    funnel["ed_stay_without_ecg"] = in_stay["dicom_id"].nunique() - cand["dicom_id"].nunique()
    cand = cand.assign(gap_hours=(cand["cxr_time"] - cand["ecg_time"]).dt.total_seconds() / 3600.0)
    if max_gap_hours is not None:
        kept = cand[cand["gap_hours"].abs() <= max_gap_hours]
        funnel["beyond_max_gap"] = cand["dicom_id"].nunique() - kept["dicom_id"].nunique()
        cand = kept
    else:
        funnel["beyond_max_gap"] = 0
    cand = cand.assign(abs_gap=cand["gap_hours"].abs())
    cand = cand.sort_values(["dicom_id", "abs_gap", "ecg_time", "ecg_study_id"], kind="stable")
    pairs = cand.drop_duplicates("dicom_id", keep="first")
    label_cols = [c for c in cxrs.columns if c not in
                  ("subject_id", "cxr_study_id", "dicom_id", "view", "cxr_time", "cxr_path", "has_labels")]
    pairs = pairs[[*PAIR_COLUMNS, "cxr_path", *label_cols]]
    pairs = pairs.sort_values(["subject_id", "cxr_time", "dicom_id"], kind="stable").reset_index(drop=True)
    funnel["paired"] = len(pairs)
    funnel["subjects_paired"] = int(pairs["subject_id"].nunique())
    accounted = sum(funnel[k] for k in ("duplicate_dicom_id", "not_frontal", "no_chexpert_row", "cxr_time_unreadable",
                                        "not_in_ed_stay", "ed_stay_without_ecg", "beyond_max_gap", "paired"))
    if accounted != funnel["cxr_images"]:  # a bug, never data: every image lands in exactly one bucket
        raise AssertionError(f"pairing funnel does not add up: {funnel}")
    return pairs, funnel


def split_subjects(subject_ids: Sequence[int], seed: int,
                   fractions: Sequence[float] = SPLIT_FRACTIONS) -> dict[int, str]:
    """Assign each subject to train/val/test: sorted, shuffled by ``seed``, cut by ``fractions``."""
    if len(fractions) != len(SPLITS) or abs(sum(fractions) - 1.0) > 1e-9 or min(fractions) < 0:
        raise ValueError(f"split fractions {list(fractions)} must be {len(SPLITS)} non-negative numbers summing to 1")
    ids = np.array(sorted({int(s) for s in subject_ids}), dtype=np.int64)
    np.random.default_rng(seed).shuffle(ids)
    n = len(ids)
    cut1 = int(n * fractions[0])
    cut2 = int(n * (fractions[0] + fractions[1]))
    out: dict[int, str] = {}
    for name, part in zip(SPLITS, (ids[:cut1], ids[cut1:cut2], ids[cut2:])):
        out.update({int(s): name for s in part})
    return out
