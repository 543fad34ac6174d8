"""The SQLite log: schema by migrations, WAL, mode 0600, one transaction per commit, round trips, review."""

from __future__ import annotations

import os
import sqlite3
import stat
import time

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bedside.cli import main, parse_since
from bedside.errors import BedsideWarning
from bedside.events import AlarmChange, AlarmKind, AlarmState, Priority, WindowResult
from bedside.store import MIGRATIONS, Store, StoreError, TechnicalEvent, query_transitions


@pytest.fixture
def db_path(tmp_path):
    return tmp_path / "log.db"


def open_session(store: Store, bed: str = "bed-1", key: str | None = None, wall: float | None = None) -> int:
    return store.open_session(bed_id=bed, source_kind="replay", device="rec", fs_hz=500.0, bundle_sha256="ab" * 32,
                              bundle_version="m 1", provider="CPUExecutionProvider", hop_s=5.0, config_sha256="cd" * 32,
                              resume_key=key, engine_version="0.1.0", wall_time=wall or time.time())


def change(seq: int, alarm: str = "edema", state: AlarmState = AlarmState.ACTIVE, **kw) -> AlarmChange:
    base = dict(t_s=5.0 * seq, wall_time=1_700_000_000.0 + seq, alarm=alarm, kind=AlarmKind.PHYSIOLOGICAL,
                priority=Priority.MEDIUM, state=state, previous=AlarmState.CLEARED, message=f"m{seq}", score=0.7,
                threshold=0.5, seq=seq)
    base.update(kw)
    return AlarmChange(**base)


def test_new_file_is_private_and_in_wal_with_full_sync(db_path):
    store = Store(db_path)
    sid = open_session(store)
    store.commit(sid, [], time.time(), [(0, change(1))], [])
    for suffix in ("", "-wal", "-shm"):
        p = db_path.with_name(db_path.name + suffix)
        assert stat.S_IMODE(p.stat().st_mode) == 0o600, suffix
    assert store.db.execute("pragma journal_mode").fetchone() == ("wal",)
    assert store.db.execute("pragma synchronous").fetchone() == (2,)  # FULL
    store.close()


def test_a_readable_existing_file_is_tightened_with_a_warning(db_path):
    db_path.touch()
    os.chmod(db_path, 0o644)
    with pytest.warns(BedsideWarning, match="readable by others"):
        Store(db_path).close()
    assert stat.S_IMODE(db_path.stat().st_mode) == 0o600


def test_migrations_are_recorded_and_applied_once(db_path):
    Store(db_path).close()
    store = Store(db_path)
    applied = [m.name for m in MIGRATIONS.applied(store.db)]
    assert applied == ["m001_initial", "m002_hl7_outbox", "m003_conditions_and_carry_over"]
    assert MIGRATIONS.pending(store.db) == []
    assert {"sessions", "alarm_transitions", "windows", "technical_events"} <= set(store.db.table_names())


def test_a_commit_is_all_or_nothing(db_path):
    store = Store(db_path)
    sid = open_session(store)
    w = WindowResult(t_s=10.0, index=0, scored=True, reason="", scores={"edema": 0.2})
    store.commit(sid, [w], time.time(), [(0, change(1))], [])
    with pytest.raises(StoreError, match="write failed"):  # seq 1 again: the unique index refuses the batch
        store.commit(sid, [WindowResult(t_s=15.0, index=1, scored=False, reason="gap")], time.time(),
                     [(1, change(2)), (1, change(1))], [])
    assert store.db.execute("select count(*) from windows").fetchone() == (1,)
    assert store.db.execute("select count(*) from alarm_transitions").fetchone() == (1,)


def test_an_unwritable_location_names_the_fix(tmp_path):
    with pytest.raises(StoreError, match="writable"):
        Store("/proc/bedside/log.db")


names = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=20)
finite = st.floats(allow_nan=False, allow_infinity=False, width=32)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(changes=st.lists(st.builds(
    change, seq=st.just(0), alarm=names.filter(bool), state=st.sampled_from(list(AlarmState)),
    kind=st.sampled_from(list(AlarmKind)), priority=st.sampled_from(list(Priority)),
    previous=st.none() | st.sampled_from(list(AlarmState)), message=names, score=st.none() | finite,
    threshold=st.none() | finite, who=st.none() | names, audio_paused_until_s=st.none() | finite,
    cause=st.sampled_from(["condition", "acknowledge", "pause_audio", "timer"]), t_s=finite), max_size=8),
    windows=st.lists(st.builds(WindowResult, t_s=finite, index=st.just(0), scored=st.booleans(), reason=names,
                               scores=st.dictionaries(names, st.floats(0, 1), max_size=3),
                               hr_bpm=st.none() | st.floats(20, 300), quality=st.dictionaries(names, st.floats(0, 1), max_size=3),
                               lead_off=st.dictionaries(names, st.none() | st.booleans(), max_size=3), detail=names),
                     max_size=5))
def test_round_trip(tmp_path_factory, changes, windows):
    store = Store(tmp_path_factory.mktemp("rt") / "log.db")
    sid = open_session(store)
    changes = [(i, AlarmChange(**{**c.__dict__, "seq": i + 1})) for i, c in enumerate(changes)]
    windows = [WindowResult(**{**w.__dict__, "index": i}) for i, w in enumerate(windows)]
    store.commit(sid, windows, 1_700_000_000.0, changes, [(1, TechnicalEvent(1.0, 2.0, "gap", "x", 10, 5))])
    back = store.transitions(sid)
    assert [(i, c.alarm, c.state, c.previous, c.kind, c.priority, c.message, c.who, c.cause, c.seq) for i, c in back] == \
        [(i, c.alarm, c.state, c.previous, c.kind, c.priority, c.message, c.who, c.cause, c.seq) for i, c in changes]
    for (_, a), (_, b) in zip(back, changes):
        assert a.score == b.score and a.threshold == b.threshold and a.t_s == b.t_s
    got = store.windows(sid)
    assert [(w.index, w.scored, w.reason, w.detail, w.lead_off) for w in got] == \
        [(w.index, w.scored, w.reason, w.detail, w.lead_off) for w in windows]
    for a, b in zip(got, windows):
        assert a.scores == pytest.approx({k: round(v, 4) for k, v in b.scores.items()}, abs=1e-9)
        assert a.hr_bpm == (None if b.hr_bpm is None else round(b.hr_bpm, 2))
    store.close()


def test_interrupted_sessions_are_closed_and_replays_found_by_key(db_path):
    store = Store(db_path)
    a = open_session(store, bed="bed-1", key="k1")
    b = open_session(store, bed="bed-1", key="k2")
    store.end_session(b, "complete", time.time())
    assert store.latest_session("k1")["id"] == a and store.latest_session("k1")["end_reason"] is None
    assert store.latest_session("k2")["end_reason"] == "complete" and store.latest_session("k3") is None
    assert store.close_interrupted("bed-1", time.time()) == [a]
    row = store.db["sessions"].get(a)
    assert row["end_reason"] == "interrupted" and row["ended_utc"]


def test_query_filters_and_alerts_command(db_path):
    store = Store(db_path)
    s1, s2 = open_session(store, bed="bed-1"), open_session(store, bed="bed-2")
    now = time.time()
    store.commit(s1, [], now, [(0, change(1, wall_time=now - 7200)), (1, change(2, wall_time=now - 60))], [])
    store.commit(s2, [], now, [(0, change(1, alarm="lead_off", kind=AlarmKind.TECHNICAL, wall_time=now - 30,
                                        who="rn.lee"))], [])
    store.close()
    assert len(query_transitions(db_path)) == 3
    assert [r["seq"] for r in query_transitions(db_path, since_wall=now - 3600)] == [2, 1]
    assert [r["alarm"] for r in query_transitions(db_path, bed_id="bed-2")] == ["lead_off"]
    runner = CliRunner()
    out = runner.invoke(main, ["alerts", "--db", str(db_path), "--since", "1h", "--format", "csv"])
    assert out.exit_code == 0, out.output
    lines = out.output.strip().splitlines()
    assert lines[0].startswith("utc,bed_id,session_id,seq") and len(lines) == 3 and "rn.lee" in lines[2]
    out = runner.invoke(main, ["alerts", "--db", str(db_path), "--session", str(s1), "--format", "json"])
    import json
    assert [r["seq"] for r in json.loads(out.output)] == [1, 2]
    out = runner.invoke(main, ["alerts", "--db", str(db_path)])
    assert out.exit_code == 0 and "TECH" in out.output and "PHYS" in out.output
    out = runner.invoke(main, ["alerts", "--db", str(db_path.with_name("nope.db"))])
    assert out.exit_code == 1 and "no such alarm log" in out.output
    out = runner.invoke(main, ["alerts", "--db", str(db_path), "--since", "yesterday"])
    assert out.exit_code == 2 and "duration ago" in out.output


def test_parse_since():
    assert parse_since("2h", now=10_000.0) == 10_000.0 - 7200
    assert parse_since("90s", now=100.0) == 10.0
    assert parse_since("1700000000") == 1_700_000_000.0
    assert parse_since("2023-11-14T22:13:20+00:00") == 1_700_000_000.0


def test_log_opens_with_plain_sqlite_while_written(db_path):
    """Readers (alerts, Datasette) see committed rows while the engine holds the file open."""
    store = Store(db_path)
    sid = open_session(store)
    store.commit(sid, [], time.time(), [(0, change(1))], [])
    con = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    assert con.execute("select count(*) from alarm_transitions").fetchone() == (1,)
    assert con.execute("pragma integrity_check").fetchone() == ("ok",)
    store.close()


def _snapshot(path):
    st = os.stat(path)
    data = path.read_bytes() if path.is_file() else None
    return stat.S_IMODE(st.st_mode), st.st_mtime_ns, data


def _foreign_db(path):
    con = sqlite3.connect(path)
    con.execute("create table notes (id integer primary key, text)")
    con.execute("insert into notes (text) values ('not ours')")
    con.commit()
    con.close()
    return path


@pytest.mark.parametrize("make, message", [
    (lambda p: p.mkdir() or p, "is a directory"),
    (lambda p: (p.write_text("shopping list\n"), p)[1], "not an SQLite database"),
    (lambda p: (p.write_bytes(b"SQLite format 2\0" + b"\0" * 100), p)[1], "not an SQLite database"),
    (lambda p: _foreign_db(p), "another application's SQLite database"),
])
def test_what_is_not_a_bedside_log_is_refused_and_left_unchanged(tmp_path, make, message):
    path = make(tmp_path / "thing")
    os.chmod(path, 0o644)
    before, listing = _snapshot(path), sorted(os.listdir(tmp_path))
    with pytest.raises(StoreError, match=message) as err:
        Store(path)
    assert str(path) in str(err.value) and "nothing was changed" in str(err.value)
    assert _snapshot(path) == before and sorted(os.listdir(tmp_path)) == listing  # no chmod, no tables, no -wal/-shm


def test_devices_fifos_and_an_empty_name_are_refused(tmp_path):
    before = stat.S_IMODE(os.stat("/dev/null").st_mode)
    with pytest.raises(StoreError, match="not a regular file"):
        Store("/dev/null")
    assert stat.S_IMODE(os.stat("/dev/null").st_mode) == before
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(StoreError, match="not a regular file"):
        Store(fifo)
    with pytest.raises(StoreError, match="--db is empty"):
        Store("")
    mode = stat.S_IMODE(os.stat(".").st_mode)
    result = CliRunner().invoke(main, ["alerts", "--db", ""])
    assert result.exit_code != 0 and stat.S_IMODE(os.stat(".").st_mode) == mode


def test_a_bedside_log_is_reopened_and_tightened(db_path):
    Store(db_path).close()
    os.chmod(db_path, 0o644)
    with pytest.warns(BedsideWarning, match="readable by others"):
        Store(db_path).close()
    assert stat.S_IMODE(db_path.stat().st_mode) == 0o600


def test_two_processes_creating_one_new_log_both_succeed(tmp_path):
    import threading

    for i in range(5):
        path, errors = tmp_path / f"new{i}.db", []
        barrier = threading.Barrier(2)

        def create():
            barrier.wait()
            try:
                store = Store(path)
                open_session(store)
                store.close()
            except StoreError as exc:
                errors.append(exc)
        threads = [threading.Thread(target=create) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert sqlite3.connect(path).execute("select count(*) from sessions").fetchone() == (2,)


@pytest.mark.parametrize("writable_dir", [True, False])
def test_alerts_opens_the_log_read_only(db_path, monkeypatch, writable_dir):
    store = Store(db_path)
    sid = open_session(store)
    store.commit(sid, [], time.time(), [(0, change(1))], [])
    store.close()
    os.chmod(db_path, 0o444)
    real_access, real_connect, uris = os.access, sqlite3.connect, []
    # tests run as root: simulate a reviewer who may read the log but not write next to it
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: writable_dir if mode & os.W_OK else real_access(p, mode))
    monkeypatch.setattr(sqlite3, "connect", lambda target, **kw: uris.append(target) or real_connect(target, **kw))
    rows = query_transitions(db_path)
    assert [r["seq"] for r in rows] == [1]
    assert uris and all("mode=ro" in u for u in uris)
    assert all(("immutable=1" in u) != writable_dir for u in uris)
    assert stat.S_IMODE(db_path.stat().st_mode) == 0o444
