"""Streaming conditioning gives the batch recipe's windows: on real recordings, across gaps, in any block sizes."""

from __future__ import annotations

import numpy as np
import pytest
import wfdb
from hypothesis import given, settings
from hypothesis import strategies as st

from bedside.preprocess import DEFAULT_RECIPE, Recipe, condition, input_samples_for_window
from bedside.records import open_record
from bedside.stream_condition import StreamConditioner, StreamGeometry, condition_span
from tests.conftest import RECORDS
from tests.engine_helpers import synthetic_ecg

#: The brief's bound; the stream is built to be bit-identical and the max difference is reported when not.
TOL_MV = 1e-5


def stream_and_compare(sc: StreamConditioner, x: np.ndarray, fs: float, hop_n: int, sizes: list[int],
                       recipe: Recipe = DEFAULT_RECIPE) -> tuple[int, int, float]:
    """Push ``x`` [leads, n] in blocks of the given sizes (cycled) and, as an engine does, ask for each
    window every ``hop_n`` once its samples are in: (windows compared, windows with a gap, max |stream -
    batch| in mV). Every gap-free window must come from the stream (never None) and equal ``condition()``
    on the whole window, edges included: that is what the model sees."""
    need = input_samples_for_window(fs, recipe)
    compared = gapped = 0
    worst = 0.0
    i = k = 0
    next_start = 0
    while i < x.shape[1]:
        n = sizes[k % len(sizes)]
        sc.push(i, x[:, i:i + n])
        i, k = i + n, k + 1
        while next_start + need <= min(i, x.shape[1]):
            s, next_start = next_start, next_start + hop_n
            raw = x[:, s:s + need]
            w = sc.window(s)
            if not np.isfinite(raw).all():
                gapped += 1
                assert w is None, f"window at {s} covers a gap yet was conditioned"
                continue
            assert w is not None, f"gap-free window at {s} not cut from the stream"
            worst = max(worst, float(np.abs(w - condition(raw, fs, recipe)).max()))
            compared += 1
    return compared, gapped, worst


def test_geometry_of_the_default_recipe_at_500_hz():
    g = StreamGeometry.of(500.0)
    assert (g.up, g.down, g.half_len, g.reach, g.need, g.width) == (1, 5, 50, 40, 5000, 1000)
    assert g.clean == (10, 990) and g.interior == (50, 950)  # 0.5 s of batch edge effects at each end


@pytest.mark.parametrize("fs", [100.0, 125.0, 250.0, 257.0, 360.0, 500.0, 1000.0])
def test_stream_equals_batch_on_every_window(fs):
    x = synthetic_ecg(60, fs, seed=3) + np.linspace(1.5, -0.5, 12, dtype=np.float32)[:, None]  # DC offsets
    sc = StreamConditioner(fs)
    compared, _, worst = stream_and_compare(sc, x, fs, int(round(5 * fs)), [37, 1001, 5, int(fs * 3.3)])
    assert compared >= 9 and worst <= TOL_MV, worst


def test_batch_edges_differ_from_the_stream_and_are_reproduced():
    """The comparison is meaningful: a window's edges (batch zero padding, median clamping) are not the
    stream's, so the whole-window equality checks that they are recomputed as batch does."""
    fs = 500.0
    x = synthetic_ecg(30, fs, seed=4) + 2.0  # a 2 mV electrode offset: the resampler's taper shows
    sc = StreamConditioner(fs)
    sc.push(0, x)
    g = sc.geometry
    s = 2500
    batch = condition(x[:, s:s + g.need], fs)
    assert np.abs(sc.window(s) - batch).max() <= TOL_MV
    m0 = s * g.up // g.down
    stream_only = sc.out.read(m0, m0 + g.width)  # the stream's own values over the window
    lo, hi = g.interior
    assert np.abs(stream_only[:, lo:hi] - batch[:, lo:hi]).max() <= TOL_MV
    assert np.abs(stream_only[:, :lo] - batch[:, :lo]).max() > 0.1  # the edges really differ (0.27 mV)
    assert np.abs(stream_only[:, hi:] - batch[:, hi:]).max() > 0.1


def test_condition_span_is_the_batch_window_piece():
    x = synthetic_ecg(10, 360.0, seed=5)
    g = StreamGeometry.of(360.0)
    full = condition(x, 360.0)
    for lo, hi in [(0, 50), (950, 1000), (0, 1000), (123, 456)]:
        assert np.abs(condition_span(x, lo, hi, g) - full[:, lo:hi]).max() <= TOL_MV


def test_off_grid_unheld_and_future_windows_fall_back_to_batch():
    fs = 500.0
    x = synthetic_ecg(90, fs, seed=6)
    sc = StreamConditioner(fs, capacity=8000)  # at least one window + 60 s are held
    assert sc.capacity == 5000 + 30_000
    assert sc.window(0) is None  # nothing pushed yet
    sc.push(0, x[:, :7000])
    assert sc.window(2500) is None  # its last samples have not arrived
    assert sc.window(3) is None  # not on the output grid (start % down)
    assert sc.window(0) is not None
    for i in range(7000, x.shape[1], 2500):
        sc.push(i, x[:, i:i + 2500])
    assert sc.window(0) is None  # no longer held
    assert np.abs(sc.window(40_000) - condition(x[:, 40_000:45_000], fs)).max() <= TOL_MV
    assert StreamConditioner.supports(500.0, 2500) and not StreamConditioner.supports(500.0, 2501)
    assert not StreamConditioner.supports(62.4725 * 4, 1249)  # a ratio of 10000/24989: batch only
    with pytest.raises(ValueError, match="too fine to stream"):
        StreamConditioner(62.4725 * 4)


def test_gaps_restart_the_stream_and_are_never_conditioned():
    fs = 500.0
    x = synthetic_ecg(60, fs, seed=7)
    x[:, 6001:6400] = np.nan  # lost samples
    x[4, 20_000] = np.inf  # a device value out of range in one lead
    sc = StreamConditioner(fs)
    compared, gapped, worst = stream_and_compare(sc, x, fs, 2500, [250])
    assert gapped == 4 and compared == 7 and worst <= TOL_MV
    assert sc.restarts == 2
    # a window starting right after a gap (within the stream's warm-up) is still the batch result
    y = synthetic_ecg(30, fs, seed=7)
    y[:, 9990:10_000] = np.nan
    sc = StreamConditioner(fs)
    sc.push(0, y[:, :9990])
    sc.push(10_000, y[:, 10_000:])  # a jump forward: the samples in between never arrived
    assert np.abs(sc.window(10_000) - condition(y[:, 10_000:15_000], fs)).max() <= TOL_MV
    assert sc.window(7500) is None and sc.restarts == 1


def test_repeated_and_oversized_blocks():
    fs = 250.0
    x = synthetic_ecg(200, fs, seed=8)
    sc = StreamConditioner(fs)  # holds one window + 60 s: the block below is larger
    sc.push(0, x[:, :1000])
    sc.push(500, x[:, 500:2000])  # a repeat of [500, 1000): the first copy is kept
    sc.push(2000, x[:, 2000:])
    assert sc.restarts == 0
    end = x.shape[1]
    for s in range(end - 2500 * 6, end - 2500 + 1, 1250):
        assert np.abs(sc.window(s) - condition(x[:, s:s + 2500], fs)).max() <= TOL_MV


@settings(max_examples=40, deadline=None, derandomize=True)
@given(fs=st.sampled_from([250.0, 360.0, 500.0]),
       gaps=st.lists(st.tuples(st.integers(0, 40_000), st.integers(1, 3000)), max_size=4),
       sizes=st.lists(st.sampled_from([1, 7, 50, 333, 1000, 2500, 4000]), min_size=1, max_size=4),
       seed=st.integers(0, 3))
def test_random_gaps_and_blocks_give_the_batch_windows(fs, gaps, sizes, seed):
    x = synthetic_ecg(60, fs, seed=seed)
    n = x.shape[1]
    for first, length in gaps:
        first = first * n // 40_000
        x[:, first:first + length] = np.nan  # never zero-filled: the stream restarts after each
    if sizes == [1]:
        x = x[:, : int(25 * fs)]  # one sample per push: keep it short
    sc = StreamConditioner(fs)
    compared, gapped, worst = stream_and_compare(sc, x, fs, int(round(2.5 * fs)), sizes)
    assert compared + gapped >= 7 and worst <= TOL_MV, worst


def real_signals():
    """(name, [leads, n] mV, fs) of the shared recordings, their own lead counts, at their own rates."""
    if not (RECORDS / "s0010_re.hea").is_file():
        pytest.skip(f"real recordings not found at {RECORDS} (see ../shared/data/README.md)")
    ptb = open_record(RECORDS / "s0010_re")
    yield "s0010_re", ptb.read(0, ptb.n_samples), ptb.fs_hz
    for name, seconds in [("100", 300), ("v102s", 300), ("a103l", 330)]:
        rec = wfdb.rdrecord(str(RECORDS / name), channels=[0, 1], sampto=None)
        x = rec.p_signal.T.astype(np.float32)
        yield name, x[:, : int(seconds * rec.fs)], float(rec.fs)


def test_stream_equals_batch_on_the_shared_records():
    seen = []
    for name, x, fs in real_signals():
        recipe = Recipe(leads=tuple(f"lead{i}" for i in range(x.shape[0])))
        sc = StreamConditioner(fs, recipe)
        compared, gapped, worst = stream_and_compare(sc, x, fs, int(round(5 * fs)), [int(fs * 0.2), int(fs * 7)],
                                                     recipe)
        assert compared >= 5 and worst <= TOL_MV, (name, worst)
        seen.append((name, compared, gapped))
    assert [s[0] for s in seen] == ["s0010_re", "100", "v102s", "a103l"]
    assert seen[2][2] >= 1  # v102s holds NaN runs: those windows were refused, the rest matched


def test_analyser_results_are_the_same_with_streamed_windows():
    """The engine's hand-over: WindowInput.conditioned from the stream gives the WindowResults of condition()."""
    from bedside.alarm_config import load_alarm_config
    from bedside.analysis import WindowAnalyser, WindowInput

    fs, hop = 500.0, 2500
    x = synthetic_ecg(90, fs, hr_bpm=80.0, seed=9)
    x[:, 20_000:20_600] = np.nan  # a gap: those windows are refused by the analyser, never conditioned
    config = load_alarm_config()
    batch = WindowAnalyser(fs, DEFAULT_RECIPE, config, None, bundle_error="none in this test")
    streamed = WindowAnalyser(fs, DEFAULT_RECIPE, config, None, bundle_error="none in this test")
    sc = StreamConditioner(fs, DEFAULT_RECIPE)
    plain, fed, used = [], [], 0
    for k, s in enumerate(range(0, x.shape[1] - 5000 + 1, hop)):
        sc.push(s + 5000 - hop if k else 0, x[:, s + 5000 - hop if k else 0:s + 5000])
        w = x[:, s:s + 5000]
        c = sc.window(s)
        used += c is not None
        plain += batch.analyse([WindowInput(k, s / fs, w)])
        fed += streamed.analyse([WindowInput(k, s / fs, w, conditioned=c)])
    assert used == len(plain) - 2  # the two windows touching the gap (at 35 s and 40 s)
    assert [(r.reason, r.hr_bpm, r.quality) for r in fed] == [(r.reason, r.hr_bpm, r.quality) for r in plain]
    assert sum(r.hr_bpm is not None for r in plain) >= 10
