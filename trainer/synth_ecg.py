"""Synthetic 12-lead ECGs for the synthetic cohort (not clinical data).

A heart dipole (vectorcardiogram, VCG: x to the patient's left, y to the feet, z to the back) is a
sum of Gaussian waves per beat (P, septal Q, R, terminal S, T). The 8 independent leads (I, II,
V1-V6) are projected from the VCG with the Dower matrix and the other limb leads follow from I and
II (:func:`bedside.leads.assemble_canonical`), so the 12 leads are mutually consistent. Electrode
noise, baseline wander and mains hum are added to the independent leads before deriving.

Pathology reaches the ECG only weakly, through the same latent severities that drive the X-ray
(:mod:`trainer.synth_cxr`), and under large between-subject variation:
cardiomegaly raises QRS voltage, widens the QRS and turns the axis left; pleural effusion lowers
all voltages; pulmonary edema raises the heart rate and flattens T waves.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import wfdb

from bedside.leads import CANONICAL_LEADS, INDEPENDENT_LEADS, assemble_canonical

FS_HZ = 500  # MIMIC-IV-ECG: 500 Hz, 10 s, 5000 samples
N_SAMPLES = 5000
ADC_GAIN_PER_MV = 200.0  # MIMIC-IV-ECG headers: "16 200.0(0)/mV"
SIGNAL_FORMAT = "16"

#: Dower matrix, VCG (x, y, z) in mV to the independent leads, rows in INDEPENDENT_LEADS order
#: (I, II, V1..V6). Dower et al. 1988, as used by 3KG.
DOWER: np.ndarray = np.array([
    [0.632, -0.235, 0.059],   # I
    [0.235, 1.066, -0.132],   # II
    [-0.515, 0.157, -0.917],  # V1
    [0.044, 0.164, -1.387],   # V2
    [0.882, 0.098, -1.277],   # V3
    [1.213, 0.127, -0.601],   # V4
    [1.125, 0.127, -0.086],   # V5
    [0.831, 0.076, 0.230],    # V6
])


@dataclass(frozen=True)
class EcgTraits:
    """A subject's own ECG, before disease: the between-subject variation that hides pathology."""

    hr_bpm: float  # resting heart rate
    qrs_mv: float  # QRS vector magnitude
    axis_deg: float  # frontal QRS axis (0 = lead I, +90 = inferior)
    z_tilt: float  # posterior component of the QRS vector, relative to its magnitude
    qrs_ms: float  # QRS duration
    t_mv: float  # T vector magnitude
    noise_mv: float  # electrode noise (standard deviation)
    wander_mv: float  # baseline wander amplitude


def draw_traits(rng: np.random.Generator) -> EcgTraits:
    """Subject-level ECG traits (wide spread on purpose: the ECG is the noisy view)."""
    return EcgTraits(
        hr_bpm=float(np.clip(rng.normal(72.0, 11.0), 48.0, 110.0)),
        qrs_mv=float(1.25 * math.exp(rng.normal(0.0, 0.28))),
        axis_deg=float(rng.normal(45.0, 25.0)),
        z_tilt=float(rng.normal(0.35, 0.12)),
        qrs_ms=float(np.clip(rng.normal(88.0, 9.0), 68.0, 118.0)),
        t_mv=float(0.25 * math.exp(rng.normal(0.0, 0.25))),
        noise_mv=float(rng.uniform(0.005, 0.03)),
        wander_mv=float(rng.uniform(0.03, 0.25)),
    )


@dataclass(frozen=True)
class EcgState:
    """The ECG parameters of one recording: traits modified by the latent severities in [0, 1]."""

    hr_bpm: float
    qrs_mv: float
    axis_deg: float
    z_tilt: float
    qrs_ms: float
    t_mv: float
    noise_mv: float
    wander_mv: float


def ecg_state(traits: EcgTraits, cardiomegaly: float, effusion: float, edema: float,
              rng: np.random.Generator) -> EcgState:
    """Apply the severities (each in [0, 1]) and a little per-recording variation to ``traits``."""
    voltage = (1.0 + 0.45 * cardiomegaly) * (1.0 - 0.40 * effusion) * math.exp(rng.normal(0.0, 0.06))
    hr = traits.hr_bpm + 28.0 * edema + 6.0 * effusion + rng.normal(0.0, 4.0)
    return EcgState(
        hr_bpm=float(np.clip(hr, 40.0, 160.0)),
        qrs_mv=traits.qrs_mv * voltage,
        axis_deg=traits.axis_deg - 35.0 * cardiomegaly + rng.normal(0.0, 4.0),
        z_tilt=traits.z_tilt,
        qrs_ms=traits.qrs_ms * (1.0 + 0.22 * cardiomegaly),
        t_mv=traits.t_mv * (1.0 - 0.35 * edema) * (1.0 - 0.30 * effusion),
        noise_mv=traits.noise_mv,
        wander_mv=traits.wander_mv,
    )


def _unit(axis_deg: float, z: float) -> np.ndarray:
    a = math.radians(axis_deg)
    return np.array([math.cos(a), math.sin(a), z])


def beat_times(hr_bpm: float, duration_s: float, rng: np.random.Generator) -> np.ndarray:
    """R-peak times (s) covering [-1, duration + 1] with respiratory sinus arrhythmia."""
    rr = 60.0 / hr_bpm
    t = -rng.uniform(0.0, rr) - 0.5
    out = []
    while t < duration_s + 1.0:
        out.append(t)
        t += rr * (1.0 + 0.04 * math.sin(2 * math.pi * 0.25 * t) + rng.normal(0.0, 0.015))
    return np.asarray(out)


def beat_kernel(state: EcgState, fs_hz: float, rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """One beat of the heart vector, [3, k] in mV, and the index of its R peak within the kernel."""
    rr = 60.0 / state.hr_bpm
    w = state.qrs_ms / 88.0
    qrs = state.qrs_mv
    axis = state.axis_deg
    # (offset from R in s, width sd in s, vector in mV)
    waves = [
        (-0.16, 0.022, 0.12 * _unit(60.0, -0.1)),                               # P
        (-0.022 * w, 0.007 * w, 0.16 * qrs * np.array([-0.6, 0.2, -1.0])),     # septal Q
        (0.0, 0.0105 * w, qrs * _unit(axis, state.z_tilt)),                      # R
        (0.024 * w, 0.009 * w, 0.32 * qrs * np.array([-0.45, -0.5, 0.8])),     # terminal S
        (0.40 * math.sqrt(rr) - 0.10, 0.045, state.t_mv * _unit(axis + rng.normal(0, 12), -0.35)),  # T
    ]
    before, after = 0.3, 0.40 * math.sqrt(rr) + 0.15
    t = np.arange(-int(before * fs_hz), int(after * fs_hz)) / fs_hz
    kernel = np.zeros((3, t.size))
    for offset, sd, vec in waves:
        kernel += vec[:, None] * np.exp(-0.5 * ((t - offset) / sd) ** 2)[None, :]
    return kernel, int(before * fs_hz)


def vcg(state: EcgState, n: int, fs_hz: float, rng: np.random.Generator) -> np.ndarray:
    """The heart vector [3, n] in mV: the beat kernel placed at each R peak (to the sample)."""
    kernel, r_index = beat_kernel(state, fs_hz, rng)
    k = kernel.shape[1]
    out = np.zeros((3, n + 2 * k))
    for peak in beat_times(state.hr_bpm, n / fs_hz, rng):
        first = int(round(peak * fs_hz)) - r_index + k
        if 0 <= first and first + k <= out.shape[1]:
            out[:, first:first + k] += kernel
    return out[:, k:k + n]


def noise(n_leads: int, n: int, fs_hz: float, state: EcgState, rng: np.random.Generator) -> np.ndarray:
    """Electrode noise, baseline wander (0.05-0.5 Hz) and 60 Hz mains hum, [n_leads, n] in mV."""
    t = np.arange(n) / fs_hz
    white = rng.normal(0.0, state.noise_mv, (n_leads, n))
    f = rng.uniform(0.05, 0.5, (n_leads, 2, 1))
    phase = rng.uniform(0, 2 * np.pi, (n_leads, 2, 1))
    amp = state.wander_mv * rng.uniform(0.2, 1.0, (n_leads, 2, 1))
    wander = (amp * np.sin(2 * np.pi * f * t[None, None, :] + phase)).sum(axis=1)
    hum = rng.uniform(0.0, 0.02, (n_leads, 1)) * np.sin(2 * np.pi * 60.0 * t + rng.uniform(0, 2 * np.pi))
    return white + wander + hum


def synth_ecg(state: EcgState, rng: np.random.Generator, n: int = N_SAMPLES,
              fs_hz: float = FS_HZ) -> np.ndarray:
    """A 12-lead ECG [12, n] float32 in mV, canonical lead order (I, II, III, aVR, aVF, aVL, V1-V6)."""
    independent = DOWER @ vcg(state, n, fs_hz, rng)
    independent = independent + noise(len(INDEPENDENT_LEADS), n, fs_hz, state, rng)
    return assemble_canonical(dict(zip(INDEPENDENT_LEADS, independent)))


def ecg_record_dir(ecg_root: Path, subject_id: int, study_id: int) -> Path:
    """``files/pNNNN/pNNNNNNNN/sNNNNNNNN`` under the MIMIC-IV-ECG root (pNNNN: first 4 digits)."""
    s = str(subject_id)
    return ecg_root / "files" / f"p{s[:4]}" / f"p{s}" / f"s{study_id}"


_WRITE_FIELDS: tuple[list[str], dict[str, list[int]]] | None = None


def _record(study_id: int, x_mv: np.ndarray, when: dt.datetime, fs_hz: float) -> wfdb.Record:
    n_leads = len(CANONICAL_LEADS)
    limit = 32000 / ADC_GAIN_PER_MV  # keep clear of the format-16 range and its NaN code
    record = wfdb.Record(
        record_name=str(study_id), fs=fs_hz, units=["mV"] * n_leads, sig_name=list(CANONICAL_LEADS),
        p_signal=np.clip(np.asarray(x_mv, dtype=np.float64).T, -limit, limit),
        fmt=[SIGNAL_FORMAT] * n_leads, adc_gain=[ADC_GAIN_PER_MV] * n_leads, baseline=[0] * n_leads,
        base_time=when.time(), base_date=when.date(),
    )
    record.set_d_features(do_adc=True)  # digital samples, initial values and checksums
    return record


def write_ecg(record_dir: Path, study_id: int, x_mv: np.ndarray, when: dt.datetime,
              fs_hz: float = FS_HZ) -> None:
    """Write ``x_mv`` [12, n] as WFDB ``<study_id>.{hea,dat}`` like MIMIC-IV-ECG (fmt 16, 200/mV).

    The bytes are those of ``wfdb.wrsamp`` (a test checks it). wrsamp re-derives the list of header
    fields and re-validates every field on each call (about 60 ms); every record here has the same
    fields, so the first record goes through the full ``set_defaults``/``wrheader`` path and later
    ones reuse its field list with wfdb's own header and signal-file writers (about 10 ms).
    """
    global _WRITE_FIELDS
    record_dir.mkdir(parents=True, exist_ok=True)
    record = _record(study_id, x_mv, when, fs_hz)
    if _WRITE_FIELDS is None:
        record.set_defaults()
        record.wrsamp(write_dir=str(record_dir))
        _WRITE_FIELDS = record.get_write_fields()
        return
    n_leads = len(CANONICAL_LEADS)
    record.file_name = [f"{study_id}.dat"] * n_leads
    record.adc_res = [16] * n_leads
    record.adc_zero = [0] * n_leads
    record.block_size = [0] * n_leads
    rec_fields, sig_fields = _WRITE_FIELDS
    record.wr_header_file(list(rec_fields), dict(sig_fields), str(record_dir))
    record.wr_dat_files(expanded=False, write_dir=str(record_dir))


def write_ecg_wrsamp(record_dir: Path, study_id: int, x_mv: np.ndarray, when: dt.datetime,
                     fs_hz: float = FS_HZ) -> None:
    """The same record through ``wfdb.wrsamp`` itself (the reference for :func:`write_ecg`)."""
    record_dir.mkdir(parents=True, exist_ok=True)
    n_leads = len(CANONICAL_LEADS)
    record = _record(study_id, x_mv, when, fs_hz)
    wfdb.wrsamp(str(study_id), fs=fs_hz, units=["mV"] * n_leads, sig_name=list(CANONICAL_LEADS),
                p_signal=record.p_signal, fmt=[SIGNAL_FORMAT] * n_leads, adc_gain=[ADC_GAIN_PER_MV] * n_leads,
                baseline=[0] * n_leads, base_time=when.time(), base_date=when.date(), write_dir=str(record_dir))
