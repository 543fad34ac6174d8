"""Synthetic 12-lead ECGs for the synthetic cohort (not clinical data).

A heart dipole (vectorcardiogram, VCG: x to the patient's left, y to the feet, z to the back) is a
sum of Gaussian waves per beat: a P wave of two atrial components (right atrium first, then the
left), septal Q, R, terminal S, an ST-segment wave and the T wave. The 8 independent leads (I, II,
V1-V6) are projected from the VCG with the Dower matrix and the other limb leads follow from I and II
(:func:`bedside.leads.assemble_canonical`), so the 12 leads are mutually consistent. Electrode noise,
baseline wander and mains hum are added to the independent leads before deriving.

Structure: :func:`draw_traits` gives a subject's own ECG before disease (wide between-subject spread:
the ECG is the noisy view); :func:`ecg_state` applies one recording's latent severities in [0, 1]
(the same ones that drive the X-ray, :mod:`trainer.synth_cxr`); :func:`synth_ecg` renders it.
The correlates, each from the clinical literature (sources and effect sizes in docs/cohort.md):

- pulmonary edema / heart failure: sinus tachycardia; atrial fibrillation in a severity-dependent
  share (irregular RR, no P wave, fibrillatory baseline); left-atrial abnormality (wider, notched P
  in II, deep terminal negative P in V1); QT prolongation; T flattening; QRS widening and, at high
  severity, an LBBB-like conduction in a share; limb-lead voltage loss (anasarca);
- pleural / pericardial effusion: low voltage of every wave (more in the limb leads), electrical
  alternans in a severity-dependent share, sinus tachycardia, T flattening;
- cardiomegaly / LV enlargement: LVH voltage (a larger, more posterior and leftward QRS vector:
  deep S in V1, tall R in V5/V6), left axis deviation, QRS widening, strain-type ST depression and
  T inversion in the lateral leads, left-atrial abnormality, QT prolongation.

Shape correlates (rates, rhythm, intervals, QRS width, T/QRS ratio, P morphology, alternans) survive
per-lead min-max scaling; voltage correlates (low voltage, LVH voltage) need an amplitude-keeping
input (``fixed_mv``).
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
_LIMB_ROWS = [INDEPENDENT_LEADS.index("I"), INDEPENDENT_LEADS.index("II")]

#: Effect sizes of the latent severities (each in [0, 1]) on the ECG; docs/cohort.md cites the
#: clinical source of each. Shares are probabilities per recording at severity 1 (see ecg_state).
EFFECTS: dict[str, float] = {
    "edema_hr_bpm": 20.0,           # sinus tachycardia
    "edema_af_share": 0.45,         # atrial fibrillation: share at edema severity 1 (quadratic rise)
    "edema_la": 0.8,                # left-atrial abnormality (0..1 scale)
    "edema_qtc_ms": 35.0,           # QT prolongation
    "edema_t_flat": 0.40,           # T amplitude lost (non-specific ST-T change)
    "edema_qrs_widen": 0.08,        # QRS duration, relative
    "edema_lbbb_share": 0.20,       # LBBB-like conduction: share above severity 0.5, rising to 1
    "edema_limb_voltage": 0.15,     # limb-lead voltage lost (anasarca)
    "effusion_voltage": 0.36,       # every wave's voltage lost
    "effusion_limb_voltage": 0.18,  # limb leads lose this much more
    "effusion_alternans_share": 0.45,  # electrical alternans: share above severity 0.4, rising to 1
    "effusion_hr_bpm": 8.0,        # sinus tachycardia
    "effusion_t_flat": 0.30,        # T flattening
    "cardio_voltage": 0.45,         # QRS vector magnitude gained (LVH voltage)
    "cardio_posterior": 0.25,       # QRS vector turned back (z): deeper S in V1
    "cardio_axis_deg": -15.0,       # left axis deviation
    "cardio_qrs_widen": 0.12,       # QRS duration, relative
    "cardio_strain": 0.6,           # strain ST-T (0..1 scale) at severity 1, above 0.5
    "cardio_la": 0.4,               # left-atrial abnormality
    "cardio_qtc_ms": 15.0,          # QT prolongation
    "cardio_lbbb_share": 0.12,      # LBBB-like conduction: share above severity 0.5, rising to 1
    "cardio_af_share": 0.08,        # atrial fibrillation (enlarged atria)
}


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
    p_mv: float = 0.12  # P vector magnitude
    pr_ms: float = 160.0  # PR interval (P onset to QRS onset)
    qtc_ms: float = 410.0  # Bazett-corrected QT
    limb_gain: float = 1.0  # limb-lead voltage relative to the dipole's (habitus, electrode placement)
    resp_depth: float = 0.04  # respiratory modulation of the wave amplitudes
    af_u: float = 1.0  # uniform draw: atrial fibrillation when below the state's AF share
    lbbb_u: float = 1.0  # uniform draw: LBBB-like conduction when below the state's share
    strain_gain: float = 0.6  # how strongly this heart shows strain ST-T when enlarged


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
        p_mv=float(0.12 * math.exp(rng.normal(0.0, 0.25))),
        pr_ms=float(np.clip(rng.normal(160.0, 18.0), 120.0, 210.0)),
        qtc_ms=float(np.clip(rng.normal(410.0, 18.0), 360.0, 460.0)),
        limb_gain=float(math.exp(rng.normal(0.0, 0.15))),
        resp_depth=float(rng.uniform(0.02, 0.08)),
        af_u=float(rng.uniform()),
        lbbb_u=float(rng.uniform()),
        strain_gain=float(rng.uniform(0.0, 1.0)),
    )


@dataclass(frozen=True)
class EcgState:
    """The ECG parameters of one recording: traits modified by the latent severities in [0, 1]."""

    hr_bpm: float  # mean ventricular rate
    qrs_mv: float  # QRS vector magnitude as recorded (after the voltage loss of effusion)
    axis_deg: float
    z_tilt: float
    qrs_ms: float
    t_mv: float  # T vector magnitude as recorded
    noise_mv: float
    wander_mv: float
    p_mv: float = 0.12  # P vector magnitude as recorded; 0 in atrial fibrillation
    pr_ms: float = 160.0
    qtc_ms: float = 410.0
    voltage: float = 1.0  # the factor every wave's voltage got (effusion); already in qrs_mv, t_mv, p_mv
    limb_gain: float = 1.0  # further factor of the limb leads
    la: float = 0.0  # left-atrial abnormality, 0..1
    af: bool = False  # atrial fibrillation
    lbbb: bool = False  # LBBB-like conduction
    strain: float = 0.0  # strain ST-T, 0..1
    alternans: float = 0.0  # QRS amplitude alternation, fraction (0 = none)
    resp_depth: float = 0.04


def _ramp(sev: float, start: float) -> float:
    """0 below ``start``, rising linearly to 1 at severity 1."""
    return float(np.clip((sev - start) / (1.0 - start), 0.0, 1.0))


def ecg_state(traits: EcgTraits, cardiomegaly: float, effusion: float, edema: float,
              rng: np.random.Generator) -> EcgState:
    """Apply the severities (each in [0, 1]) and a little per-recording variation to ``traits``."""
    e, c, p = edema, cardiomegaly, effusion
    k = EFFECTS
    af = traits.af_u < 0.03 + k["edema_af_share"] * e ** 2 + k["cardio_af_share"] * c
    lbbb = traits.lbbb_u < 0.02 + k["edema_lbbb_share"] * _ramp(e, 0.5) + k["cardio_lbbb_share"] * _ramp(c, 0.5)
    alternans = 0.0
    if rng.random() < k["effusion_alternans_share"] * _ramp(p, 0.4):
        alternans = float(rng.uniform(0.10, 0.30))
    hr = traits.hr_bpm + k["edema_hr_bpm"] * e + k["effusion_hr_bpm"] * p + rng.normal(0.0, 4.0)
    if af:
        hr *= rng.uniform(1.0, 1.25)  # the ventricular rate of AF is often faster
    voltage = (1.0 - k["effusion_voltage"] * p) * math.exp(rng.normal(0.0, 0.06))
    limb = traits.limb_gain * (1.0 - k["effusion_limb_voltage"] * p) * (1.0 - k["edema_limb_voltage"] * e)
    qrs_ms = traits.qrs_ms * (1.0 + k["cardio_qrs_widen"] * c) * (1.0 + k["edema_qrs_widen"] * e)
    if lbbb:
        qrs_ms = max(1.45 * qrs_ms, float(rng.uniform(125.0, 150.0)))
    la = float(np.clip(k["edema_la"] * e + k["cardio_la"] * c + rng.normal(0.0, 0.08), 0.0, 1.0))
    return EcgState(
        hr_bpm=float(np.clip(hr, 40.0, 170.0)),
        qrs_mv=traits.qrs_mv * (1.0 + k["cardio_voltage"] * c) * voltage,
        axis_deg=traits.axis_deg + k["cardio_axis_deg"] * c + rng.normal(0.0, 4.0),
        z_tilt=traits.z_tilt + k["cardio_posterior"] * c,
        qrs_ms=qrs_ms,
        t_mv=traits.t_mv * (1.0 - k["edema_t_flat"] * e) * (1.0 - k["effusion_t_flat"] * p) * voltage,
        noise_mv=traits.noise_mv,
        wander_mv=traits.wander_mv,
        p_mv=0.0 if af else traits.p_mv * voltage,
        pr_ms=traits.pr_ms,
        qtc_ms=traits.qtc_ms + k["edema_qtc_ms"] * e + k["cardio_qtc_ms"] * c,
        voltage=voltage,
        limb_gain=limb,
        la=la,
        af=bool(af),
        lbbb=bool(lbbb),
        strain=float(np.clip(k["cardio_strain"] * _ramp(c, 0.5) * traits.strain_gain, 0.0, 1.0)),
        alternans=alternans,
        resp_depth=traits.resp_depth,
    )


def _unit(axis_deg: float, z: float) -> np.ndarray:
    a = math.radians(axis_deg)
    return np.array([math.cos(a), math.sin(a), z])


def beat_times(hr_bpm: float, duration_s: float, rng: np.random.Generator, af: bool = False) -> np.ndarray:
    """R-peak times (s) covering [-1, duration + 1]: sinus rhythm with respiratory sinus arrhythmia,
    or the irregularly irregular RR of atrial fibrillation (independent RR, coefficient of variation
    about 0.2, none shorter than 0.28 s)."""
    rr = 60.0 / hr_bpm
    t = -rng.uniform(0.0, rr) - 0.5
    out = []
    while t < duration_s + 1.0:
        out.append(t)
        if af:
            t += max(0.28, rr * math.exp(rng.normal(-0.02, 0.2)))
        else:
            t += rr * (1.0 + 0.04 * math.sin(2 * math.pi * 0.25 * t) + rng.normal(0.0, 0.015))
    return np.asarray(out)


def _waves(t: np.ndarray, waves: list[tuple[float, float, np.ndarray]]) -> np.ndarray:
    """Sum of Gaussian waves (offset s, sd s, vector mV) on times ``t``: [3, len(t)]."""
    out = np.zeros((3, t.size))
    for offset, sd, vec in waves:
        out += vec[:, None] * np.exp(-0.5 * ((t - offset) / sd) ** 2)[None, :]
    return out


def beat_kernels(state: EcgState, fs_hz: float,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """One beat's P, QRS (with ST) and T parts of the heart vector, each [3, k] in mV on one time
    grid, and the index of the R peak within it."""
    rr = 60.0 / state.hr_bpm
    w = state.qrs_ms / 88.0
    qrs = state.qrs_mv
    direction = _unit(state.axis_deg, state.z_tilt + (0.4 if state.lbbb else 0.0))
    direction = direction / np.linalg.norm(direction)
    onset = 0.035 * w  # QRS onset before the R peak (s)
    if state.lbbb:
        # septum activated right to left (no septal q in I, V5, V6), a slow notched R, small S
        qrs_waves = [(-0.022 * w, 0.008 * w, 0.14 * qrs * np.array([0.6, 0.1, 0.5])),
                     (-0.012 * w, 0.0085 * w, 0.7 * qrs * direction),
                     (0.014 * w, 0.0085 * w, 0.7 * qrs * direction),
                     (0.030 * w, 0.008 * w, 0.12 * qrs * np.array([-0.45, -0.5, 0.8]))]
    else:
        qrs_waves = [(-0.022 * w, 0.007 * w, 0.16 * qrs * np.array([-0.6, 0.2, -1.0])),  # septal Q
                     (0.0, 0.0105 * w, qrs * direction),                                   # R
                     (0.024 * w, 0.009 * w, 0.32 * qrs * np.array([-0.45, -0.5, 0.8]))]   # terminal S
    # T: concordant with the QRS, turned against it by strain or a bundle-branch block (discordant)
    discordant = max(state.strain, 0.9 if state.lbbb else 0.0)
    normal_t = _unit(state.axis_deg + rng.normal(0, 12), -0.35)
    t_vec = state.t_mv * ((1.0 - discordant) * normal_t / np.linalg.norm(normal_t) - 1.3 * discordant * direction)
    t_sd = 0.045 + 0.1 * (state.qtc_ms / 1000.0 - 0.41)
    t_peak = max(0.10 + onset, state.qtc_ms / 1000.0 * math.sqrt(rr) - 2.0 * t_sd - onset)
    st_waves = [(onset + 0.07, 0.035, -0.12 * discordant * direction)] if discordant > 0 else []
    # P: right atrium (inferior, anterior) then left atrium (leftward, posterior), later, larger and
    # more posterior with left-atrial abnormality: a wide notched P in II, a deep terminal P in V1.
    # A longer P lengthens the PR interval (the PR segment stays >= 60 ms).
    la_sd = 0.020 + 0.006 * state.la
    la_delay = 0.030 + 0.035 * state.la
    p_dur = 0.036 + la_delay + 2.0 * la_sd
    p_on = -onset - max(state.pr_ms / 1000.0, p_dur + 0.06)
    ra_t = p_on + 0.036
    p = 0.65 * state.p_mv
    la_vec = (1.0 + 0.6 * state.la) * np.array([0.7, 0.5, 0.35 + 0.6 * state.la])
    p_waves = [(ra_t, 0.018, p * np.array([0.25, 0.9, -0.35])), (ra_t + la_delay, la_sd, p * la_vec)]
    before = -p_on + 0.12
    after = t_peak + 4.0 * t_sd
    t = np.arange(-int(before * fs_hz), int(after * fs_hz)) / fs_hz
    return _waves(t, p_waves), _waves(t, qrs_waves + st_waves), _waves(t, [(t_peak, t_sd, t_vec)]), int(before * fs_hz)


def fibrillatory_waves(n: int, fs_hz: float, rng: np.random.Generator) -> np.ndarray:
    """Atrial fibrillatory waves [3, n] in mV: 4-9 Hz, wandering in rate and size, along an atrial
    axis that projects mostly on V1 and the inferior leads."""
    t = np.arange(n) / fs_hz
    out = np.zeros(n)
    for _ in range(2):
        f0 = rng.uniform(4.5, 8.0)
        drift = np.cumsum(rng.normal(0.0, 0.08, n)) / math.sqrt(fs_hz)  # rate wanders (Hz), kept in 4-9 Hz
        phase = 2 * np.pi * np.cumsum(np.clip(f0 + drift, 4.0, 9.0)) / fs_hz + rng.uniform(0, 2 * np.pi)
        swell = 1.0 + 0.4 * np.sin(2 * np.pi * rng.uniform(0.1, 0.4) * t + rng.uniform(0, 2 * np.pi))
        amp = rng.uniform(0.015, 0.05) * swell
        out += amp * np.sin(phase)
    return np.array([0.15, 0.55, -0.8])[:, None] * out[None, :]


def vcg(state: EcgState, n: int, fs_hz: float, rng: np.random.Generator) -> np.ndarray:
    """The heart vector [3, n] in mV: the beat's parts placed at each R peak (to the sample), the
    QRS scaled beat by beat (respiration, alternans), the P wave only in sinus rhythm."""
    p_k, qrs_k, t_k, r_index = beat_kernels(state, fs_hz, rng)
    k = qrs_k.shape[1]
    out = np.zeros((3, n + 2 * k))
    peaks = beat_times(state.hr_bpm, n / fs_hz, rng, af=state.af)
    resp = 1.0 + state.resp_depth * np.sin(2 * np.pi * 0.25 * peaks + rng.uniform(0, 2 * np.pi))
    sign = np.where(np.arange(len(peaks)) % 2 == 0, 1.0, -1.0)
    qrs_gain = resp * (1.0 + state.alternans * sign) * (1.0 + rng.normal(0.0, 0.015, len(peaks)))
    t_gain = resp * (1.0 + 0.3 * state.alternans * sign)
    for peak, gq, gt in zip(peaks, qrs_gain, t_gain):
        first = int(round(peak * fs_hz)) - r_index + k
        if 0 <= first and first + k <= out.shape[1]:
            seg = out[:, first:first + k]
            seg += gq * qrs_k
            seg += gt * t_k
            if state.p_mv > 0:
                seg += p_k
    out = out[:, k:k + n]
    if state.af:
        out += state.voltage * fibrillatory_waves(n, fs_hz, rng)
    return out


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
    independent[_LIMB_ROWS] *= state.limb_gain
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
