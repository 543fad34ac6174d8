"""Crude ECG features and the logistic-regression floor that every deep model must beat.

:func:`crude_features` maps windows [N, 12, n] (the model input after any scaling, or conditioned
mV) to [N, F] float32 features named in :data:`FEATURE_NAMES`; :func:`fit_feature_baseline` fits one
logistic regression per label on standardised features and returns the logits of the windows to
evaluate. They measure how much label information an input carries in forms a cardiologist would
read: rate and rhythm, intervals, voltage, wave ratios, P waves and beat-to-beat variation.

How a window is read (each step vectorised over windows where it can be):

1. Each lead's isoelectric level is its median (the conditioned signal's baseline is removed; a
   min-max scaled lead keeps its median at the baseline, wherever the range puts it).
2. QRS complexes are found on a 12-lead "QRS energy" signal: the absolute first difference of each
   lead divided by its own 99th percentile (so mV, ``fixed_mv`` and per-lead min-max inputs give the
   same detections), summed over leads and smoothed over 40 ms; peaks at least 0.25 s apart (at most
   240 bpm) above 40 % of the typical QRS peak. One lead alone would miss beats in 3KG's masked
   stretches; the sum over 12 leads does not (``bedside.heart_rate.detect_qrs`` is the single-lead
   detector of the monitor, for a lead in mV).
3. Beats whose window (-0.30 s, +0.60 s) fits are stacked; their median is the beat template.
4. Features come from the RR intervals, the template and the beats themselves (see
   :data:`FEATURE_NAMES`). Amplitude features are in the input's units (mV, or the scaled range);
   ratios and times do not depend on them.

Robustness: a feature that cannot be measured (fewer than 3 beats for the RR features, 2 whole
beats for the template, 4 for alternans; a flat window; non-finite input) takes its value in
:data:`FALLBACK` (a typical normal value for rates, times and ratios, so a failure is not read as
disease; 0 for amplitudes, whose units depend on the input) and is counted:
:func:`crude_features_report` returns the counts, :func:`crude_features` warns with
:class:`FeatureWarning` when any window failed. The output never holds NaN or infinity.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from scipy.ndimage import uniform_filter1d
from scipy.signal import find_peaks

from bedside.leads import CANONICAL_LEADS, LEAD_INDEX
from bedside.preprocess import DEFAULT_RECIPE

#: Beat window around the detected QRS (s): before, after.
BEAT_WINDOW_S = (0.30, 0.60)
#: Shortest RR accepted by the detector (s): 240 bpm.
MIN_RR_S = 0.25
#: A QRS energy peak counts as a beat above this share of the typical QRS peak.
DETECT_FRACTION = 0.4
#: QRS width: where the template's QRS energy falls below this share of its peak (half maximum: at
#: 100 Hz with 40 ms smoothing it tracks QRS duration best, r = 0.9 on the synthetic ECGs, about 30 ms short).
QRS_EDGE_FRACTION = 0.5
#: QT = R-to-T-peak + this (s): about 40 ms from QRS onset to R, about 90 ms from T peak to T end.
QT_AFTER_T_PEAK_S = 0.13
#: P width: the span of P samples above this share of the P peak (both humps of a notched P).
P_EDGE_FRACTION = 0.3
LATERAL_LEADS = ("I", "aVL", "V5", "V6")

#: Feature -> value used when it cannot be measured (a typical normal value). Units in the names.
FALLBACK: dict[str, float] = {
    "hr_bpm": 75.0,  # 60 / median RR
    "rr_cv": 0.03,  # sd / mean of RR: atrial fibrillation is irregularly irregular
    "rr_rmssd_rel": 0.03,  # root mean square of successive RR differences / mean RR
    "qrs_width_ms": 90.0,  # template QRS energy above QRS_EDGE_FRACTION of its peak
    **{f"qrs_pp_{lead}": 0.0 for lead in CANONICAL_LEADS},  # template QRS peak-to-peak (input units)
    "sokolow_lyon": 0.0,  # S in V1 + max(R in V5, R in V6) (input units; mV: Sokolow & Lyon 1949)
    "cornell": 0.0,  # R in aVL + S in V3 (input units; mV: Casale et al. 1985)
    "t_qrs_ratio": 0.25,  # |T| / QRS peak-to-peak, median over leads
    "t_qrs_lateral": 0.2,  # signed T / QRS peak-to-peak, mean over I, aVL, V5, V6 (negative: inverted)
    "st_lateral": 0.0,  # ST level 80-120 ms after the QRS peak / QRS peak-to-peak, lateral mean
    "qtc_proxy_ms": 410.0,  # (R-to-T-peak time + 130 ms) / sqrt(RR in s): a Bazett-corrected QT proxy
    "p_qrs_ratio_II": 0.1,  # P amplitude (signed, largest deviation) / QRS peak-to-peak in II
    "p_width_II_ms": 90.0,  # first to last P sample above P_EDGE_FRACTION of its peak in II
    "p_terminal_V1": 0.0,  # most negative late-P value in V1 / QRS peak-to-peak in V1
    "p_consistency": 0.5,  # template P energy / (template + beat-to-beat residual): low without P waves
    "qrs_alternans": 0.0,  # |mean(even beats) - mean(odd beats)| / mean of per-beat QRS amplitude
    "qrs_amp_cv": 0.05,  # sd / mean of per-beat QRS amplitude
    "axis_deg": 45.0,  # atan2(net QRS in aVF, net QRS in I): a frontal axis proxy
    "net_qrs_I": 0.3,  # net QRS area / (peak-to-peak x QRS window) in I
    "net_qrs_aVF": 0.3,  # the same in aVF
    "residual_rel": 0.05,  # beat-to-beat residual RMS / QRS peak-to-peak, median over leads
    "n_beats": 12.0,  # beats found in the window
}
FEATURE_NAMES: tuple[str, ...] = tuple(FALLBACK)
_FALLBACK_ROW = np.array([FALLBACK[name] for name in FEATURE_NAMES], dtype=np.float64)
_COL = {name: i for i, name in enumerate(FEATURE_NAMES)}
_LATERAL = [LEAD_INDEX[n] for n in LATERAL_LEADS]


class FeatureWarning(UserWarning):
    """Some windows' features could not be measured and took their :data:`FALLBACK` value."""


def qrs_energy(x: np.ndarray, fs_hz: float) -> np.ndarray:
    """[N, n] 12-lead QRS energy of windows [N, L, n]: |first difference| per lead over its 99th
    percentile, summed over leads, smoothed over 40 ms. Independent of any per-lead affine scaling."""
    d = np.abs(np.diff(x, axis=-1, prepend=x[..., :1]))
    scale = np.percentile(d, 99, axis=-1, keepdims=True)
    d = np.where(scale > 0, d / np.where(scale > 0, scale, 1.0), 0.0).sum(axis=1)
    return uniform_filter1d(d, max(1, int(round(0.04 * fs_hz))), axis=-1, mode="nearest")


def detect_beats(energy: np.ndarray, fs_hz: float) -> np.ndarray:
    """Sample indices of QRS complexes in one window's QRS energy (1-D)."""
    peaks, props = find_peaks(energy, distance=max(1, int(round(MIN_RR_S * fs_hz))), height=0.0)
    if len(peaks) == 0:
        return peaks
    heights = props["peak_heights"]
    typical = np.percentile(heights, 80)
    return peaks[heights > DETECT_FRACTION * typical]


def _edge(profile: np.ndarray, start: int, step: int, level: float) -> float:
    """Fractional index where ``profile`` first falls below ``level`` walking from ``start`` by ``step``."""
    i = start
    while 0 <= i + step < len(profile) and profile[i + step] >= level:
        i += step
    j = i + step
    if not 0 <= j < len(profile):
        return float(i)
    a, b = profile[i], profile[j]
    frac = (a - level) / (a - b) if a != b else 0.0
    return float(i + step * frac)


def _window_features(x: np.ndarray, base: np.ndarray, energy: np.ndarray, fs_hz: float,
                     out: np.ndarray, failed: np.ndarray) -> None:
    """Fill ``out`` [F] for one window ``x`` [L, n]; set ``failed`` [F] where the fallback was used."""
    n = x.shape[-1]
    beats = detect_beats(energy, fs_hz)
    out[_COL["n_beats"]] = len(beats)
    if len(beats) >= 3:
        rr = np.diff(beats) / fs_hz
        out[_COL["hr_bpm"]] = 60.0 / np.median(rr)
        out[_COL["rr_cv"]] = rr.std() / rr.mean()
        out[_COL["rr_rmssd_rel"]] = math.sqrt(np.mean(np.diff(rr) ** 2)) / rr.mean() if len(rr) >= 2 else 0.0
        rr_s = float(np.median(rr))
    else:
        for name in ("hr_bpm", "rr_cv", "rr_rmssd_rel"):
            failed[_COL[name]] = True
        rr_s = 60.0 / FALLBACK["hr_bpm"]
    pre, post = (int(round(s * fs_hz)) for s in BEAT_WINDOW_S)
    whole = beats[(beats >= pre) & (beats + post <= n)]
    if len(whole) < 2:
        template_names = [k for k in FEATURE_NAMES if k not in ("hr_bpm", "rr_cv", "rr_rmssd_rel", "n_beats")]
        for name in template_names:
            failed[_COL[name]] = True
        return
    idx = whole[:, None] + np.arange(-pre, post)[None, :]
    seg = x[:, idx].transpose(1, 0, 2) - base[None, :, None]  # [beats, L, pre + post]
    tpl = np.median(seg, axis=0)  # [L, T]
    r = pre

    def span(a_s: float, b_s: float) -> slice:
        return slice(max(0, r + int(round(a_s * fs_hz))), min(tpl.shape[1], r + int(round(b_s * fs_hz)) + 1))

    # QRS: width from the template's energy, amplitudes in a window around the peak
    e_tpl = np.median(energy[idx], axis=0)
    near = span(-0.05, 0.05)
    peak = near.start + int(np.argmax(e_tpl[near]))
    level = QRS_EDGE_FRACTION * e_tpl[peak]
    out[_COL["qrs_width_ms"]] = 1000.0 * (_edge(e_tpl, peak, 1, level) - _edge(e_tpl, peak, -1, level)) / fs_hz
    q = span(-0.08, 0.10)
    qrs = tpl[:, q]
    hi, lo = qrs.max(axis=1), qrs.min(axis=1)
    pp = hi - lo
    for i, lead in enumerate(CANONICAL_LEADS):
        out[_COL[f"qrs_pp_{lead}"]] = pp[i]
    li = LEAD_INDEX
    out[_COL["sokolow_lyon"]] = max(0.0, -lo[li["V1"]]) + max(0.0, hi[li["V5"]], hi[li["V6"]])
    out[_COL["cornell"]] = max(0.0, hi[li["aVL"]]) + max(0.0, -lo[li["V3"]])
    safe_pp = np.where(pp > 0, pp, np.inf)
    net = qrs.sum(axis=1) / (safe_pp * qrs.shape[1])
    out[_COL["net_qrs_I"]] = net[li["I"]]
    out[_COL["net_qrs_aVF"]] = net[li["aVF"]]
    out[_COL["axis_deg"]] = math.degrees(math.atan2(qrs[li["aVF"]].sum(), qrs[li["I"]].sum()))

    # T wave and ST segment: the T window ends before the next beat's P wave
    t_win = span(0.12, min(0.55, 0.6 * rr_s - 0.04))
    t_seg = tpl[:, t_win]
    if t_seg.shape[1] >= 2:
        at = np.argmax(np.abs(t_seg), axis=1)
        t_signed = t_seg[np.arange(len(at)), at]
        out[_COL["t_qrs_ratio"]] = float(np.median(np.abs(t_signed) / safe_pp))
        out[_COL["t_qrs_lateral"]] = float(np.mean(t_signed[_LATERAL] / safe_pp[_LATERAL]))
        t_env = (np.abs(t_seg) / safe_pp[:, None]).sum(axis=0)
        t_peak_s = (t_win.start + int(np.argmax(t_env)) - r) / fs_hz
        out[_COL["qtc_proxy_ms"]] = 1000.0 * (t_peak_s + QT_AFTER_T_PEAK_S) / math.sqrt(rr_s)
    else:
        for name in ("t_qrs_ratio", "t_qrs_lateral", "qtc_proxy_ms"):
            failed[_COL[name]] = True
    st = tpl[:, span(0.08, 0.12)].mean(axis=1)
    out[_COL["st_lateral"]] = float(np.mean(st[_LATERAL] / safe_pp[_LATERAL]))

    # P wave: between the previous T wave and the QRS
    p_win = span(-min(0.30, 0.6 * rr_s), -0.06)
    ii, v1 = li["II"], li["V1"]
    p_ii = tpl[ii, p_win]
    if p_ii.size >= 3:
        k = int(np.argmax(np.abs(p_ii)))
        out[_COL["p_qrs_ratio_II"]] = p_ii[k] / safe_pp[ii]
        above = np.flatnonzero(np.abs(p_ii) >= P_EDGE_FRACTION * abs(p_ii[k]))  # a notch stays inside
        out[_COL["p_width_II_ms"]] = 1000.0 * (above[-1] - above[0] + 1) / fs_hz
        late = tpl[v1, span(-0.16, -0.06)]
        out[_COL["p_terminal_V1"]] = min(0.0, float(late.min())) / safe_pp[v1]
        p_tpl = tpl[:, p_win]
        resid = seg[:, :, p_win] - p_tpl[None]
        signal = float(np.mean((p_tpl - p_tpl.mean(axis=1, keepdims=True)) ** 2))
        noise = float(np.mean(resid ** 2))
        out[_COL["p_consistency"]] = signal / (signal + noise) if signal + noise > 0 else FALLBACK["p_consistency"]
    else:
        for name in ("p_qrs_ratio_II", "p_width_II_ms", "p_terminal_V1", "p_consistency"):
            failed[_COL[name]] = True

    # beat to beat: per-beat QRS amplitude relative to the lead's typical one, median over leads
    beat_pp = seg[:, :, q].max(axis=2) - seg[:, :, q].min(axis=2)  # [beats, L]
    typical = np.median(beat_pp, axis=0)
    ok = typical > 0
    amp = np.median(beat_pp[:, ok] / typical[ok], axis=1) if ok.any() else np.ones(len(whole))
    if len(amp) >= 4 and amp.mean() > 0:
        out[_COL["qrs_alternans"]] = abs(amp[0::2].mean() - amp[1::2].mean()) / amp.mean()
        out[_COL["qrs_amp_cv"]] = amp.std() / amp.mean()
    else:
        failed[_COL["qrs_alternans"]] = failed[_COL["qrs_amp_cv"]] = True
    resid_all = seg - tpl[None]
    rms = np.sqrt(np.mean(resid_all ** 2, axis=(0, 2)))
    out[_COL["residual_rel"]] = float(np.median(rms / safe_pp))


def crude_features_report(x: np.ndarray, fs_hz: float) -> tuple[np.ndarray, dict[str, int]]:
    """:func:`crude_features` and, per feature, how many windows took the fallback value."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 3 or x.shape[1] != len(CANONICAL_LEADS):
        raise ValueError(f"expected windows [N, {len(CANONICAL_LEADS)}, n], got shape {x.shape}")
    if not fs_hz > 0:
        raise ValueError(f"fs_hz={fs_hz} must be positive")
    n_win = x.shape[0]
    out = np.tile(_FALLBACK_ROW, (n_win, 1))
    failed = np.zeros((n_win, len(FEATURE_NAMES)), dtype=bool)
    bad = ~np.isfinite(x).all(axis=(1, 2))
    x = np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
    if n_win:
        base = np.median(x, axis=-1)
        energy = qrs_energy(x, fs_hz)
        for w in range(n_win):
            _window_features(x[w], base[w], energy[w], fs_hz, out[w], failed[w])
    failed[bad] = True  # non-finite input: every feature is suspect, whatever was measured
    failed |= ~np.isfinite(out)
    out = np.where(failed, _FALLBACK_ROW[None, :], out)
    counts = {name: int(c) for name, c in zip(FEATURE_NAMES, failed.sum(axis=0)) if c}
    return out.astype(np.float32), counts


def crude_features(x: np.ndarray, fs_hz: float) -> np.ndarray:
    """Crude ECG features [N, F] float32 (:data:`FEATURE_NAMES`) of windows [N, 12, n] at ``fs_hz``.

    ``x`` is the model input (any scaling) or conditioned mV, leads in canonical order. Never NaN:
    unmeasurable features take :data:`FALLBACK` values, and a :class:`FeatureWarning` says how many.
    """
    out, counts = crude_features_report(x, fs_hz)
    if counts:
        worst = ", ".join(f"{k} {v}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1])[:4])
        warnings.warn(f"crude_features: fallback values used in {len(x)} windows ({worst}); see "
                      f"trainer.features.FALLBACK", FeatureWarning, stacklevel=2)
    return out


def fit_feature_baseline(train_x: np.ndarray, train_y: np.ndarray, eval_xs: list) -> list[np.ndarray]:
    """Logistic regression per label on standardised crude features; logits of each eval set [N, K].

    ``train_x`` and each of ``eval_xs`` are feature matrices [N, F] from :func:`crude_features`, or
    windows [N, 12, n] at the default recipe's rate (100 Hz), whose features are computed here.
    ``train_y`` [N, K] in {0, 1}. Standardisation (mean, sd) is fitted on the training features only;
    each label gets ``LogisticRegression(C=1.0, max_iter=1000, class_weight=None)``. A label with
    one class in training gets logit 0 everywhere (with a :class:`FeatureWarning`).
    """
    from sklearn.linear_model import LogisticRegression  # imported on use: the bedside never needs it

    def as_features(a: np.ndarray) -> np.ndarray:
        a = np.asarray(a)
        return crude_features(a, DEFAULT_RECIPE.fs_hz) if a.ndim == 3 else np.asarray(a, dtype=np.float64)

    f_train = as_features(train_x)
    y = np.asarray(train_y)
    if y.ndim == 1:
        y = y[:, None]
    if f_train.ndim != 2 or len(f_train) != len(y):
        raise ValueError(f"train_x gives features {f_train.shape}, train_y has shape {y.shape}: need [N, F] and [N, K]")
    mean = f_train.mean(axis=0)
    sd = f_train.std(axis=0)
    sd = np.where(sd > 0, sd, 1.0)
    evals = [(as_features(e) - mean) / sd for e in eval_xs]
    z_train = (f_train - mean) / sd
    out = [np.zeros((len(e), y.shape[1]), dtype=np.float32) for e in evals]
    for k in range(y.shape[1]):
        yk = (y[:, k] > 0.5).astype(int)
        if yk.min() == yk.max():
            warnings.warn(f"fit_feature_baseline: label {k} has one class in training; its logits are 0",
                          FeatureWarning, stacklevel=2)
            continue
        model = LogisticRegression(C=1.0, max_iter=1000, class_weight=None).fit(z_train, yk)
        for o, e in zip(out, evals):
            o[:, k] = model.decision_function(e)
    return out
