"""The synthetic cohort's people and events: subjects, ED stays, ECGs, CXR studies and their labels.

Synthetic, not clinical. Each subject has a heart-failure propensity ``f`` and per-pathology
propensities ``u``; each episode (an ED stay, or an ECG/CXR outside any stay) draws its own acute
part ``e``. For pathology k the latent score is ``z = a_f f + a_u u_k + a_e e_k`` (unit variance)
and its severity ``clip(0.5 + (z - t_k) / 3, 0, 1)``, where ``t_k`` puts the severity above 0.5 in
about :data:`TARGET_RATES` of episodes. The same severity drives the X-ray (strongly) and the ECG
(weakly); the CheXpert label is a radiologist's reading of it (severity plus reading noise), with
uncertain (-1.0) calls near the threshold and blanks for findings not mentioned.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field
from statistics import NormalDist

import numpy as np

from trainer.labels import CHEXPERT_COLUMNS, LABEL_COLUMNS, LABELS

#: Share of episodes whose latent severity exceeds 0.5 (before reading noise and uncertain calls).
TARGET_RATES: dict[str, float] = {"edema": 0.24, "pleural_effusion": 0.28, "cardiomegaly": 0.32}
#: Loadings (shared heart-failure factor, subject propensity, episode) per pathology; unit variance.
LOADINGS: dict[str, tuple[float, float, float]] = {
    "cardiomegaly": (0.50, 0.75, 0.43),  # mostly chronic: a subject keeps a large heart
    "pleural_effusion": (0.50, 0.45, 0.74),
    "edema": (0.55, 0.35, 0.76),
}
READ_NOISE = 0.04  # radiologist's reading noise on the severity scale
UNCERTAIN_BAND = 0.05  # readings this close to 0.5 may be called uncertain (-1.0)
EPOCH = dt.datetime(2110, 1, 1)  # MIMIC shifts dates into 2100-2200

RACES = ("WHITE", "BLACK/AFRICAN AMERICAN", "HISPANIC/LATINO - PUERTO RICAN", "ASIAN", "OTHER", "UNKNOWN")
ARRIVALS = ("WALK IN", "AMBULANCE", "UNKNOWN", "OTHER")


def severity(z: float, label: str) -> float:
    """Severity in [0, 1] from a unit-variance latent score (0.5 at the target-rate quantile)."""
    t = NormalDist().inv_cdf(1.0 - TARGET_RATES[label])
    return float(np.clip(0.5 + (z - t) / 3.0, 0.0, 1.0))


@dataclass
class Ecg:
    time: dt.datetime
    severity: dict[str, float]
    stay: "Stay | None" = None
    study_id: int = 0
    cart_id: int = 0
    within_stay: int = -1


@dataclass
class CxrStudy:
    time: dt.datetime
    severity: dict[str, float]
    chexpert: dict[str, float]  # CheXpert column -> 1.0 / 0.0 / -1.0 / NaN
    views: list[str]
    study_id: int = 0
    dicom_ids: list[str] = field(default_factory=list)


@dataclass
class Stay:
    intime: dt.datetime
    outtime: dt.datetime
    severity: dict[str, float]
    admitted: bool
    arrival: str
    stay_id: int = 0
    hadm_id: int | None = None


@dataclass
class Subject:
    index: int
    gender: str
    anchor_age: int
    anchor_year: int
    race: str
    stays: list[Stay]
    ecgs: list[Ecg]
    cxrs: list[CxrStudy]
    subject_id: int = 0
    fold: int = 0


def _episode(f: float, u: dict[str, float], rng: np.random.Generator) -> dict[str, float]:
    out = {}
    for label in LABELS:
        af, au, ae = LOADINGS[label]
        out[label] = severity(af * f + au * u[label] + ae * rng.normal(), label)
    return out


def chexpert_reading(sev: dict[str, float], rng: np.random.Generator) -> dict[str, float]:
    """A radiologist's CheXpert row for an episode: 1.0, 0.0, -1.0 or blank (NaN) per column."""
    row = {c: math.nan for c in CHEXPERT_COLUMNS}
    for label in LABELS:
        read = sev[label] + rng.normal(0.0, READ_NOISE)
        if abs(read - 0.5) < UNCERTAIN_BAND and rng.random() < 0.6:
            value = -1.0
        elif read > 0.5:
            value = 1.0
        else:
            value = 0.0 if rng.random() < 0.5 else math.nan
        row[LABEL_COLUMNS[label]] = value
    if sev["edema"] > 0.45 or rng.random() < 0.08:
        row["Lung Opacity"] = 1.0
    if rng.random() < 0.12:
        row["Atelectasis"] = float(rng.choice([1.0, -1.0]))
    if rng.random() < 0.2:
        row["Support Devices"] = 1.0
    if sev["cardiomegaly"] > 0.55 and rng.random() < 0.5:
        row["Enlarged Cardiomediastinum"] = float(rng.choice([1.0, -1.0]))
    if rng.random() < 0.06:
        row["Pneumonia"] = -1.0
    if not any(v in (1.0, -1.0) for v in row.values()):
        row["No Finding"] = 1.0
    return row


def _minutes(rng: np.random.Generator, start: dt.datetime, end: dt.datetime) -> dt.datetime:
    """A whole-minute time strictly inside (start, end)."""
    span = (end - start).total_seconds() / 60.0
    return start + dt.timedelta(minutes=int(rng.uniform(0.05, 0.95) * span))


def _inside_any(t: dt.datetime, stays: list[Stay]) -> bool:
    return any(s.intime <= t <= s.outtime for s in stays)


def _cxr_views(rng: np.random.Generator) -> list[str]:
    frontal = "AP" if rng.random() < 0.55 else "PA"
    views = [frontal]
    if rng.random() < 0.08:
        views.append(frontal)  # a repeat frontal film
    if rng.random() < (0.75 if frontal == "PA" else 0.35):
        views.append("LATERAL" if rng.random() < 0.85 else "LL")
    return views


def _cxr_study(t: dt.datetime, sev: dict[str, float], rng: np.random.Generator) -> CxrStudy:
    t = t + dt.timedelta(seconds=int(rng.integers(0, 60)), milliseconds=int(rng.integers(0, 1000)))
    return CxrStudy(time=t, severity=sev, chexpert=chexpert_reading(sev, rng), views=_cxr_views(rng))


def draw_subject(index: int, rng: np.random.Generator) -> Subject:
    """One subject's stays, ECGs and CXR studies with their latent severities (no ids yet)."""
    f = rng.normal()
    u = {label: rng.normal() for label in LABELS}
    start = EPOCH + dt.timedelta(days=int(rng.integers(0, 365 * 80)), minutes=int(rng.integers(0, 1440)))
    stays: list[Stay] = []
    t = start
    for _ in range(int(rng.choice([1, 2, 3, 4], p=[0.3, 0.35, 0.22, 0.13]))):
        hours = float(np.clip(1.5 + rng.lognormal(math.log(6.0), 0.6), 2.0, 48.0))
        intime = t.replace(second=0)
        stays.append(Stay(intime=intime, outtime=intime + dt.timedelta(hours=hours, seconds=int(rng.integers(0, 60))),
                          severity=_episode(f, u, rng), admitted=bool(rng.random() < 0.4),
                          arrival=str(rng.choice(ARRIVALS, p=[0.5, 0.35, 0.1, 0.05]))))
        t = stays[-1].outtime + dt.timedelta(days=float(rng.uniform(20, 500)))
    ecgs: list[Ecg] = []
    cxrs: list[CxrStudy] = []
    for stay in stays:
        for k in range(int(rng.choice([0, 1, 2, 3], p=[0.07, 0.38, 0.35, 0.2]))):
            ecgs.append(Ecg(time=_minutes(rng, stay.intime, stay.outtime), severity=stay.severity, stay=stay))
        for _ in range(int(rng.choice([0, 1, 2, 3], p=[0.08, 0.42, 0.35, 0.15]))):
            cxrs.append(_cxr_study(_minutes(rng, stay.intime, stay.outtime), stay.severity, rng))
    # events outside any ED stay: outpatient ECGs, and CXRs hours (near misses) or weeks away
    for _ in range(int(rng.choice([0, 1, 2], p=[0.45, 0.4, 0.15]))):
        when = stays[int(rng.integers(len(stays)))].outtime + dt.timedelta(days=float(rng.uniform(2, 15)))
        if not _inside_any(when, stays):
            ecgs.append(Ecg(time=when.replace(second=0, microsecond=0), severity=_episode(f, u, rng)))
    for _ in range(int(rng.choice([0, 1, 2], p=[0.4, 0.45, 0.15]))):
        stay = stays[int(rng.integers(len(stays)))]
        near = rng.random() < 0.4
        when = stay.outtime + (dt.timedelta(hours=float(rng.uniform(1, 6))) if near
                               else dt.timedelta(days=float(rng.uniform(3, 15))))
        if not _inside_any(when, stays):
            sev = stay.severity if near else _episode(f, u, rng)
            cxrs.append(_cxr_study(when.replace(second=0, microsecond=0), sev, rng))
    ecgs.sort(key=lambda e: e.time)
    cxrs.sort(key=lambda c: c.time)
    for stay in stays:
        for k, ecg in enumerate(e for e in ecgs if e.stay is stay):
            ecg.within_stay = k
    return Subject(index=index, gender=str(rng.choice(["F", "M"])), anchor_age=int(rng.integers(25, 91)),
                   anchor_year=start.year, race=str(rng.choice(RACES, p=[0.6, 0.18, 0.07, 0.05, 0.06, 0.04])),
                   stays=stays, ecgs=ecgs, cxrs=cxrs)


def _unique_ids(rng: np.random.Generator, base: int, span: int, n: int) -> list[int]:
    return [int(v) for v in rng.choice(span, size=n, replace=False) + base] if n else []


def assign_ids(subjects: list[Subject], rng: np.random.Generator) -> None:
    """Give every subject, stay, admission, ECG and CXR study a unique MIMIC-style id (in place).

    Subject ids are 1NNNNNNN and sorted with the subjects; ECG studies 4NNNNNNN, CXR studies
    5NNNNNNN, ED stays 3NNNNNNN, admissions 2NNNNNNN; dicom ids five groups of 8 hex digits.
    """
    for s, sid in zip(subjects, sorted(_unique_ids(rng, 10_000_000, 9_000_000, len(subjects)))):
        s.subject_id = sid
        s.fold = int(rng.integers(0, 20))
    stays = [st for s in subjects for st in s.stays]
    for st, sid in zip(stays, _unique_ids(rng, 30_000_000, 9_999_999, len(stays))):
        st.stay_id = sid
    admitted = [st for st in stays if st.admitted]
    for st, hid in zip(admitted, _unique_ids(rng, 20_000_000, 9_999_999, len(admitted))):
        st.hadm_id = hid
    ecgs = [e for s in subjects for e in s.ecgs]
    for e, eid in zip(ecgs, _unique_ids(rng, 40_000_000, 9_999_999, len(ecgs))):
        e.study_id = eid
        e.cart_id = int(rng.integers(1000, 9999))
    cxrs = [c for s in subjects for c in s.cxrs]
    for c, cid in zip(cxrs, _unique_ids(rng, 50_000_000, 9_999_999, len(cxrs))):
        c.study_id = cid
        c.dicom_ids = ["-".join(f"{int(x):08x}" for x in rng.integers(0, 2**32, 5)) for _ in c.views]


def draw_cohort(subjects: int, seed: int) -> list[Subject]:
    """The whole cohort's structure, deterministic in (subjects, seed); subject i uses its own stream."""
    if subjects < 1:
        raise ValueError(f"subjects={subjects} must be at least 1")
    people = [draw_subject(i, np.random.default_rng([seed, 1, i])) for i in range(subjects)]
    assign_ids(people, np.random.default_rng([seed, 2]))
    return people
