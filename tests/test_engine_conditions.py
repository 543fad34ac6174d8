"""Technical conditions that live outside the engine (Engine.add_condition_source): polled once per loop
iteration, refused at registration when not a technical alarm of the settings, committed then announced."""

from __future__ import annotations

import sqlite3
from dataclasses import replace

import pytest

from bedside.alarm_config import Persistence, TechnicalSettings, load_alarm_config
from bedside.engine import Engine, EngineSettings
from bedside.events import AlarmChange, AlarmKind, AlarmState, Priority
from bedside.store import Store
from tests.engine_helpers import FeedSource, synthetic_ecg

FS = 500.0


def config_with(name: str):
    """The packaged settings plus one technical alarm (as another helper adds ``central_unreachable``)."""
    base = load_alarm_config()
    extra = TechnicalSettings(priority=Priority.LOW, persistence=Persistence(1, 1, 1), after_s=0.0)
    return replace(base, technical={**base.technical, name: extra})


class OneBlockPerPoll(FeedSource):
    """A live source that hands over one queued item per poll (one loop iteration each)."""

    def poll(self, timeout_s: float):
        if self._ended:
            return None
        item = self.queue.get(timeout=timeout_s)
        if item is None:
            self._ended = True
            return None
        return [item]


def make(tmp_path, config):
    source = OneBlockPerPoll(FS)
    engine = Engine(source, Store(tmp_path / "log.db"), config, EngineSettings(bed_id="bed-7", poll_s=0.02))
    return engine, source


def test_an_unknown_name_is_refused_at_registration(tmp_path):
    engine, _ = make(tmp_path, load_alarm_config())
    with pytest.raises(ValueError, match="no_such_condition"):
        engine.add_condition_source(lambda: {"no_such_condition": (False, "")})


def test_a_name_the_engine_decides_is_refused(tmp_path):
    engine, _ = make(tmp_path, config_with("test_link_down"))
    with pytest.raises(ValueError, match="lead_off"):
        engine.add_condition_source(lambda: {"lead_off": (True, "")})


def test_a_malformed_value_is_refused(tmp_path):
    engine, _ = make(tmp_path, config_with("test_link_down"))
    with pytest.raises(ValueError, match="present"):
        engine.add_condition_source(lambda: {"test_link_down": "down"})


def test_transitions_are_committed_then_announced_and_a_failing_source_is_counted(tmp_path):
    engine, source = make(tmp_path, config_with("test_link_down"))
    x = synthetic_ecg(30, FS)
    # the source's answers, one per poll: up, down (twice), up, then it raises, then down again
    answers = iter([(False, ""), (True, "central 10.0.0.5:2575 refused"), (True, "still"), (False, ""),
                    RuntimeError("socket gone"), (True, "again")])
    last = [(False, "")]
    calls = []

    def central():
        calls.append(1)
        value = next(answers, last[0])
        if isinstance(value, Exception):
            raise value
        last[0] = value
        return {"test_link_down": value}

    engine.add_condition_source(central)  # the registration call consumes the first answer
    seen = []

    def listener(event):
        if isinstance(event, AlarmChange) and event.alarm == "test_link_down":
            con = sqlite3.connect(tmp_path / "log.db")
            row = con.execute("select state, kind, message from alarm_transitions where session_id=? and seq=?",
                              (engine.session_id, event.seq)).fetchone()
            con.close()
            seen.append((event.state, row))

    engine.subscribe(listener)
    for a in range(0, x.shape[1], 500):  # one block per poll: the source is asked once per iteration
        source.put_block(a, x[:, a:a + 500])
    source.end()
    summary = engine.run()
    engine.close()
    states = [s for s, _ in seen]
    assert states == [AlarmState.ACTIVE, AlarmState.CLEARED, AlarmState.ACTIVE]
    assert all(row is not None and row[0] == s.value and row[1] == AlarmKind.TECHNICAL.value for s, row in seen)
    assert "10.0.0.5:2575" in seen[0][1][2]
    assert summary.condition_source_errors == 1
    assert len(calls) >= 6


def test_the_packaged_settings_accept_central_unreachable(tmp_path):
    config = load_alarm_config()
    if "central_unreachable" not in config.technical:
        pytest.skip("central_unreachable not in the packaged alarm settings yet")
    engine, _ = make(tmp_path, config)
    engine.add_condition_source(lambda: {"central_unreachable": (False, "")})  # no error
