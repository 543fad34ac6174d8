"""QRS detection and heart rate: EC57 scoring, the RR rule, the engine's windowed path on MIT-BIH 100."""

from __future__ import annotations

import numpy as np
import pytest
import wfdb

from bedside.alarm_config import load_alarm_config
from bedside.heart_rate import (BEAT_SYMBOLS, BeatTracker, detect_qrs, heart_rate_bpm, score_beats,
                                warm_up_detector, windowed_beats)

SETTINGS = load_alarm_config().heart_rate


@pytest.fixture(scope="module")
def mitbih_100(request):
    from tests.conftest import RECORDS

    if not (RECORDS / "100.atr").is_file():
        pytest.skip(f"MIT-BIH record 100 not found at {RECORDS} (see ../shared/data/README.md)")
    rec = wfdb.rdrecord(str(RECORDS / "100"))
    ann = wfdb.rdann(str(RECORDS / "100"), "atr")
    beats = np.array([s for s, sym in zip(ann.sample, ann.symbol) if sym in BEAT_SYMBOLS])
    return rec.p_signal[:, 0].astype(np.float32), float(rec.fs), beats, ann


def test_ec57_scoring_counts_by_the_bxb_rules():
    fs = 100.0
    ref = np.array([100, 200, 30_010, 30_100, 30_200, 30_300])  # first two inside the 5-minute exclusion
    det = np.array([150, 29_999, 30_114, 30_200, 30_230, 30_500])
    s = score_beats(ref, det, fs)
    # 30_010 <- 29_999 (11 samples = 110 ms, inside 150 ms, detection just before the boundary counts)
    # 30_100 <- 30_114, 30_200 <- 30_200; 30_300: nearest free 30_230 is 70 samples away -> missed
    assert (s.tp, s.fn) == (3, 1)
    assert s.fp == 2  # 30_230 and 30_500; 150 in the excluded period is not counted
    assert s.sensitivity == pytest.approx(0.75) and s.positive_predictivity == pytest.approx(0.6)


def test_each_reference_beat_takes_at_most_one_detection():
    s = score_beats(np.array([40_000]), np.array([39_995, 40_000, 40_005]), 100.0)
    assert (s.tp, s.fp, s.fn) == (1, 2, 0)


def test_heart_rate_rule_last_12_rr_or_last_4_when_slow():
    regular = np.arange(20) * 0.8  # 75 bpm
    assert heart_rate_bpm(regular) == pytest.approx(75.0)
    slowing = np.concatenate([np.arange(15) * 0.6, 8.4 + np.arange(1, 5) * 1.5])  # 100 bpm, then 40 bpm
    assert heart_rate_bpm(slowing) == pytest.approx(40.0)  # the last 4 RR, not a mix of 12
    assert heart_rate_bpm(np.array([0.0, 1.0])) is None  # one RR is not a rate
    assert heart_rate_bpm(np.array([0.0, 1.0, 2.0, 7.0, 8.0])) == pytest.approx(60.0)  # a 5 s pause is not averaged


def test_tracker_stitches_overlapping_windows_without_double_beats():
    tracker = BeatTracker(SETTINGS)
    beats = np.arange(0.4, 30, 0.75)  # 80 bpm
    for start in (0.0, 5.0, 10.0, 15.0):
        inside = beats[(beats >= start) & (beats < start + 10)] - start
        bpm = tracker.add_window(start, 10.0, inside + np.random.default_rng(int(start)).normal(0, 0.004, inside.size))
    got = np.asarray(tracker.beats)
    assert np.all(np.diff(got) > 0.5)  # no beat seen twice from two windows
    assert bpm == pytest.approx(80.0, abs=1.0)
    tracker.add_window(60.0, 10.0, np.array([0.5, 1.25]))  # not contiguous: a new train
    assert len(tracker.beats) == 2


def test_library_detectors_on_record_100(mitbih_100):
    pytest.importorskip("neurokit2")  # the test extra
    x, fs, ref, _ = mitbih_100
    for method, floor in (("gradient", 0.998), ("neurokit", 0.998), ("xqrs", 0.998)):
        seg = x if method != "xqrs" else x[: int(420 * fs)]  # XQRS is slow: 7 minutes
        s = score_beats(ref[ref < len(seg)], detect_qrs(seg, fs, method), fs)
        assert s.sensitivity >= floor and s.positive_predictivity >= floor, (method, s)


def test_engine_heart_rate_path_on_record_100(mitbih_100):
    x, fs, ref, _ = mitbih_100
    beats, rates = windowed_beats(x, fs, SETTINGS)
    s = score_beats(ref, np.round(beats * fs), fs)
    assert s.sensitivity >= 0.995 and s.positive_predictivity >= 0.995, s
    # heart rate against the same rule applied to the reference beats, at each window's end
    ref_t = ref / fs
    errors = []
    for t_end, bpm in rates:
        if t_end < 300 or bpm is None:
            continue
        truth = heart_rate_bpm(ref_t[ref_t < t_end - 0.3])
        errors.append(abs(bpm - truth))
    assert len(errors) > 250
    assert np.percentile(errors, 95) < 2.0, np.percentile(errors, [50, 95, 100])


def test_engine_path_finds_as_many_beats_as_bare_neurokit_on_record_100(mitbih_100):
    # the windowed, conditioned, stitched path loses no beat the library finds on the whole record: in
    # particular the last window keeps the beats near its end (no next window will see them)
    pytest.importorskip("neurokit2")  # the test extra
    x, fs, ref, _ = mitbih_100
    bare = score_beats(ref, detect_qrs(x, fs, "neurokit"), fs)
    engine = score_beats(ref, np.round(windowed_beats(x, fs, SETTINGS)[0] * fs), fs)
    assert engine.tp >= bare.tp, (engine, bare)
    assert engine.fp <= bare.fp + 1, (engine, bare)


def test_last_window_keeps_beats_near_its_end():
    beats = np.array([1.0, 2.0, 3.0, 9.85])  # 9.85 s: inside the 0.3 s edge of a 10 s window
    tracker = BeatTracker(SETTINGS)
    tracker.add_window(0.0, 10.0, beats)
    assert list(tracker.beats) == [1.0, 2.0, 3.0]  # left to the next window
    last = BeatTracker(SETTINGS)
    last.add_window(0.0, 10.0, beats, last=True)
    assert list(last.beats) == [1.0, 2.0, 3.0, 9.85]


def test_warm_up_detector_runs_each_detector():
    pytest.importorskip("neurokit2")  # the test extra
    for method in ("gradient", "neurokit", "xqrs"):
        warm_up_detector(method)  # raises if the library or the method is missing
    with pytest.raises(ValueError, match="choices"):
        warm_up_detector("pantompkins")


def test_detect_qrs_refuses_multi_lead_input_and_unknown_method():
    with pytest.raises(ValueError, match="one lead"):
        detect_qrs(np.zeros((2, 1000)), 100.0)
    with pytest.raises(ValueError, match="choices"):
        detect_qrs(np.zeros(1000), 100.0, method="pantompkins")
