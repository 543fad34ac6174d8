"""Crude ECG features (trainer.features): shapes, never NaN, known heart rates, scaling invariance, the floor."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from bedside.leads import CANONICAL_LEADS
from bedside.preprocess import DEFAULT_RECIPE, Recipe, condition, scale
from trainer import synth_ecg
from trainer.features import (
    FALLBACK, FEATURE_NAMES, FeatureWarning, crude_features, crude_features_report, fit_feature_baseline,
)

FS = DEFAULT_RECIPE.fs_hz
N = DEFAULT_RECIPE.window_samples
#: Features that per-lead min-max scaling cannot change (times, rhythm, ratios within a lead).
SHAPE_FEATURES = ("hr_bpm", "rr_cv", "rr_rmssd_rel", "qrs_width_ms", "t_qrs_ratio", "t_qrs_lateral", "st_lateral",
                  "qtc_proxy_ms", "p_qrs_ratio_II", "p_terminal_V1", "qrs_alternans", "qrs_amp_cv", "net_qrs_I",
                  "net_qrs_aVF", "residual_rel", "n_beats")


def pulse_train(hr_bpm: float, n: int = N, fs_hz: float = FS) -> np.ndarray:
    """[12, n] mV: a narrow biphasic QRS-like pulse every 60 / hr_bpm s in every lead, each lead its own gain."""
    t = np.arange(n) / fs_hz
    x = np.zeros(n)
    for r in np.arange(0.35, n / fs_hz - 0.2, 60.0 / hr_bpm):
        x += np.exp(-0.5 * ((t - r) / 0.012) ** 2) - 0.3 * np.exp(-0.5 * ((t - r - 0.03) / 0.012) ** 2)
        x += 0.2 * np.exp(-0.5 * ((t - r - 0.25) / 0.04) ** 2)  # a T wave
    gains = np.linspace(0.4, 1.6, len(CANONICAL_LEADS))[:, None]
    return (gains * x[None, :]).astype(np.float32)


def generated(seed: int, cardiomegaly: float = 0.2, effusion: float = 0.2,
              edema: float = 0.2) -> tuple[np.ndarray, float]:
    """A conditioned synthetic window (mV, 100 Hz) and its state's heart rate."""
    rng = np.random.default_rng(seed)
    state = synth_ecg.ecg_state(synth_ecg.draw_traits(rng), cardiomegaly, effusion, edema, rng)
    return condition(synth_ecg.synth_ecg(state, rng), synth_ecg.FS_HZ), state.hr_bpm


def test_names_shapes_and_dtype() -> None:
    assert len(set(FEATURE_NAMES)) == len(FEATURE_NAMES) == len(FALLBACK)
    assert all(f"qrs_pp_{lead}" in FEATURE_NAMES for lead in CANONICAL_LEADS)
    x = np.stack([generated(s)[0] for s in range(3)])
    f = crude_features(x, FS)
    assert f.shape == (3, len(FEATURE_NAMES)) and f.dtype == np.float32 and np.isfinite(f).all()
    assert crude_features(x[:0], FS).shape == (0, len(FEATURE_NAMES))
    with pytest.raises(ValueError, match=r"\[N, 12, n\]"):
        crude_features(x[0], FS)


@pytest.mark.parametrize("hr", [45.0, 75.0, 120.0, 170.0])
def test_known_heart_rate_of_a_pulse_train(hr: float) -> None:
    f = crude_features(pulse_train(hr)[None], FS)[0]
    assert f[FEATURE_NAMES.index("hr_bpm")] == pytest.approx(hr, abs=0.02 * hr + 1.0)
    assert f[FEATURE_NAMES.index("rr_cv")] < 0.03  # regular


def test_heart_rate_of_generated_records_at_every_scaling() -> None:
    windows, rates = zip(*(generated(s) for s in range(8)))
    x = np.stack(windows)
    col = FEATURE_NAMES.index("hr_bpm")
    for scaling in ("fixed_mv", "minmax"):
        f = crude_features(scale(x, Recipe(scaling=scaling)), FS)
        assert np.abs(f[:, col] - np.asarray(rates)).max() < 6.0, scaling  # respiratory arrhythmia, AF: mean vs median


def test_shape_features_survive_per_lead_min_max() -> None:
    x = np.stack([generated(s, 0.5, 0.5, 0.5)[0] for s in range(6)])
    mv = crude_features(x, FS)
    mm = crude_features(scale(x, Recipe(scaling="minmax")), FS)
    cols = [FEATURE_NAMES.index(n) for n in SHAPE_FEATURES]
    assert np.allclose(mv[:, cols], mm[:, cols], rtol=1e-3, atol=1e-3)
    amp = FEATURE_NAMES.index("qrs_pp_II")
    assert not np.allclose(mv[:, amp], mm[:, amp])  # amplitude is what min-max takes away


@pytest.mark.parametrize("case", ["zeros", "constant", "noise", "nan", "short", "one_beat"])
def test_never_nan_and_fallbacks_are_counted(case: str) -> None:
    rng = np.random.default_rng(0)
    x = {"zeros": np.zeros((2, 12, N)), "constant": np.full((2, 12, N), 0.7),
         "noise": rng.normal(0, 0.1, (2, 12, N)), "nan": np.stack([pulse_train(70.0)] * 2),
         "short": np.stack([pulse_train(70.0, n=40)] * 2), "one_beat": np.stack([pulse_train(70.0)[:, :120]] * 2)}[case]
    if case == "nan":
        x[0, 3, 100:200] = np.nan
    f, counts = crude_features_report(x.astype(np.float32), FS)
    assert np.isfinite(f).all()
    if case == "noise":
        return  # noise has "beats"; whatever is measured must only be finite
    assert counts, case
    with pytest.warns(FeatureWarning, match="fallback"):
        crude_features(x.astype(np.float32), FS)
    if case in ("zeros", "constant", "short"):
        failed = [FEATURE_NAMES.index(k) for k in counts]
        fallback = np.array([FALLBACK[k] for k in counts], dtype=np.float32)
        assert np.array_equal(f[:, failed], np.broadcast_to(fallback, (len(x), len(failed))))


def test_clean_windows_do_not_warn() -> None:
    x = np.stack([generated(s)[0] for s in range(4)])
    with warnings.catch_warnings():
        warnings.simplefilter("error", FeatureWarning)
        crude_features(x, FS)


def test_fit_feature_baseline_logits_and_separation() -> None:
    rng = np.random.default_rng(1)
    f_train = rng.normal(size=(200, 5))
    y_train = np.stack([f_train[:, 0] > 0, f_train[:, 1] + 0.3 * rng.normal(size=200) > 0.5], axis=1).astype(np.float32)
    f_eval = rng.normal(size=(80, 5))
    y_eval = np.stack([f_eval[:, 0] > 0, f_eval[:, 1] > 0.5], axis=1)
    out = fit_feature_baseline(f_train * 50 + 7, y_train, [f_eval * 50 + 7, f_eval[:3] * 50 + 7])
    assert [o.shape for o in out] == [(80, 2), (3, 2)]
    assert roc_auc_score(y_eval[:, 0], out[0][:, 0]) > 0.95 and roc_auc_score(y_eval[:, 1], out[0][:, 1]) > 0.9
    np.testing.assert_allclose(out[1], out[0][:3], rtol=1e-5)


def test_fit_feature_baseline_takes_windows_and_survives_one_class() -> None:
    x = np.stack([generated(s, edema=e)[0] for s, e in zip(range(12), [0.0, 1.0] * 6)])
    y = np.stack([np.tile([0.0, 1.0], 6), np.zeros(12)], axis=1)
    with pytest.warns(FeatureWarning, match="one class"):
        (logits,) = fit_feature_baseline(x, y, [x])
    assert logits.shape == (12, 2) and np.all(logits[:, 1] == 0.0)
    assert roc_auc_score(y[:, 0], logits[:, 0]) > 0.8  # edema's tachycardia, on the training windows


def test_four_thousand_windows_in_well_under_a_minute() -> None:
    import time

    x = np.stack([generated(s)[0] for s in range(40)])
    t0 = time.perf_counter()
    crude_features(x, FS)
    per_window = (time.perf_counter() - t0) / len(x)
    assert per_window * 4000 < 30.0  # about 1.5 ms a window on one core
