"""The HL7 outbox in the bed's log: written in the same transaction as what it reports (a failed commit
writes neither; kill -9 loses nothing), MSH-13 = row id never reused, the bound drops observations only."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bedside.events import AlarmChange, AlarmKind, AlarmState, Priority, WindowResult
from bedside.hl7 import messages
from bedside.hl7.outbox import Outbox, outbox_stats
from bedside.hl7.settings import OutboxSettings
from bedside.store import Store, StoreError
from tests.engine_helpers import flip_lead_i, polarity_bundle, synthetic_ecg, write_record
from tests.engine_helpers import wait_until
from tests.test_hl7_sender import AckServer, msh

REPO = Path(__file__).resolve().parents[1]


def new_store(path: Path, max_messages: int = 20_000) -> tuple[Store, int]:
    store = Store(path, outbox=Outbox(thresholds={"edema": 0.5, "cardiomegaly": 0.5},
                                      validated={"edema": True, "cardiomegaly": False},
                                      settings=OutboxSettings(max_messages=max_messages)))
    sid = store.open_session(bed_id="bed-2", source_kind="live", device="test", fs_hz=500.0, bundle_sha256=None,
                             bundle_version=None, provider=None, hop_s=5.0, config_sha256="x", resume_key=None,
                             engine_version="test", wall_time=time.time())
    return store, sid


def window(i: int) -> WindowResult:
    return WindowResult(t_s=10.0 + 5 * i, index=i, scored=True, reason="", smoothed={"edema": 0.3, "cardiomegaly": 0.2},
                        hr_bpm=72.0, quality={"I": 0.9, "II": 0.8})


def change(seq: int, state: AlarmState = AlarmState.ACTIVE) -> AlarmChange:
    return AlarmChange(t_s=10.0 + seq, wall_time=time.time(), alarm="edema", kind=AlarmKind.PHYSIOLOGICAL,
                       priority=Priority.MEDIUM, state=state, previous=AlarmState.CLEARED, message="Edema risk 0.71 > 0.50",
                       score=0.71, threshold=0.5, seq=seq)


def table(db: Path, sql: str) -> list[tuple]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def test_a_commit_writes_its_messages_in_the_same_transaction(tmp_path):
    db = tmp_path / "bed.db"
    store, sid = new_store(db)
    store.commit(sid, [window(0), window(1)], time.time(), [(1, change(1))], [])
    rows = table(db, "select id, kind, ref, session_id, bed_id, message from hl7_outbox order by id")
    assert [(r[1], r[2]) for r in rows] == [("observation", 0), ("observation", 1), ("alarm", 1)]
    for row_id, _, _, _, bed, text in rows:
        env = messages.parse(text)
        assert env.bed_seq == row_id and env.report.bed_id == bed == "bed-2"
    with pytest.raises(StoreError, match="write failed"):  # seq 1 again: the unique index refuses the batch
        store.commit(sid, [window(2)], time.time(), [(2, change(2)), (2, change(1))], [])
    assert table(db, "select count(*) from hl7_outbox")[0][0] == 3  # no message for the refused batch
    assert table(db, "select count(*) from windows")[0][0] == 2
    store.close()


def test_a_failing_outbox_write_fails_the_whole_commit(tmp_path):
    db = tmp_path / "bed.db"
    store, sid = new_store(db)
    store.db.execute("create trigger refuse before insert on hl7_outbox begin select raise(abort, 'outbox full'); end")
    with pytest.raises(StoreError, match="outbox full"):
        store.commit(sid, [window(0)], time.time(), [(0, change(1))], [])
    assert table(db, "select count(*) from windows")[0][0] == 0
    assert table(db, "select count(*) from alarm_transitions")[0][0] == 0
    store.close()


def test_without_hl7_nothing_is_queued(tmp_path):
    db = tmp_path / "bed.db"
    store = Store(db)
    sid = store.open_session(bed_id="bed-2", source_kind="live", device="t", fs_hz=500.0, bundle_sha256=None,
                             bundle_version=None, provider=None, hop_s=5.0, config_sha256="x", resume_key=None,
                             engine_version="test", wall_time=time.time())
    store.commit(sid, [window(0)], time.time(), [(0, change(1))], [])
    assert table(db, "select count(*) from hl7_outbox")[0][0] == 0
    store.close()


def test_sequence_numbers_are_never_reused(tmp_path):
    db = tmp_path / "bed.db"
    store, sid = new_store(db)
    store.commit(sid, [window(0), window(1)], time.time(), [], [])
    store.db.execute("delete from hl7_outbox")  # everything delivered
    store.close()
    store, sid = new_store(db)  # the bed restarts: a new session
    store.commit(sid, [window(0)], time.time(), [], [])
    assert table(db, "select id from hl7_outbox") == [(3,)]
    store.close()


def test_the_bound_drops_the_oldest_observations_never_a_transition(tmp_path):
    db = tmp_path / "bed.db"
    store, sid = new_store(db, max_messages=10)
    for i in range(12):
        store.commit(sid, [window(i)], time.time(), [(i, change(i + 1))] if i % 4 == 0 else [], [])
    kinds = table(db, "select kind, ref from hl7_outbox order by id")
    assert [r for r in kinds if r[0] == "alarm"] == [("alarm", 1), ("alarm", 5), ("alarm", 9)]
    assert [r[1] for r in kinds if r[0] == "observation"] == [5, 6, 7, 8, 9, 10, 11]  # the newest 7
    assert outbox_stats(store.db, "bed-2") == {"waiting_alarms": 3, "waiting_observations": 7, "delivered": 0,
                                                "dropped_observations": 5, "build_errors": 0}
    for i in range(12, 30):  # only alarms: the bound is exceeded rather than lose one
        store.commit(sid, [], time.time(), [(i, change(i + 1))], [])
    counts = dict(table(db, "select kind, count(*) from hl7_outbox group by kind"))
    assert counts == {"alarm": 21}
    assert outbox_stats(store.db, "bed-2")["dropped_observations"] == 12
    store.close()


@pytest.fixture(scope="module")
def record_and_bundle(tmp_path_factory):
    folder = tmp_path_factory.mktemp("kill")
    x = flip_lead_i(synthetic_ecg(360, 250.0, seed=11), 250.0, [(30, 70), (110, 150), (190, 230), (270, 310)])
    return write_record(folder, "flips", x, 250.0), polarity_bundle(folder / "b.onnx")


def replay_process(record: Path, bundle: Path, db: Path, port: int) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "bedside.cli", "replay", str(record), "--model", str(bundle), "--db", str(db),
           "--speed", "90", "--bed", "bed-k", "--hl7", f"127.0.0.1:{port}", "-q"]
    return subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})


def ref(text: str) -> tuple[int, str, int]:
    """(session, report type, transition seq or window index) of a message, from its OBR-3."""
    obr3 = next(seg for seg in text.split("\r") if seg.startswith("OBR|")).split("|")[3].split("^")[0]
    _, session, item = obr3.rsplit(".", 2)
    return int(session), "AlarmReport" if item[0] == "A" else "ObservationReport", int(item[1:])


@pytest.mark.slow
def test_kill_9_loses_no_message_and_the_central_gets_each_once_in_order(tmp_path, record_and_bundle):
    record, bundle = record_and_bundle
    seed = int(os.environ.get("BEDSIDE_TEST_SEED", time.time_ns() % 10**6))
    rng = random.Random(seed)
    central = AckServer()
    try:
        db = tmp_path / "bed.db"
        for trial in range(2):
            proc = replay_process(record, bundle, db, central.port)
            wait_until(lambda: db.exists() or proc.poll() is not None, 60)
            delay = rng.uniform(0.5, 4.0)
            time.sleep(delay)
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            where = f"(seed {seed}, trial {trial}, killed after {delay:.2f} s)"
            # every committed window and transition has its message: accepted by the central, or waiting
            accepted = {ref(t) for t in central.accepted}
            waiting = {(s, "AlarmReport" if k == "alarm" else "ObservationReport", ref)
                       for s, k, ref in table(db, "select session_id, kind, ref from hl7_outbox")}
            committed = {(s, "AlarmReport", q) for s, q in table(db, "select session_id, seq from alarm_transitions")}
            committed |= {(s, "ObservationReport", i) for s, i in table(db, "select session_id, idx from windows")}
            assert committed == accepted | waiting, where
        rerun = replay_process(record, bundle, db, central.port)
        assert rerun.wait(120) == 0
        assert table(db, "select count(*) from hl7_outbox") == [(0,)]  # drained at the end of the replay
    finally:
        central.close()
    reports = [messages.parse(t).report for t in central.accepted]  # de-duplicated by MSH-10
    transitions = table(db, "select session_id, seq from alarm_transitions order by session_id, seq")
    assert [(r.session_id, r.seq) for r in reports if hasattr(r, "seq")] == transitions
    windows = table(db, "select session_id, idx from windows order by session_id, idx")
    assert [(r.session_id, r.window_index) for r in reports if hasattr(r, "window_index")] == windows
    seqs = [int(msh(t, 13)) for t in central.accepted]
    assert seqs == sorted(seqs)
