"""Measure each alarm's condition delay in replay (the engine as `bedside replay` runs it) and the signal delay.

For each alarm, synthetic 12-lead records (tests/engine_helpers.py) switch a condition on at a known time
``onset`` and off again; onsets are spread over the 5 s window grid (phase 0, 1.25, 2.5, 3.75 s) because
the delay depends on where the onset falls. Reported: delay from onset to ACTIVE, and from the end of the
condition to the clearing transition (LATCHED for latching alarms, CLEARED otherwise), min-max over phases.
The alarm signal generation delay is the time from an AlarmChange being announced to the first audio pulse
(the commit that precedes the announcement is reported too).

    .venv/bin/python scripts/measure_alarm_delays.py
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bedside.alarm_config import load_alarm_config  # noqa: E402
from bedside.audio import Annunciator  # noqa: E402
from bedside.events import AlarmChange  # noqa: E402
from bedside.leads import LEAD_INDEX  # noqa: E402
from bedside.replay import ReplayOptions, build_replay_engine  # noqa: E402
from tests.engine_helpers import flip_lead_i, polarity_bundle, synthetic_ecg, write_record  # noqa: E402

FS = 500.0
ON, OFF, LENGTH = 60.0, 120.0, 180.0
PHASES = (0.0, 1.25, 2.5, 3.75)


def scenario(name: str, phase: float, seed: int) -> np.ndarray:
    on, off = ON + phase, OFF + phase
    a, b = int(on * FS), int(off * FS)
    if name in ("hr_high", "hr_low"):
        bpm = np.full(int(LENGTH * FS), 75.0)
        bpm[a:b] = 150.0 if name == "hr_high" else 38.0
        return synthetic_ecg(LENGTH, FS, hr_bpm=bpm, seed=seed)
    x = synthetic_ecg(LENGTH, FS, seed=seed)
    if name == "edema":
        return flip_lead_i(x, FS, [(on, off)])
    if name == "lead_off":
        x[LEAD_INDEX["V3"], a:b] = 0.0
    elif name == "poor_signal":
        x[LEAD_INDEX["V2"], a:b] += np.random.default_rng(seed).normal(0, 1.0, b - a).astype(np.float32)
    elif name == "signal_gap":
        x[:, a:a + int(2 * FS)] = np.nan  # a 2 s gap: the condition ends when the gap has left the window
    return x


def measure(folder: Path, bundle: Path, name: str) -> tuple[list[float], list[float]]:
    raised, cleared = [], []
    for k, phase in enumerate(PHASES):
        rec = write_record(folder, f"{name}{k}", scenario(name, phase, seed=k), FS)
        engine = build_replay_engine(ReplayOptions(record=str(rec), model=str(bundle), db=str(folder / f"{name}{k}.db")))
        summary = engine.run()
        engine.close()
        changes = [c for c in summary.transitions if c.alarm == name]
        end = ON + phase + 2.0 if name == "signal_gap" else OFF + phase
        raised += [c.t_s - (ON + phase) for c in changes[:1] if c.state.value == "active"]
        cleared += [c.t_s - end for c in changes[1:2]]
    return raised, cleared


def signal_delay(config) -> tuple[float, float]:
    """Announcement -> first pulse of the annunciator (wall clock), mean and max over 20 alarms."""
    delays = []
    first: list[float] = []
    ann = Annunciator(config.audio, output=lambda p: first.append(time.perf_counter()))
    ann.start()
    from bedside.events import AlarmKind, AlarmState, Priority
    for i in range(20):
        first.clear()
        t = time.perf_counter()
        ann(AlarmChange(0.0, time.time(), "edema", AlarmKind.PHYSIOLOGICAL, Priority.MEDIUM, AlarmState.ACTIVE,
                        AlarmState.CLEARED, ""))
        while not first:
            time.sleep(0.0005)
        delays.append(first[0] - t)
        ann(AlarmChange(0.0, time.time(), "edema", AlarmKind.PHYSIOLOGICAL, Priority.MEDIUM, AlarmState.CLEARED,
                        AlarmState.ACTIVE, ""))
        time.sleep(0.02)
    ann.stop()
    return float(np.mean(delays)), float(np.max(delays))


def main() -> None:
    config = load_alarm_config()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        bundle = polarity_bundle(folder / "polarity.onnx")
        for name in ("edema", "hr_high", "hr_low", "lead_off", "poor_signal", "signal_gap"):
            raised, cleared = measure(folder, bundle, name)
            rows.append((name, raised, cleared))
        # the commit before each announcement: one replay's logging time per iteration
        rec = write_record(folder, "commit", synthetic_ecg(600, FS, seed=9), FS)
        engine = build_replay_engine(ReplayOptions(record=str(rec), model=str(bundle), db=str(folder / "c.db"),
                                                   chunk_s=5.0))
        summary = engine.run()
        engine.close()
    commit_ms = 1000 * summary.timings["logging"] / max(1, summary.windows)
    mean_s, max_s = signal_delay(config)

    def span(v: list[float]) -> str:
        return "not raised" if not v else f"{min(v):.1f}" if min(v) == max(v) else f"{min(v):.1f}-{max(v):.1f}"

    print("| alarm | onset -> ACTIVE (s) | end -> cleared/latched (s) | runs |")
    print("|---|---|---|---|")
    for name, raised, cleared in rows:
        print(f"| {name} | {span(raised)} | {span(cleared)} | {len(PHASES)} onset phases |")
    print(f"\ncommit before announcement: {commit_ms:.1f} ms per window (WAL, synchronous=FULL, this disk)")
    print(f"alarm signal generation: announcement -> first pulse {1000 * mean_s:.1f} ms mean, {1000 * max_s:.1f} ms max")


if __name__ == "__main__":
    main()
