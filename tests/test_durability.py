"""kill -9 at random moments: the log stays intact, nothing announced is lost, a restart does not duplicate."""

from __future__ import annotations

import os
import random
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from bedside.replay import ReplayOptions, build_replay_engine
from tests.engine_helpers import flip_lead_i, polarity_bundle, synthetic_ecg, write_record

REPO = Path(__file__).resolve().parents[1]
LINE = re.compile(r"^\S+ #(\d+) \S+\s+(PHYS|TECH) (\S+) (\S+)")
SPEED = 90.0  # 6 minutes of signal in 4 s


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    folder = tmp_path_factory.mktemp("dur")
    x = synthetic_ecg(360, 250.0, seed=11)
    x = flip_lead_i(x, 250.0, [(30, 70), (110, 150), (190, 230), (270, 310)])  # edema raised and latched 4 times
    x[:, int(200 * 250):int(203 * 250)] = float("nan")  # and a gap
    record = write_record(folder, "flips", x, 250.0)
    bundle = polarity_bundle(folder / "b.onnx")
    engine = build_replay_engine(ReplayOptions(record=str(record), model=str(bundle), db=str(folder / "ref.db")))
    summary = engine.run()
    engine.close()
    reference = [(c.seq, c.alarm, c.state.value, round(c.t_s, 3)) for c in summary.transitions]
    assert len(reference) >= 10
    return record, bundle, reference, summary.windows


def logged(db: Path) -> list[tuple]:
    con = sqlite3.connect(db)
    try:
        assert con.execute("pragma integrity_check").fetchone() == ("ok",)
        return [(s, a, st, round(t, 3)) for s, a, st, t in
                con.execute("select seq, alarm, state, t_s from alarm_transitions order by session_id, seq")]
    finally:
        con.close()


def replay_process(record: Path, bundle: Path, db: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "bedside.cli", "replay", str(record), "--model", str(bundle), "--db", str(db),
           "--speed", str(SPEED)]
    return subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})


@pytest.mark.slow
def test_kill_9_at_random_moments_then_restart(tmp_path, setup):
    record, bundle, reference, n_windows = setup
    seed = int(os.environ.get("BEDSIDE_TEST_SEED", time.time_ns() % 10**6))
    rng = random.Random(seed)
    for trial in range(4):
        db = tmp_path / f"kill{trial}.db"
        proc = replay_process(record, bundle, db)
        announced: list[tuple[int, str, str]] = []

        def read(p=proc, out=announced):
            for line in p.stdout:
                m = LINE.match(line)
                if m:
                    out.append((int(m.group(1)), m.group(3), m.group(4).lower()))
        reader = threading.Thread(target=read)
        reader.start()
        if trial > 0:  # wait for the log to exist (start-up time varies with the machine's load)
            deadline = time.time() + 60
            while not db.exists() and time.time() < deadline and proc.poll() is None:
                time.sleep(0.01)
        delay = rng.uniform(0.0, 1.0) if trial == 0 else rng.uniform(0.0, 360 / SPEED + 0.5)
        time.sleep(delay)  # trial 0: during start-up; then anywhere in the run, commits included
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        reader.join(10)
        where = f"(seed {seed}, trial {trial}, killed after {delay:.2f} s)"
        if not db.exists():
            continue  # killed before the log was created
        after_kill = logged(db)
        assert after_kill == reference[:len(after_kill)], where  # a prefix of the uninterrupted run
        committed = {(s, a, st) for s, a, st, _ in after_kill}
        assert set(announced) <= committed, where  # nothing announced was lost
        rerun = replay_process(record, bundle, db)
        out, _ = rerun.communicate(timeout=60)
        assert rerun.returncode == 0, out
        final = logged(db)
        assert final == reference, where  # resumed: no duplicates, nothing missing
        con = sqlite3.connect(db)
        assert con.execute("select count(*), count(distinct idx) from windows").fetchone() == (n_windows, n_windows)
        sessions = con.execute("select end_reason from sessions").fetchall()
        assert sessions == [("complete",)], where
        con.close()


def _run(record, bundle, db, ack_at=None, stop_at=None):
    """Replay in small chunks; acknowledge every alarm when window ``ack_at`` is announced; stop at ``stop_at``."""
    engine = build_replay_engine(ReplayOptions(record=str(record), model=str(bundle), db=str(db), chunk_s=5.0))

    def listener(event):
        index = getattr(event, "index", None)
        if type(event).__name__ != "WindowResult":
            return
        if index == ack_at:
            engine.acknowledge(None, "rn.lee")
        if index == stop_at:
            engine.stop()
    engine.subscribe(listener)
    summary = engine.run()
    engine.close()
    return summary


def test_resume_replays_logged_commands_and_continues_the_sequence(tmp_path, setup):
    record, bundle, _, n_windows = setup
    reference = _run(record, bundle, tmp_path / "ref.db", ack_at=14)
    assert any(c.cause == "acknowledge" for c in reference.transitions)
    db = tmp_path / "cut.db"
    first = _run(record, bundle, db, ack_at=14, stop_at=40)
    con = sqlite3.connect(db)
    con.execute("update sessions set ended_wall = null, end_reason = null")  # as if killed after the last commit
    con.commit()
    con.close()
    second = _run(record, bundle, db)
    assert 40 - 6 < second.resumed_at_window <= 41 and second.windows == n_windows - second.resumed_at_window
    expected = [(c.seq, c.alarm, c.state, c.who) for c in reference.transitions]
    got = [(c.seq, c.alarm, c.state, c.who) for c in first.transitions + second.transitions]
    assert got == expected
    assert logged(db) == logged(tmp_path / "ref.db")


def test_a_log_that_does_not_replay_the_same_starts_a_new_session(tmp_path, setup):
    record, bundle, reference, _ = setup
    db = tmp_path / "x.db"
    _run(record, bundle, db, stop_at=60)
    con = sqlite3.connect(db)
    con.execute("update sessions set ended_wall = null")
    con.execute("update windows set scores = '{\"edema\": 0.0, \"pleural_effusion\": 0.0, \"cardiomegaly\": 0.0}'")
    con.commit()
    con.close()
    summary = _run(record, bundle, db)
    assert summary.session_id == 2 and summary.resumed_at_window is None
    assert [(s, a, st, t) for s, a, st, t in logged(db)][-len(reference):] == reference
