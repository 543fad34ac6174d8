"""Signal-quality index per lead: clean real ECGs pass; flat, noisy, clipped and humming leads do not."""

from __future__ import annotations

import numpy as np
import pytest
import wfdb

from bedside.alarm_config import load_alarm_config
from bedside.preprocess import condition, remove_baseline, resample
from bedside.quality import FEATURES, hf_power_ratio, kurtosis, ramp_up, window_quality
from bedside.records import open_record

Q = load_alarm_config().quality


def single_lead_quality(x: np.ndarray, fs: float):
    """SQI of a [leads, n] window of any lead count (the model's conditioning, row by row)."""
    c = remove_baseline(resample(x, fs, 100.0), 100.0)
    return window_quality(x, fs, c, Q)


@pytest.fixture(scope="module")
def ptb_window():
    from tests.conftest import RECORDS

    if not (RECORDS / "s0010_re.hea").is_file():
        pytest.skip(f"real recordings not found at {RECORDS}")
    record = open_record(RECORDS / "s0010_re")
    return record, record.read(0, 10_000)


def quality(x: np.ndarray, fs: float):
    return window_quality(x, fs, condition(x, fs), Q)


def test_every_window_of_a_real_12_lead_ecg_is_good(ptb_window):
    record, _ = ptb_window
    for start in range(0, record.n_samples - 10_000, 5_000):
        q = quality(record.read(start, start + 10_000), record.fs_hz)
        assert q.sqi.min() >= Q.min_sqi, (start, q.sqi)
        assert not q.flat.any()


def test_a_flat_lead_is_flagged(ptb_window):
    _, x = ptb_window
    x = x.copy()
    x[8] = 0.004 * np.random.default_rng(0).normal(size=x.shape[1])  # V3 dead: amplifier noise floor only
    q = quality(x, 1000.0)
    assert q.flat[8] and q.sqi[8] < Q.min_sqi and q.worst_feature(8) == "flat"
    assert q.sqi[np.arange(12) != 8].min() >= Q.min_sqi


@pytest.mark.parametrize("corrupt, feature", [
    (lambda x, t, rng: x + rng.normal(0, 0.8, x.size), {"noise", "no QRS"}),  # muscle noise
    (lambda x, t, rng: x + 1.5 * np.sin(2 * np.pi * 60 * t), {"noise", "no QRS"}),  # mains hum
    (lambda x, t, rng: np.clip(x, np.percentile(x, 20), np.percentile(x, 60)), {"clipped"}),  # saturation
    (lambda x, t, rng: x + 14 * (np.sin(2 * np.pi * 1.3 * t) > 0.995), {"too large"}),  # 14 mV spikes
])
def test_corrupted_lead_is_poor_and_says_why(ptb_window, corrupt, feature):
    _, x = ptb_window
    x = x.copy()
    t = np.arange(x.shape[1]) / 1000.0
    x[1] = corrupt(x[1], t, np.random.default_rng(1)).astype(np.float32)
    q = quality(x, 1000.0)
    assert q.sqi[1] < Q.min_sqi, q.feature_scores[1]
    assert q.worst_feature(1) in feature
    assert q.sqi[0] >= Q.min_sqi  # the other leads are not blamed


def test_false_alarm_bedside_records_rank_below_a_clean_holter():
    """The noisy lead of a CinC 2015 false-VT record scores below the clean MIT-BIH lead."""
    from tests.conftest import RECORDS

    if not (RECORDS / "v102s.hea").is_file():
        pytest.skip(f"real recordings not found at {RECORDS}")

    def mean_sqi(name: str, lead: int) -> float:
        rec = wfdb.rdrecord(str(RECORDS / name), channels=[lead])
        x, fs = rec.p_signal.T.astype(np.float32), float(rec.fs)
        w = int(10 * fs)
        sqis = [single_lead_quality(x[:, s:s + w], fs).sqi[0] for s in range(0, x.shape[1] - w, w)
                if not np.isnan(x[:, s:s + w]).any()]
        return float(np.mean(sqis))

    noisy, clean = mean_sqi("v102s", 1), mean_sqi("100", 0)
    assert clean > 0.95 and noisy < clean - 0.2, (noisy, clean)


def test_kurtosis_of_noise_and_hum():
    rng = np.random.default_rng(0)
    t = np.arange(10_000) / 500.0
    k = kurtosis(np.stack([rng.normal(size=t.size), np.sin(2 * np.pi * 50 * t), np.zeros_like(t)]))
    assert k[0] == pytest.approx(3.0, abs=0.2) and k[1] == pytest.approx(1.5, abs=0.05) and k[2] == 0.0


def test_ramps_and_feature_names():
    assert list(ramp_up(np.array([0.0, 0.5, 1.0, 2.0]), 0.5, 1.5)) == [0.0, 0.0, 0.5, 1.0]
    assert len(FEATURES) == 5


def test_vectorised_kurtosis_and_hf_ratio_match_their_definitions():
    """(d*d)**2 instead of d**4, tail slices instead of boolean masks: the same numbers within float tolerance."""
    rng = np.random.default_rng(2)
    t = np.arange(5000) / 500.0
    x = np.stack([rng.normal(size=t.size), np.sin(2 * np.pi * 50 * t), rng.standard_t(3, t.size),
                  np.zeros_like(t), 0.5 * rng.normal(size=t.size) + np.sin(2 * np.pi * 1.1 * t)]).astype(np.float32)
    c = x.astype(np.float64)
    d = c - c.mean(axis=1, keepdims=True)
    var = (d * d).mean(axis=1)
    reference = np.where(var > 0, (d ** 4).mean(axis=1) / np.maximum(var, 1e-30) ** 2, 0.0)
    np.testing.assert_allclose(kurtosis(c), reference, rtol=1e-12, atol=0)
    for hf_hz in (0.5, 40.0, 49.99, 150.0):
        spectrum = np.fft.rfft(x - x.mean(axis=1, keepdims=True), axis=1)
        power = np.abs(spectrum) ** 2
        f = np.fft.rfftfreq(x.shape[1], 1 / 500.0)
        expected = power[:, f > hf_hz].sum(axis=1) / np.maximum(power[:, f > 0.5].sum(axis=1), 1e-12)
        np.testing.assert_allclose(hf_power_ratio(x, 500.0, hf_hz), expected, rtol=1e-4, atol=1e-9)
