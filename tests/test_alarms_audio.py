"""The audible signal: a distinct pattern per priority, interrupted by a higher priority, silent when paused."""

from __future__ import annotations

import sys
import time
from dataclasses import replace

import pytest

from bedside.alarm_config import AudioPattern, load_alarm_config
from bedside.audio import Annunciator, command_output
from bedside.events import AlarmChange, AlarmKind, AlarmState, Priority

A = AlarmState


def fast_settings():
    audio = load_alarm_config().audio
    return replace(audio, patterns={Priority.HIGH: AudioPattern((0.0, 0.02, 0.04, 0.1, 0.12), 0.4),
                                    Priority.MEDIUM: AudioPattern((0.0, 0.05, 0.10), 0.5),
                                    Priority.LOW: AudioPattern((0.0, 0.08), 0.9)})


def change(alarm: str, state: AlarmState, priority: Priority = Priority.MEDIUM) -> AlarmChange:
    return AlarmChange(t_s=0.0, wall_time=time.time(), alarm=alarm, kind=AlarmKind.PHYSIOLOGICAL, priority=priority,
                       state=state, previous=None, message="")


@pytest.fixture
def played():
    pulses: list[tuple[float, Priority]] = []
    ann = Annunciator(fast_settings(), output=lambda p: pulses.append((time.monotonic(), p)))
    ann.start()
    yield ann, pulses
    ann.stop()


def test_each_priority_plays_its_own_pattern(played):
    ann, pulses = played
    for priority, pattern in fast_settings().patterns.items():
        pulses.clear()
        ann(change("x", A.ACTIVE, priority))
        time.sleep(pattern.repeat_s * 1.5)
        ann(change("x", A.CLEARED, priority))
        time.sleep(0.05)
        burst = [t for t, p in pulses if p == priority][: len(pattern.pulses_s)]
        offsets = [round(t - burst[0], 2) for t in burst]
        assert offsets == pytest.approx(list(pattern.pulses_s), abs=0.03), priority
        assert len(pulses) == 2 * len(pattern.pulses_s)  # the burst repeats after repeat_s


def test_higher_priority_takes_over_and_silence_is_immediate(played):
    ann, pulses = played
    t0 = time.monotonic()
    ann(change("lead_off", A.ACTIVE, Priority.LOW))
    time.sleep(0.03)
    ann(change("edema", A.ACTIVE, Priority.HIGH))
    time.sleep(0.2)
    assert [p for _, p in pulses][:2] == [Priority.LOW, Priority.HIGH]
    assert pulses[1][0] - t0 < 0.25  # the high-priority burst starts at once (signal generation delay)
    ann(change("edema", A.AUDIO_PAUSED, Priority.HIGH))
    time.sleep(0.05)
    assert ann.current == Priority.LOW  # the low-priority alarm still sounds
    ann(change("lead_off", A.ACKNOWLEDGED, Priority.LOW))
    n = len(pulses)
    time.sleep(0.5)
    assert len(pulses) == n and ann.current is None


def test_latched_alarms_keep_sounding(played):
    ann, pulses = played
    ann(change("edema", A.LATCHED))
    time.sleep(0.2)
    assert ann.current == Priority.MEDIUM and len(pulses) == 3


def test_configured_command_runs_per_pulse(tmp_path):
    out = tmp_path / "pulses.txt"
    play = command_output(f"{sys.executable} -c \"open('{out}', 'a').write('{{priority}}\\n')\"")
    ann = Annunciator(fast_settings(), output=play)
    ann.start()
    ann(change("edema", A.ACTIVE, Priority.MEDIUM))
    time.sleep(0.3)
    ann(change("edema", A.CLEARED, Priority.MEDIUM))
    ann.stop()
    deadline = time.time() + 10
    while time.time() < deadline and (not out.exists() or len(out.read_text().split()) < 3):
        time.sleep(0.05)
    assert out.read_text().split() == ["medium"] * 3
