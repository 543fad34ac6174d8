"""`bedside replay`: records of any rate and layout read in chunks, refusals with reasons, alarm delays."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest
import wfdb
from click.testing import CliRunner

from bedside.alarm_config import load_alarm_config
from bedside.cli import main
from bedside.events import AlarmState
from bedside.records import EcgRecord
from bedside.replay import ReplayOptions, build_replay_engine
from tests.engine_helpers import synthetic_ecg, write_record

A = AlarmState


def replay(*args: str):
    result = CliRunner().invoke(main, ["replay", *args], catch_exceptions=False)
    return result


def test_replay_prints_transitions_and_summary_and_logs_them(tmp_path, bundle_path, step_record):
    db = tmp_path / "alerts.db"
    out = replay(str(step_record), "--model", str(bundle_path), "--db", str(db))
    assert out.exit_code == 0, out.output
    assert "PHYS edema ACTIVE (was cleared) Edema risk" in out.output
    assert "edema LATCHED" in out.output
    assert f"Logged to {db} (session 1)" in out.output and "analysed" in out.output and "35" in out.output
    con = sqlite3.connect(db)
    assert con.execute("select count(*), sum(scored) from windows").fetchone() == (35, 35)
    assert con.execute("select alarm, state from alarm_transitions order by seq").fetchall() == [
        ("edema", "active"), ("edema", "latched")]


def test_alarm_condition_delays_match_docs_alarms_md(tmp_path, bundle_path, step_record):
    """Risk: onset 60 s, end 120 s. docs/alarms.md: raise 20-25 s after an abrupt onset, clear 15-20 s after the end."""
    engine = build_replay_engine(ReplayOptions(record=str(step_record), model=str(bundle_path), db=str(tmp_path / "d.db")))
    summary = engine.run()
    engine.close()
    raised, latched = [c for c in summary.transitions if c.alarm == "edema"]
    assert raised.state == A.ACTIVE and 20.0 <= raised.t_s - 60.0 <= 25.0
    assert latched.state == A.LATCHED and 15.0 <= latched.t_s - 120.0 <= 20.0


def test_heart_rate_alarm_delay(tmp_path, bundle_path):
    """HR steps from 70 to 150 bpm at 60 s: docs/alarms.md gives 5-15 s to hr_high."""
    x = synthetic_ecg(120, 500.0, hr_bpm=np.where(np.arange(120 * 500) < 60 * 500, 70.0, 150.0), seed=2)
    rec = write_record(tmp_path, "tachy", x, 500.0)
    engine = build_replay_engine(ReplayOptions(record=str(rec), model=str(bundle_path), db=str(tmp_path / "h.db")))
    summary = engine.run()
    engine.close()
    hr = [c for c in summary.transitions if c.alarm == "hr_high"]
    assert hr and hr[0].state == A.ACTIVE and 5.0 <= hr[0].t_s - 60.0 <= 15.0, [(c.t_s, c.message) for c in hr]
    assert hr[0].score == pytest.approx(150, abs=5)


@pytest.mark.parametrize("fs", [250.0, 360.0, 1000.0])
def test_any_sampling_rate_and_lead_layout(tmp_path, bundle_path, fs):
    rec = write_record(tmp_path, f"r{int(fs)}", synthetic_ecg(30, fs, seed=1), fs, independent_only=fs != 1000.0)
    out = replay(str(rec), "--model", str(bundle_path), "--db", str(tmp_path / "x.db"), "-q")
    assert out.exit_code == 0, out.output
    con = sqlite3.connect(tmp_path / "x.db")
    assert con.execute("select count(*), sum(scored), min(hr_bpm) > 65, max(hr_bpm) < 80 from windows").fetchone() == (5, 5, 1, 1)


def test_multi_segment_record(tmp_path, bundle_path):
    x = synthetic_ecg(40, 500.0, seed=4)
    names = ["I", "II", "V1", "V2", "V3", "V4", "V5", "V6"]
    from bedside.leads import LEAD_INDEX
    segs = []
    for k, (a, b) in enumerate([(0, 15), (15, 40)]):
        name = f"seg_{k}"
        sig = np.stack([x[LEAD_INDEX[n], int(a * 500):int(b * 500)] for n in names], axis=1).astype(np.float64)
        wfdb.wrsamp(name, fs=500, units=["mV"] * 8, sig_name=names, p_signal=sig, fmt=["16"] * 8,
                    adc_gain=[1000.0] * 8, baseline=[0] * 8, write_dir=str(tmp_path))
        segs.append((name, sig.shape[0]))
    multi = wfdb.MultiRecord(record_name="multi", fs=500, n_sig=8, sig_len=sum(n for _, n in segs),
                             seg_name=[s for s, _ in segs], seg_len=[n for _, n in segs])
    multi.n_seg = len(segs)  # wfdb sets it only when given segment objects
    multi.wrheader(write_dir=str(tmp_path))
    out = replay(str(tmp_path / "multi"), "--model", str(bundle_path), "--db", str(tmp_path / "m.db"), "-q")
    assert out.exit_code == 0, out.output
    con = sqlite3.connect(tmp_path / "m.db")
    assert con.execute("select count(*), sum(scored) from windows").fetchone() == (7, 7)


def test_long_records_are_read_in_chunks(tmp_path, bundle_path, monkeypatch):
    rec = write_record(tmp_path, "long", synthetic_ecg(600, 250.0, seed=6), 250.0)
    reads = []
    original = EcgRecord.read

    def spy(self, start=0, stop=None):
        reads.append((start, stop))
        return original(self, start, stop)

    monkeypatch.setattr(EcgRecord, "read", spy)
    engine = build_replay_engine(ReplayOptions(record=str(rec), model=str(bundle_path), db=str(tmp_path / "l.db"),
                                               chunk_s=60.0))
    summary = engine.run()
    engine.close()
    assert summary.windows == 119 and summary.scored == 119
    assert len(reads) == 10 and max(b - a for a, b in reads) == 60 * 250  # never the whole record at once
    assert engine.ring.capacity < 600 * 250 / 4


def test_refusals_name_the_problem(tmp_path, bundle_path, records_dir):
    out = replay(str(records_dir / "100"), "--model", str(bundle_path), "--db", str(tmp_path / "r.db"))
    assert out.exit_code == 1 and "missing" in out.output and "'MLII'" in out.output
    out = replay(str(records_dir / "3000003_0003"), "--model", str(bundle_path), "--db", str(tmp_path / "r.db"))
    assert out.exit_code == 1 and "needs at least one 10 s window" in out.output
    tampered = tmp_path / "tampered.onnx"
    data = bytearray(bundle_path.read_bytes())
    data[100] ^= 1
    tampered.write_bytes(bytes(data))
    out = replay(str(records_dir / "s0010_re"), "--model", str(tampered), "--db", str(tmp_path / "r.db"))
    assert out.exit_code == 1 and "checksum check failed" in out.output
    out = replay(str(records_dir / "s0010_re"), "--db", str(tmp_path / "r.db"))
    assert out.exit_code == 2 and "BEDSIDE_MODEL" in out.output
    out = replay(str(records_dir / "s0010_re"), "--model", str(bundle_path), "--fast", "--speed", "2")
    assert out.exit_code == 2 and "not both" in out.output
    assert not (tmp_path / "r.db").exists()  # nothing half-written when refused


def test_real_12_lead_record_with_model_from_environment(tmp_path, bundle_path, records_dir, monkeypatch):
    monkeypatch.setenv("BEDSIDE_MODEL", str(bundle_path))
    out = replay(str(records_dir / "s0010_re"), "--db", str(tmp_path / "p.db"), "--bed", "bed-12")
    assert out.exit_code == 0, out.output
    con = sqlite3.connect(tmp_path / "p.db")
    assert con.execute("select bed_id, device, end_reason from sessions").fetchone() == ("bed-12", "s0010_re", "complete")
    assert con.execute("select count(*), sum(scored) from windows").fetchone() == (6, 6)
    hr = [r[0] for r in con.execute("select hr_bpm from windows")]
    assert all(60 < h < 100 for h in hr)


def test_paced_replay_runs_near_its_speed(tmp_path, bundle_path):
    rec = write_record(tmp_path, "short", synthetic_ecg(20, 250.0, seed=7), 250.0)
    engine = build_replay_engine(ReplayOptions(record=str(rec), model=str(bundle_path), db=str(tmp_path / "s.db"),
                                               speed=10.0))
    summary = engine.run()
    engine.close()
    assert summary.windows == 3 and 1.8 <= summary.wall_s  # 20 s of signal at 10x takes at least 2 s


def test_ui_flag_without_the_ui_package_says_so(tmp_path, bundle_path, step_record, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_ui(name, *args, **kwargs):
        if name.startswith("bedside.ui"):
            raise ImportError("No module named 'bedside.ui'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ui)
    out = replay(str(step_record), "--model", str(bundle_path), "--db", str(tmp_path / "u.db"), "--ui")
    assert out.exit_code == 1 and "terminal UI is not installed" in out.output


def test_alarm_settings_file_is_used(tmp_path, bundle_path, step_record):
    from importlib import resources

    text = resources.files("bedside").joinpath("alarms.toml").read_text()
    (tmp_path / "a.toml").write_text(text.replace("raise_n = 3\nraise_m = 4", "raise_n = 1\nraise_m = 1", 1))
    out = replay(str(step_record), "--model", str(bundle_path), "--db", str(tmp_path / "a.db"),
                 "--alarms", str(tmp_path / "a.toml"), "-q")
    assert out.exit_code == 0
    con = sqlite3.connect(tmp_path / "a.db")
    t = con.execute("select t_s from alarm_transitions where state='active'").fetchone()[0]
    assert t - 60 < 20  # one window instead of three of four
    assert con.execute("select config_sha256 from sessions").fetchone()[0] == load_alarm_config(tmp_path / "a.toml").sha256


def test_replaying_the_same_record_again_adds_nothing_unless_asked(tmp_path, bundle_path, step_record):
    db = tmp_path / "again.db"
    assert replay(str(step_record), "--model", str(bundle_path), "--db", str(db), "-q").exit_code == 0
    out = replay(str(step_record), "--model", str(bundle_path), "--db", str(db))
    assert out.exit_code == 0 and "nothing added" in out.output and "ACTIVE" not in out.output
    out = replay(str(step_record), "--model", str(bundle_path), "--db", str(db), "--new-session", "-q")
    assert out.exit_code == 0 and "(session 2)" in out.output
    con = sqlite3.connect(db)
    assert con.execute("select session_id, count(*) from alarm_transitions group by session_id").fetchall() == [(1, 2), (2, 2)]
    assert con.execute("select count(*) from sessions").fetchone() == (2,)


def test_a_replay_never_touches_the_network_and_turns_telemetry_off(tmp_path, bundle_path, step_record, monkeypatch):
    import socket

    import onnxruntime

    calls, disabled = [], []
    monkeypatch.setattr(socket.socket, "connect", lambda self, *a: calls.append(("connect", a)))
    monkeypatch.setattr(socket.socket, "connect_ex", lambda self, *a: calls.append(("connect_ex", a)) or 0)
    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: calls.append(("getaddrinfo", a)) or [])
    monkeypatch.setattr(socket, "gethostbyname", lambda *a: calls.append(("gethostbyname", a)) or "0.0.0.0")
    real = onnxruntime.disable_telemetry_events
    monkeypatch.setattr(onnxruntime, "disable_telemetry_events", lambda: disabled.append(1) or real())
    out = replay(str(step_record), "--model", str(bundle_path), "--db", str(tmp_path / "n.db"), "-q")
    assert out.exit_code == 0, out.output
    assert calls == [] and disabled == [1]


def test_a_replay_whose_log_lost_writes_exits_non_zero_and_says_what(tmp_path, bundle_path, step_record, monkeypatch):
    from bedside.store import Store, StoreError

    def refuse(self, *args, **kwargs):
        raise StoreError(f"{self.path}: write failed: disk I/O error")
    monkeypatch.setattr(Store, "commit", refuse)
    result = CliRunner().invoke(main, ["replay", str(step_record), "--model", str(bundle_path),
                                       "--db", str(tmp_path / "lost.db"), "-q"])
    assert result.exit_code == 1, result.output
    assert "did not keep 35 analysed windows and" in result.output and "(the log is incomplete)" in result.output


def test_a_failed_replay_logs_the_record_name_never_its_path(tmp_path, bundle_path, step_record):
    engine = build_replay_engine(ReplayOptions(record=str(step_record), model=str(bundle_path), db=str(tmp_path / "f.db")))
    dat = step_record.with_suffix(".dat")
    saved = dat.read_bytes()
    dat.write_bytes(saved[:1000])  # the signal file is cut short after the replay started
    try:
        with pytest.raises(Exception):
            engine.run()
    finally:
        engine.close()
        dat.write_bytes(saved)
    (reason,) = sqlite3.connect(tmp_path / "f.db").execute("select end_reason from sessions").fetchone()
    assert reason.startswith("error: RecordError: record step") and str(step_record.parent) not in reason
