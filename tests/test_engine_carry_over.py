"""Alarm state across restarts (issue 12, item 8): a latched, unacknowledged alarm of the bed's previous
session comes back, marked carried over, when monitoring restarts within carry_over_s; acknowledging
clears it as usual; a late restart, another bed, an acknowledged alarm or a replay carry nothing."""

from __future__ import annotations

import sqlite3

import pytest

from bedside.alarm_config import load_alarm_config
from bedside.bundle import load_bundle
from bedside.engine import Engine, EngineSettings
from bedside.events import AlarmState
from bedside.store import Store
from tests.engine_helpers import FeedSource, flip_lead_i, polarity_bundle, synthetic_ecg

FS = 500.0
A = AlarmState


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return load_bundle(polarity_bundle(tmp_path_factory.mktemp("bundle") / "polarity.onnx"))


class Clock:
    """The engine's wall clock, set by the test (the restart delay is wall time)."""

    def __init__(self, t: float = 1_800_000_000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


def session(db, bundle, x, clock, bed="bed-7", commands=(), **settings):
    """One live session on ``db`` fed ``x``; ``commands`` are (sample index, callable(engine)) applied
    after the blocks before that index are queued. Returns the engine after its run."""
    source = FeedSource(FS)
    engine = Engine(source, Store(db), load_alarm_config(), EngineSettings(bed_id=bed, poll_s=0.02, **settings),
                    bundle=bundle, clock=clock)
    todo = sorted(commands, key=lambda c: c[0])
    for a in range(0, x.shape[1], 250):
        source.put_block(a, x[:, a:a + 250])
    source.end()
    for _, command in todo:
        command(engine)
    engine.run()
    engine.close()
    return engine


def latched_session(tmp_path, bundle, clock):
    """Edema raised by an inverted lead I, then latched when the lead is upright again."""
    x = flip_lead_i(synthetic_ecg(120, FS, seed=3), FS, [(10, 60)])
    engine = session(tmp_path / "log.db", bundle, x, clock)
    assert engine.active_alarms() and engine.active_alarms()[0].state == A.LATCHED
    return engine


def test_a_latched_alarm_is_carried_into_the_next_session(tmp_path, bundle):
    clock = Clock()
    first = latched_session(tmp_path, bundle, clock)
    clock.t += 60  # restarted a minute later
    x = synthetic_ecg(30, FS, seed=9)  # upright: the condition does not return
    second = session(tmp_path / "log.db", bundle, x, clock)
    carried = [c for c in second.summary.transitions if c.carried_over_from is not None]
    assert [(c.alarm, c.state, c.previous, c.cause) for c in carried] == [("edema", A.LATCHED, A.CLEARED, "carried_over")]
    assert carried[0].carried_over_from == first.session_id and second.session_id != first.session_id
    assert "Edema risk" in carried[0].message
    assert [c.alarm for c in second.active_alarms()] == ["edema"]
    con = sqlite3.connect(tmp_path / "log.db")
    row = con.execute("select state, cause, carried_over_from from alarm_transitions where session_id=? and alarm='edema'",
                      (second.session_id,)).fetchall()
    assert row == [("latched", "carried_over", first.session_id)]


def test_acknowledging_a_carried_alarm_clears_it_and_it_stays_cleared(tmp_path, bundle):
    clock = Clock()
    latched_session(tmp_path, bundle, clock)
    clock.t += 30
    x = synthetic_ecg(30, FS, seed=9)
    second = session(tmp_path / "log.db", bundle, x, clock,
                     commands=[(0, lambda e: e.acknowledge("edema", who="rn.lee"))])
    edema = [(c.state, c.cause, c.who) for c in second.summary.transitions if c.alarm == "edema"]
    assert edema == [(A.LATCHED, "carried_over", None), (A.CLEARED, "acknowledge", "rn.lee")]
    clock.t += 30
    third = session(tmp_path / "log.db", bundle, x, clock)
    assert not [c for c in third.summary.transitions if c.alarm == "edema"]


def test_nothing_is_carried_after_carry_over_s_or_to_another_bed(tmp_path, bundle):
    clock = Clock()
    latched_session(tmp_path, bundle, clock)
    x = synthetic_ecg(20, FS, seed=9)
    clock.t += 10
    other = session(tmp_path / "log.db", bundle, x, clock, bed="bed-8")
    assert not [c for c in other.summary.transitions if c.carried_over_from]
    clock.t += 400  # the bed's previous session ended more than 300 s ago
    late = session(tmp_path / "log.db", bundle, x, clock)
    assert not [c for c in late.summary.transitions if c.carried_over_from]


def test_an_active_latching_alarm_whose_condition_returns_sounds_as_active(tmp_path, bundle):
    clock = Clock()
    x = flip_lead_i(synthetic_ecg(60, FS, seed=3), FS, [(10, 60)])  # still inverted when the session ends
    first = session(tmp_path / "log.db", bundle, x, clock)
    assert first.active_alarms()[0].state == A.ACTIVE
    clock.t += 20
    second = session(tmp_path / "log.db", bundle, flip_lead_i(synthetic_ecg(60, FS, seed=4), FS, [(0, 60)]), clock)
    edema = [(c.state, c.cause) for c in second.summary.transitions if c.alarm == "edema"]
    assert edema[0] == (A.LATCHED, "carried_over") and edema[1] == (A.ACTIVE, "condition")


def test_carry_over_can_be_turned_off(tmp_path, bundle):
    clock = Clock()
    latched_session(tmp_path, bundle, clock)
    clock.t += 10
    second = session(tmp_path / "log.db", bundle, synthetic_ecg(20, FS, seed=9), clock, carry_over_s=0)
    assert not second.active_alarms()
