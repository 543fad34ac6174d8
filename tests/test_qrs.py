"""The bedside's gradient QRS detector (bedside/qrs.py) against NeuroKit2's own "neurokit" method:
the same R peaks, sample for sample, on the signals the engine feeds it and on the odd ones."""

from __future__ import annotations

import numpy as np
import pytest
import wfdb

from bedside.heart_rate import detect_qrs
from bedside.preprocess import remove_baseline, resample
from bedside.qrs import gradient_r_peaks
from tests.conftest import RECORDS

nk = pytest.importorskip("neurokit2")


def library_peaks(x: np.ndarray, fs: float) -> np.ndarray:
    return np.asarray(nk.ecg_findpeaks(np.asarray(x, dtype=np.float64), sampling_rate=fs, method="neurokit")
                      ["ECG_R_Peaks"], dtype=np.int64)


def conditioned_windows(x: np.ndarray, fs: float, every_s: float = 23.0):
    """The engine's detection input: 10 s windows resampled to 100 Hz, baseline removed."""
    for start in range(0, x.size - int(10 * fs), int(every_s * fs)):
        y = resample(x[None, start:start + int(10 * fs)], fs, 100.0)
        yield remove_baseline(y, 100.0)[0]


@pytest.mark.parametrize("record", ["100", "s0010_re", "a103l", "mixedsignals", "v102s"])
def test_same_peaks_as_neurokit2_on_recorded_ecgs(record):
    if not (RECORDS / f"{record}.hea").is_file():
        pytest.skip(f"record {record} not found under {RECORDS} (see ../shared/data/README.md)")
    rec = wfdb.rdrecord(str(RECORDS / record))
    compared = beats = 0
    for ch in range(rec.n_sig):
        x = np.nan_to_num(rec.p_signal[:, ch]).astype(np.float32)
        for window in conditioned_windows(x, float(rec.fs)):
            ours, theirs = gradient_r_peaks(window, 100.0), library_peaks(window, 100.0)
            assert np.array_equal(ours, theirs), (record, rec.sig_name[ch], np.setxor1d(ours, theirs))
            compared += 1
            beats += ours.size
        raw = nk.ecg_clean(x[: int(60 * rec.fs)].astype(np.float64), sampling_rate=rec.fs)  # bare, native rate
        assert np.array_equal(gradient_r_peaks(raw, float(rec.fs)), library_peaks(raw, float(rec.fs)))
    assert compared >= 3 and beats > 0


def test_same_peaks_as_neurokit2_on_synthetic_ecgs_and_noise():
    from trainer.synth_ecg import draw_traits, ecg_state, synth_ecg

    rng = np.random.default_rng(7)
    for _ in range(12):  # AF, LBBB, strain, fast and slow rates, noise and wander: the cohort's range
        state = ecg_state(draw_traits(rng), *rng.uniform(0, 1, 3), rng)
        for window in conditioned_windows(synth_ecg(state, rng, n=500 * 30)[1], 500.0, every_s=10.0):
            # as conditioned; clipped (a saturated amplifier: flat tops); coarsely quantised (equal neighbours)
            for x in (window, np.clip(window, -0.3, 0.5), np.round(window * 40) / 40):
                assert np.array_equal(gradient_r_peaks(x, 100.0), library_peaks(x, 100.0))
    for k in range(60):  # no ECG at all: flat stretches, steps, white noise, the shortest accepted length
        fs = float(rng.choice([100.0, 250.0, 360.0, 500.0]))
        x = rng.normal(0.0, 1.0, int(rng.integers(int(0.75 * fs) + 1, 4000)))
        if k % 3 == 0:
            x[: x.size // 2] = 0.0
        assert np.array_equal(gradient_r_peaks(x, fs), library_peaks(x, fs)), (k, fs, x.size)


def test_too_short_or_flat_input_has_no_peaks():
    assert gradient_r_peaks(np.zeros(1000), 100.0).size == 0
    assert gradient_r_peaks(np.ones(50), 100.0).size == 0  # shorter than the 0.75 s average
    assert gradient_r_peaks(np.ones(50), 100.0).dtype == np.int64


def test_detect_qrs_gradient_cleans_with_the_recipes_baseline_filters():
    t = np.arange(0, 12, 1 / 360)
    beats = np.arange(0.5, 12, 0.8)
    x = sum(np.exp(-0.5 * ((t - b) / 0.012) ** 2) for b in beats) + 0.8 * np.sin(2 * np.pi * 0.3 * t)  # wander
    found = detect_qrs(x, 360.0, "gradient") / 360.0
    assert found.size == beats.size and np.max(np.abs(found - beats)) < 0.02


def test_neurokit_detector_without_neurokit2_names_the_fix(monkeypatch, tmp_path):
    import importlib.util
    import sys
    from importlib import resources

    from bedside.alarm_config import AlarmConfigError, load_alarm_config
    from bedside.errors import BedsideError

    monkeypatch.setitem(sys.modules, "neurokit2", None)  # as on a runtime install without the extra
    with pytest.raises(BedsideError, match=r'neurokit.*extra.*detector = "gradient"'):
        detect_qrs(np.zeros(1000), 100.0, "neurokit")
    # and a settings file that asks for it is refused when it is loaded, before the monitor reports ready
    toml = resources.files("bedside").joinpath("alarms.toml").read_text()
    assert 'detector = "gradient"' in toml
    settings = tmp_path / "alarms.toml"
    settings.write_text(toml.replace('detector = "gradient"', 'detector = "neurokit"'))
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "neurokit2" else real_find_spec(name, *a))
    with pytest.raises(AlarmConfigError, match=r"detector.*NeuroKit2 is not installed.*neurokit. extra"):
        load_alarm_config(settings)


def test_detect_qrs_on_an_empty_signal_finds_nothing():
    assert detect_qrs(np.zeros(0), 360.0, "gradient").size == 0
