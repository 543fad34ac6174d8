"""The alarm state machine (IEC 60601-1-8 states), persistence, hysteresis, and the settings file."""

from __future__ import annotations

import re

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bedside.alarm_config import AlarmConfigError, load_alarm_config
from bedside.alarms import AlarmMachine, AlarmSystem, PersistenceFilter, Smoother
from bedside.alarm_config import Persistence
from bedside.events import AlarmKind, AlarmState, Priority, WindowResult

A = AlarmState
LABELS = ["edema", "pleural_effusion", "cardiomegaly"]
THRESHOLDS = {"edema": 0.5, "pleural_effusion": 0.6, "cardiomegaly": 0.5}


def machine(latching: bool = True, pause_s: float = 120.0) -> AlarmMachine:
    return AlarmMachine("edema", AlarmKind.PHYSIOLOGICAL, Priority.MEDIUM, latching, pause_s)


def test_raise_then_latch_until_acknowledged():
    m = machine(latching=True)
    c = m.set_condition(True, 10.0, "Edema risk 0.7 > 0.5", 0.7, 0.5)
    assert (c.previous, c.state, c.cause, c.score, c.threshold) == (A.CLEARED, A.ACTIVE, "condition", 0.7, 0.5)
    assert m.set_condition(True, 15.0, "again") is None  # no repeat transition
    c = m.set_condition(False, 20.0, "back below")
    assert c.state == A.LATCHED and m.sounding  # condition over, signal persists
    c = m.acknowledge(30.0, "rn.lee")
    assert (c.previous, c.state, c.who, c.cause) == (A.LATCHED, A.CLEARED, "rn.lee", "acknowledge")
    assert not m.sounding


def test_non_latching_clears_with_its_condition():
    m = machine(latching=False)
    m.set_condition(True, 0.0, "on")
    assert m.set_condition(False, 5.0, "off").state == A.CLEARED


def test_acknowledged_is_silent_until_the_condition_ends_and_rises_again():
    m = machine(latching=True)
    m.set_condition(True, 0.0, "on")
    assert m.acknowledge(1.0, "dr.x").state == A.ACKNOWLEDGED and not m.sounding
    assert m.set_condition(False, 2.0, "off").state == A.CLEARED  # an acknowledged alarm does not latch
    assert m.set_condition(True, 3.0, "on").state == A.ACTIVE


def test_audio_pause_expires_back_to_active():
    m = machine(pause_s=120.0)
    m.set_condition(True, 0.0, "on")
    c = m.pause_audio(10.0, "rn.lee")
    assert (c.state, c.audio_paused_until_s, c.who) == (A.AUDIO_PAUSED, 130.0, "rn.lee") and not m.sounding
    assert m.tick(129.9) is None
    c = m.tick(130.0)
    assert (c.previous, c.state, c.cause) == (A.AUDIO_PAUSED, A.ACTIVE, "timer") and m.sounding


def test_audio_pause_of_a_latching_alarm_whose_condition_ended_expires_to_latched():
    m = machine(latching=True, pause_s=60.0)
    m.set_condition(True, 0.0, "on")
    m.pause_audio(5.0, "rn")
    c = m.set_condition(False, 10.0, "off")
    assert c.state == A.AUDIO_PAUSED and not m.sounding  # logged, still silent
    assert m.tick(65.0).state == A.LATCHED


def test_audio_pause_of_a_non_latching_alarm_clears_when_its_condition_ends():
    m = machine(latching=False)
    m.set_condition(True, 0.0, "on")
    m.pause_audio(1.0, "rn")
    assert m.set_condition(False, 2.0, "off").state == A.CLEARED
    assert m.tick(500.0) is None


def test_commands_on_a_cleared_alarm_change_nothing():
    m = machine()
    assert m.acknowledge(0.0, "x") is None and m.pause_audio(0.0, "x") is None and m.tick(1e9) is None


EVENTS = st.lists(st.tuples(st.sampled_from(["on", "off", "ack", "pause", "tick"]),
                            st.floats(min_value=0, max_value=30)), max_size=40)


@settings(max_examples=300, deadline=None)
@given(latching=st.booleans(), events=EVENTS)
def test_invariants_hold_for_any_sequence(latching, events):
    m = machine(latching=latching, pause_s=20.0)
    t = 0.0
    for kind, dt in events:
        t += dt
        before = m.state
        c = {"on": lambda: m.set_condition(True, t, "on"), "off": lambda: m.set_condition(False, t, "off"),
             "ack": lambda: m.acknowledge(t, "who"), "pause": lambda: m.pause_audio(t, "who"),
             "tick": lambda: m.tick(t)}[kind]()
        if c is not None:
            assert c.previous == before and c.state == m.state and c.t_s == t
        s = m.state
        assert (s == A.ACTIVE) <= m.condition
        assert (s == A.ACKNOWLEDGED) <= m.condition
        assert (s == A.CLEARED) <= (not m.condition)
        assert (s == A.LATCHED) <= (latching and not m.condition)
        assert (s == A.AUDIO_PAUSED) <= (m.paused_until_s is not None and (m.condition or latching))
        assert m.sounding == (s in (A.ACTIVE, A.LATCHED))


def test_persistence_needs_n_of_m_and_clears_after_k_clean():
    f = PersistenceFilter(Persistence(raise_n=3, raise_m=4, clear_n=2), hop_s=5.0)
    seq = [(True, False), (False, False), (True, False), (True, False)]
    states = [f.update(5.0 * i, e, c) for i, (e, c) in enumerate(seq)]
    assert states == [False, False, False, True]  # the 3rd exceeding window of the last 4
    assert f.update(20.0, False, True) is True  # one clean window is not enough
    assert f.update(25.0, False, True) is False


def test_persistence_forgets_windows_older_than_m_hops():
    f = PersistenceFilter(Persistence(raise_n=2, raise_m=2, clear_n=1), hop_s=5.0)
    f.update(0.0, True, False)
    assert f.update(600.0, True, False) is False  # the first exceedance was 10 minutes ago (a gap)
    assert f.update(605.0, True, False) is True


def test_smoother_averages_recent_scored_windows_only():
    s = Smoother(3, hop_s=5.0)
    s.update(0.0, {"a": 0.0})
    s.update(5.0, {"a": 0.3})
    assert s.update(10.0, {"a": 0.9})["a"] == pytest.approx(0.4)
    assert s.update(100.0, {"a": 0.6})["a"] == pytest.approx(0.6)  # older values are out of reach


def window(t: float, scores: dict[str, float] | None = None, hr: float | None = None, reason: str = "",
           index: int = 0) -> WindowResult:
    return WindowResult(t_s=t, index=index, scored=scores is not None, reason=reason, scores=scores or {},
                        hr_bpm=hr, detail=reason)


def feed(system: AlarmSystem, w: WindowResult):
    return system.on_window(replace(w, smoothed=system.smooth(w)))


def test_risk_alarm_raises_after_persistence_and_clears_with_hysteresis():
    config = load_alarm_config()
    system = AlarmSystem(config, LABELS, THRESHOLDS, hop_s=5.0, validated=LABELS)
    high = {"edema": 0.9, "pleural_effusion": 0.1, "cardiomegaly": 0.1}
    changes = []
    for i in range(6):
        changes += [(i, c) for c in feed(system, window(10.0 + 5 * i, high, index=i))]
    raised = [(i, c.alarm, c.state) for i, c in changes]
    # smoothed over 3 windows it exceeds 0.5 from the first window; 3 of 4 needed: the third window
    assert raised == [(2, "edema", A.ACTIVE)]
    # between threshold-margin (0.4) and the threshold: hysteresis holds the condition
    mid = dict(high, edema=0.45)
    for i in range(6, 12):
        assert [c for c in feed(system, window(10.0 + 5 * i, mid, index=i)) if c.alarm == "edema"] == []
    low = dict(high, edema=0.1)
    out = []
    for i in range(12, 18):
        out += feed(system, window(10.0 + 5 * i, low, index=i))
    assert [(c.alarm, c.state) for c in out] == [("edema", A.LATCHED)]


def test_heart_rate_limits_with_hysteresis():
    config = load_alarm_config()
    hr = config.heart_rate
    system = AlarmSystem(config, [], {}, hop_s=5.0, validated=())
    out = []
    for i, bpm in enumerate([80, hr.high_bpm + 10, hr.high_bpm + 10, hr.high_bpm - 2, hr.high_bpm - 10]):
        out += [(i, c.alarm, c.state) for c in feed(system, window(5.0 * i, hr=bpm))]
    # raise_n of raise_m windows above the limit; not cleared at limit - 2 (hysteresis); cleared below
    assert out == [(2, "hr_high", A.ACTIVE), (4, "hr_high", A.CLEARED)]
    out = [c for i, bpm in enumerate([30, 30]) for c in feed(system, window(100.0 + 5 * i, hr=bpm))]
    assert [(c.alarm, c.state, c.kind) for c in out] == [("hr_low", A.ACTIVE, AlarmKind.PHYSIOLOGICAL)]


def test_technical_conditions_follow_the_reason_a_window_was_not_scored():
    system = AlarmSystem(load_alarm_config(), LABELS, THRESHOLDS, hop_s=5.0, validated=LABELS)
    out = feed(system, window(10.0, reason="lead off"))
    assert [(c.alarm, c.state, c.kind) for c in out] == [("lead_off", A.ACTIVE, AlarmKind.TECHNICAL)]
    # a gap says nothing about the electrodes: lead off stays; the gap alarm rises
    out = feed(system, window(15.0, reason="gap"))
    assert [(c.alarm, c.state) for c in out] == [("signal_gap", A.ACTIVE)]
    out = feed(system, window(20.0, {"edema": 0.1, "pleural_effusion": 0.1, "cardiomegaly": 0.1}))
    assert sorted((c.alarm, c.state) for c in out) == [("lead_off", A.CLEARED), ("signal_gap", A.CLEARED)]


def test_each_window_condition_is_judged_on_its_own():
    system = AlarmSystem(load_alarm_config(), LABELS, THRESHOLDS, hop_s=5.0, validated=LABELS)

    def cond(t, present, unknown=(), gap_s=0.0):
        return WindowResult(t_s=t, index=int(t), scored=False, reason="gap" if "signal_gap" in present else "lead off",
                            conditions=present, unknown=unknown, gap_s=gap_s)

    # a gap and a board's lead-off report in one window: both alarms; SQI unknown: poor signal untouched
    out = feed(system, cond(10.0, {"signal_gap": "2.00 s of signal missing", "lead_off": "electrode LA off"},
                            ("poor_signal", "inference_failed"), gap_s=2.0))
    assert sorted((c.alarm, c.state) for c in out) == [("lead_off", A.ACTIVE), ("signal_gap", A.ACTIVE)]
    assert {c.message for c in out} == {"Signal gap: 2.00 s of signal missing", "Lead off: electrode LA off"}
    # lead-off unknown (a gap, no contact report): it stays; the gap is over: it clears
    out = feed(system, cond(15.0, {}, ("lead_off", "poor_signal", "inference_failed")))
    assert [(c.alarm, c.state) for c in out] == [("signal_gap", A.CLEARED)]


def test_short_losses_raise_signal_gap_only_when_they_persist():
    config = load_alarm_config()
    gap = config.technical["signal_gap"]
    assert gap.after_s > 0.01 and gap.persistence.raise_n > 1
    system = AlarmSystem(config, LABELS, THRESHOLDS, hop_s=5.0, validated=LABELS)
    states = []
    for k in range(gap.persistence.raise_m + 1):
        w = WindowResult(t_s=10.0 + 5 * k, index=k, scored=False, reason="gap",
                         conditions={"signal_gap": "10 ms of signal missing"}, gap_s=0.01)
        states.append([c.state for c in feed(system, w) if c.alarm == "signal_gap"])
    raised_at = [i for i, s in enumerate(states) if s == [A.ACTIVE]]
    assert raised_at == [gap.persistence.raise_n - 1]


def test_pause_audio_silences_every_sounding_alarm_and_new_alarms_still_sound():
    system = AlarmSystem(load_alarm_config(), LABELS, THRESHOLDS, hop_s=5.0, validated=LABELS)
    system.set_condition("storage_failing", True, 1.0, "disk full")
    system.set_condition("no_data", True, 1.0)
    assert system.sounding_priority() == Priority.MEDIUM
    paused = system.pause_audio("rn.lee", 2.0)
    assert {c.alarm for c in paused} == {"storage_failing", "no_data"} and system.sounding_priority() is None
    system.set_condition("device_disconnected", True, 3.0)
    assert system.sounding_priority() == Priority.MEDIUM
    expired = system.tick(2.0 + load_alarm_config().audio.pause_s)
    assert {(c.alarm, c.state) for c in expired} == {("storage_failing", A.ACTIVE), ("no_data", A.ACTIVE)}


def test_acknowledge_unknown_alarm_names_the_known_ones():
    system = AlarmSystem(load_alarm_config(), LABELS, THRESHOLDS, hop_s=5.0, validated=LABELS)
    with pytest.raises(KeyError, match="edema"):
        system.acknowledge("edmea", "x", 0.0)


def test_priorities_come_from_the_settings_file(tmp_path):
    from importlib import resources

    text = resources.files("bedside").joinpath("alarms.toml").read_text()
    text, n = re.subn(r'(\[technical\.lead_off\][^\[]*?)priority = "medium"', r'\1priority = "high"', text, count=1)
    assert n == 1
    text += '\n[risk.labels.cardiomegaly]\npriority = "low"\nlatching = false\n'
    path = tmp_path / "alarms.toml"
    path.write_text(text)
    config = load_alarm_config(path)
    system = AlarmSystem(config, LABELS, THRESHOLDS, hop_s=5.0, validated=LABELS)
    assert system.machines["lead_off"].priority == Priority.HIGH
    assert (system.machines["cardiomegaly"].priority, system.machines["cardiomegaly"].latching) == (Priority.LOW, False)
    assert system.machines["edema"].priority == Priority.MEDIUM and system.machines["edema"].latching


@pytest.mark.parametrize("edit, message", [
    (("raise_n = 3\nraise_m = 4", "raise_n = 5\nraise_m = 4"), r"\[risk\] raise_n: must be an integer in \[1, 4\]"),
    (('priority = "medium"\nlatching = true', 'priority = "urgent"\nlatching = true'), r"priority: must be one of"),
    (("high_bpm = 120.0", "high_bpm = 120.0\nhigh_bmp = 130"), r"\[heart_rate\] high_bmp: unknown key"),
    (('output = "bell"', 'output = "command"'), r"\[audio\] command: is empty"),
    (("windows = 3", "windows = 3\n[bogus]"), r"bogus: unknown key"),
])
def test_bad_settings_are_refused_naming_the_key(tmp_path, edit, message):
    from importlib import resources

    text = resources.files("bedside").joinpath("alarms.toml").read_text()
    assert edit[0] in text
    path = tmp_path / "alarms.toml"
    path.write_text(text.replace(edit[0], edit[1], 1))
    with pytest.raises(AlarmConfigError, match=message) as info:
        load_alarm_config(path)
    assert str(path) in str(info.value)


def test_not_toml_is_refused(tmp_path):
    path = tmp_path / "alarms.toml"
    path.write_text("[risk\n")
    with pytest.raises(AlarmConfigError, match="not valid TOML"):
        load_alarm_config(path)
