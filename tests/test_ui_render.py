"""The UI's pure parts: the display ring buffer, braille traces, risk trends, the monitor state, the user."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bedside.events import AlarmChange, AlarmKind, AlarmState, Priority, Samples, WindowResult
from bedside.ui.app import USER_ENV, resolve_user
from bedside.ui.braille import auto_range, braille_rows, dot_window, envelope, second_ticks
from bedside.ui.monitor_state import MonitorState
from bedside.ui.risk_panel import bucket_max, trend_cells
from bedside.ui.wave_buffer import WaveBuffer


def block(first: int, n: int, fs: float = 250.0, value: float | None = None) -> Samples:
    idx = np.arange(first, first + n, dtype=np.float32)
    row = idx if value is None else np.full(n, value, dtype=np.float32)
    return Samples(t_s=first / fs, fs_hz=fs, first_index=first, data_mv=np.tile(row, (12, 1)))


# -- WaveBuffer ---------------------------------------------------------------------------------------
def test_buffer_reads_back_what_was_written_across_wraparound() -> None:
    buf = WaveBuffer(seconds=1.0)  # 250 samples at 250 Hz
    for first in range(0, 1000, 70):
        buf.write(block(first, 70))
    assert buf.end_index == 1050
    got = buf.read([1, 10], 800, 1050)
    np.testing.assert_array_equal(got[0], np.arange(800, 1050, dtype=np.float32))
    assert np.isnan(buf.read([1], 700, 800)).all()  # older than the buffer holds
    assert np.isnan(buf.read([1], 1050, 1100)).all()  # not received yet


def test_buffer_leaves_skipped_samples_as_a_gap() -> None:
    buf = WaveBuffer(seconds=2.0)
    buf.write(block(0, 300))
    buf.write(block(400, 100))  # samples 300..399 never arrived
    x = buf.read([0], 250, 500)[0]
    assert np.isnan(x[50:150]).all()
    np.testing.assert_array_equal(x[:50], np.arange(250, 300))
    np.testing.assert_array_equal(x[150:], np.arange(400, 500))


def test_buffer_blanks_stale_positions_after_a_long_gap() -> None:
    buf = WaveBuffer(seconds=1.0)
    buf.write(block(0, 250, value=1.0))
    buf.write(block(600, 10, value=2.0))  # a gap longer than the buffer
    x = buf.read([0], 360, 610)[0]
    assert np.isnan(x[:240]).all() and (x[240:] == 2.0).all()


def test_buffer_starts_over_when_the_rate_changes() -> None:
    buf = WaveBuffer(seconds=1.0)
    buf.write(block(0, 100, fs=250.0))
    buf.write(block(0, 100, fs=500.0))
    assert buf.fs_hz == 500.0 and buf.resets == 1 and buf.capacity == 500


def test_buffer_refuses_a_block_of_the_wrong_shape() -> None:
    with pytest.raises(ValueError, match=r"\[12, n\]"):
        WaveBuffer().write(Samples(t_s=0, fs_hz=250, first_index=0, data_mv=np.zeros((8, 10), np.float32)))


# -- braille traces -----------------------------------------------------------------------------------
@settings(max_examples=60, deadline=None)
@given(st.lists(st.one_of(st.floats(-5, 5, width=32), st.just(math.nan)), min_size=40, max_size=400),
       st.sampled_from([125.0, 250.0, 360.0, 500.0, 1000.0]))
def test_envelope_is_the_nan_ignoring_min_and_max_of_each_column(values: list[float], fs: float) -> None:
    x = np.asarray(values, dtype=np.float32)
    k0, bounds = dot_window(len(x) + 1000, fs, 8)
    bounds = bounds - bounds[0]
    bounds = bounds[bounds <= len(x)]
    lo, hi = envelope(x[: bounds[-1]], bounds)
    for j in range(len(bounds) - 1):
        seg = x[bounds[j]:bounds[j + 1]]
        if seg.size == 0 or np.isnan(seg).all():
            assert np.isnan(lo[j]) and np.isnan(hi[j])
        else:
            assert lo[j] == np.nanmin(seg) and hi[j] == np.nanmax(seg)


def test_a_gap_is_blank_while_a_flat_signal_is_a_line() -> None:
    fs, n_dots = 250.0, 100
    k0, bounds = dot_window(2500, fs, n_dots)
    t = np.arange(bounds[0], bounds[-1]) / fs
    x = np.sin(2 * np.pi * 1.1 * t).astype(np.float32)
    gap = x.copy()
    gap[500:800] = np.nan  # 1.2 s of gap = dot columns 50..79
    flat = x.copy()
    flat[500:800] = 0.0
    rows_gap = braille_rows(*envelope(gap, bounds), 4, -1.5, 1.5)
    rows_flat = braille_rows(*envelope(flat, bounds), 4, -1.5, 1.5)
    gap_cells = slice(26, 39)  # cells wholly inside the gap (2 dot columns each)
    assert all(set(r[gap_cells]) == {" "} for r in rows_gap)
    assert any(set(r[gap_cells]) != {" "} for r in rows_flat)
    assert all(r[:24] == f[:24] for r, f in zip(rows_gap, rows_flat))  # the signal around it is the same


def test_trace_follows_the_signal_height() -> None:
    fs = 250.0
    k0, bounds = dot_window(500, fs, 20)
    lo, hi = envelope(np.full(bounds[-1] - bounds[0], 1.0, np.float32), bounds)
    rows_top = braille_rows(lo, hi, 3, -1.0, 1.0)
    assert rows_top[0].strip() and not rows_top[2].strip()  # +1 mV is drawn in the top row
    rows_bottom = braille_rows(-hi, -lo, 3, -1.0, 1.0)
    assert rows_bottom[2].strip() and not rows_bottom[0].strip()


def test_the_time_grid_is_fixed_to_the_signal_clock() -> None:
    fs = 500.0  # 20 samples per dot column at 25 dots/s
    k0, b0 = dot_window(10_000, fs, 50)
    k1, b1 = dot_window(10_020, fs, 50)
    assert k1 == k0 + 1 and np.array_equal(b1[:-1], b0[1:])
    assert b0[-1] == 10_000 and b0[0] == 10_000 - 50 * 20


def test_second_ticks_fall_on_whole_seconds() -> None:
    k0, _ = dot_window(10_000, 500.0, 100)  # dots 400..499 = 16 s .. 20 s
    ticks = second_ticks(k0, 50)
    assert [s for _, s in ticks] == [16, 17, 18, 19]
    assert [c for c, _ in ticks] == [0, 12, 25, 37]


def test_gain_snaps_to_fixed_spans() -> None:
    lo, hi = np.array([-0.3, 0.1], np.float32), np.array([0.2, 1.1], np.float32)
    v_min, v_max = auto_range(lo, hi)
    assert v_max - v_min == 2.0 and v_min <= -0.3 and v_max >= 1.1
    assert auto_range(np.array([np.nan]), np.array([np.nan])) == (-0.5, 0.5)


# -- risk trends --------------------------------------------------------------------------------------
def test_trend_buckets_keep_the_highest_value_and_leave_unscored_time_blank() -> None:
    points = [(100.0, 0.2), (110.0, 0.7), (700.0, math.nan), (3500.0, 0.4)]
    b = bucket_max(points, now_s=3600.0, span_s=3600.0, n=6)  # 10-minute buckets
    assert b[0] == 0.7 and math.isnan(b[1]) and b[5] == 0.4
    assert all(math.isnan(v) for v in b[2:5])


def test_trend_bars_use_a_fixed_scale_and_mark_the_threshold() -> None:
    rows = trend_cells([0.5, 1.0, math.nan, 0.1], height=2, threshold=0.75)
    (top, bottom) = rows
    assert [c for c, _, _ in bottom] == ["█", "█", " ", "▂"]  # 0.5 fills exactly the bottom row
    assert top[0] == ("┈", False, True) and top[1][:2] == ("█", True) and top[2][0] == "┈"


# -- monitor state ------------------------------------------------------------------------------------
def change(t: float, state: AlarmState, previous: AlarmState | None, until: float | None = None) -> AlarmChange:
    return AlarmChange(t_s=t, wall_time=1e9 + t, alarm="edema", kind=AlarmKind.PHYSIOLOGICAL,
                       priority=Priority.MEDIUM, state=state, previous=previous, message="Edema risk",
                       score=0.7, threshold=0.55, who=None, audio_paused_until_s=until)


def test_state_tracks_an_alarm_through_its_states() -> None:
    s = MonitorState(["edema"], {"edema": 0.55})
    s.apply(change(100.0, AlarmState.ACTIVE, None))
    s.apply(change(110.0, AlarmState.AUDIO_PAUSED, AlarmState.ACTIVE, until=230.0))
    entry = s.alarms["edema"]
    assert entry.raised_t_s == 100.0 and entry.change.state is AlarmState.AUDIO_PAUSED
    s.apply(block(int(150 * 250), 250))  # signal time now 151 s
    assert s.audio_paused_left_s(entry) == pytest.approx(79.0)
    s.apply(change(230.0, AlarmState.ACTIVE, AlarmState.AUDIO_PAUSED))
    assert s.audio_paused_left_s(s.alarms["edema"]) is None
    s.apply(change(240.0, AlarmState.CLEARED, AlarmState.ACTIVE))
    assert "edema" not in s.alarms and len(s.history) == 4


def test_state_orders_alarms_most_urgent_first() -> None:
    s = MonitorState()
    for name, prio, state in [("a", Priority.LOW, AlarmState.ACTIVE), ("b", Priority.HIGH, AlarmState.ACKNOWLEDGED),
                              ("c", Priority.MEDIUM, AlarmState.ACTIVE), ("d", Priority.HIGH, AlarmState.ACTIVE)]:
        s.apply(AlarmChange(t_s=1.0, wall_time=1.0, alarm=name, kind=AlarmKind.TECHNICAL, priority=prio, state=state,
                            previous=None, message=name))
    assert [e.name for e in s.current()] == ["d", "c", "a", "b"]


def test_state_keeps_one_hour_of_trend_and_a_bounded_history() -> None:
    s = MonitorState(["edema"], history_max=10)
    for i in range(2000):  # 2000 windows every 5 s: 2.8 hours
        s.apply(WindowResult(t_s=10.0 + 5 * i, index=i, scored=i % 7 != 0, reason="",
                             scores={"edema": 0.1}, smoothed={"edema": 0.2}))
        s.apply(change(10.0 + 5 * i, AlarmState.ACTIVE if i % 2 else AlarmState.CLEARED, None))
    trend = s.trends["edema"]
    assert trend[-1][0] - trend[0][0] <= 3600.0 and len(trend) == 721
    assert math.isnan(trend[-1][1]) == ((2000 - 1) % 7 == 0)
    assert len(s.history) == 10
    assert s.risk("edema") == 0.2


def test_state_refuses_what_is_not_an_event() -> None:
    with pytest.raises(TypeError, match="not an engine event"):
        MonitorState().apply("edema")


# -- who is at the keyboard ---------------------------------------------------------------------------
def test_user_comes_from_the_option_then_the_environment_then_the_login(monkeypatch) -> None:
    monkeypatch.setenv(USER_ENV, "nurse.env")
    assert resolve_user("nurse.opt") == "nurse.opt"
    assert resolve_user(None) == "nurse.env"
    monkeypatch.delenv(USER_ENV)
    monkeypatch.setenv("LOGNAME", "nurse.login")
    monkeypatch.setenv("USER", "nurse.login")
    assert resolve_user(None) == "nurse.login"
