"""The engine loop: committed before announced, technical alarms (lead-off, gap, disconnect, refused bundle,
inference failure, storage), commands from another thread, listeners that fail."""

from __future__ import annotations

import sqlite3
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from bedside.alarm_config import load_alarm_config
from bedside.bundle import load_bundle
from bedside.engine import Engine, EngineSettings
from bedside.errors import BundleError
from bedside.events import AlarmChange, AlarmKind, AlarmState, Samples, Status, WindowResult
from bedside.monitor import load_bundle_or_reason
from bedside.store import Store
from tests.engine_helpers import FeedSource, flip_lead_i, polarity_bundle, synthetic_ecg

FS = 500.0
A = AlarmState


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return load_bundle(polarity_bundle(tmp_path_factory.mktemp("bundle") / "polarity.onnx"))


@pytest.fixture(scope="module")
def ecg():
    return synthetic_ecg(120, FS, seed=3)


def make_engine(tmp_path, bundle, config=None, bundle_error=None, **settings):
    source = FeedSource(FS)
    store = Store(tmp_path / "log.db")
    engine = Engine(source, store, config or load_alarm_config(),
                    EngineSettings(bed_id="bed-7", poll_s=0.02, **settings), bundle=bundle, bundle_error=bundle_error)
    return engine, source


def feed(source: FeedSource, x: np.ndarray, start: int = 0, block: int = 250, lead_off=None, skip=()):
    """Queue x in blocks from sample ``start``; blocks whose first index is in a ``skip`` range are lost."""
    for a in range(0, x.shape[1], block):
        first = start + a
        if any(lo <= first < hi for lo, hi in skip):
            continue
        source.put_block(first, x[:, a:a + block], lead_off(first) if lead_off else None)


def run(engine, source):
    source.end()
    return engine.run()


def changes(summary, alarm=None):
    return [(c.alarm, c.state) for c in summary.transitions if alarm is None or c.alarm == alarm]


def test_every_event_is_committed_before_it_is_announced(tmp_path, bundle, ecg):
    engine, source = make_engine(tmp_path, bundle)
    x = flip_lead_i(ecg, FS, [(40, 80)])
    checked = []

    def listener(event):
        con = sqlite3.connect(tmp_path / "log.db")
        try:
            if isinstance(event, AlarmChange):
                row = con.execute("select state from alarm_transitions where session_id=? and seq=?",
                                  (engine.session_id, event.seq)).fetchone()
                checked.append(row == (event.state.value,))
            elif isinstance(event, WindowResult):
                row = con.execute("select scored from windows where session_id=? and idx=?",
                                  (engine.session_id, event.index)).fetchone()
                checked.append(row == (int(event.scored),))
        finally:
            con.close()

    engine.subscribe(listener)
    feed(source, x)
    summary = run(engine, source)
    assert changes(summary, "edema") == [("edema", A.ACTIVE), ("edema", A.LATCHED)]
    assert summary.windows == 23 and summary.scored == 23 and len(checked) == 25 and all(checked)
    assert [c.seq for c in summary.transitions] == [1, 2]
    raised = summary.transitions[0]
    assert raised.kind == AlarmKind.PHYSIOLOGICAL and raised.threshold == 0.5 and raised.score > 0.5


def test_windows_carry_heart_rate_and_quality(tmp_path, bundle):
    engine, source = make_engine(tmp_path, bundle)
    results = []
    engine.subscribe(lambda e: results.append(e) if isinstance(e, WindowResult) else None)
    feed(source, synthetic_ecg(30, FS, hr_bpm=90, seed=1))
    run(engine, source)
    assert len(results) == 5
    assert all(r.scored and r.reason == "" and len(r.quality) == 12 for r in results)
    assert [round(r.hr_bpm) for r in results] == [90] * 5
    assert results[0].t_s == 10.0 and results[-1].t_s == 30.0


def test_lost_samples_are_a_gap_never_zero_filled(tmp_path, bundle, ecg):
    engine, source = make_engine(tmp_path, bundle)
    results, samples = [], []
    engine.subscribe(lambda e: results.append(e) if isinstance(e, WindowResult) else None)
    feed(source, ecg[:, :30 * 500], skip=[(int(12 * FS), int(13 * FS))])  # one second lost
    summary = run(engine, source)
    reasons = [r.reason for r in results]
    assert reasons == ["", "gap", "gap", "", ""]  # the windows ending at 15 s and 20 s hold the lost second
    assert results[1].detail == "1.00 s of signal missing" and summary.gap_samples == 500
    assert changes(summary) == [("signal_gap", A.ACTIVE), ("signal_gap", A.CLEARED)]
    con = sqlite3.connect(tmp_path / "log.db")
    assert con.execute("select count(*) from windows where reason='gap' and scores='{}'").fetchone() == (2,)


def test_electrode_off_raises_lead_off_and_suspends_scoring(tmp_path, bundle, ecg):
    engine, source = make_engine(tmp_path, bundle)
    results = []
    engine.subscribe(lambda e: results.append(e) if isinstance(e, WindowResult) else None)
    off = lambda first: {"LA": 20 * FS <= first < 26 * FS, "RA": False}  # noqa: E731
    feed(source, ecg[:, :45 * 500], lead_off=off)
    summary = run(engine, source)
    assert [r.reason for r in results] == ["", "", "", "lead off", "lead off", "lead off", "", ""]
    assert results[3].detail == "electrode LA off" and results[3].lead_off["LA"] is True
    assert results[0].lead_off == {"LA": False, "RA": False}
    assert results[3].hr_bpm is not None  # heart rate still measured on a usable lead
    lead_off = [c for c in summary.transitions if c.alarm == "lead_off"]
    assert [(c.state, c.kind, c.t_s) for c in lead_off] == [(A.ACTIVE, AlarmKind.TECHNICAL, 25.0),
                                                             (A.CLEARED, AlarmKind.TECHNICAL, 40.0)]


def test_a_lead_without_samples_is_lead_off_not_a_gap(tmp_path, bundle, ecg):
    engine, source = make_engine(tmp_path, bundle)
    x = ecg[:, :20 * 500].copy()
    x[8, 3000:6000] = np.nan  # V3 invalid for 6 s, as a WFDB record marks an electrode off
    feed(source, x)
    summary = run(engine, source)
    assert summary.not_scored == {"lead off": 3} and summary.gap_samples == 0  # 6-12 s touches all three windows
    assert changes(summary) == [("lead_off", A.ACTIVE)]
    assert summary.transitions[0].message == "Lead off: lead V3 without signal for 4.00 s"  # [0, 10) holds 4 s of it


def test_a_flat_lead_counts_as_lead_off(tmp_path, bundle, ecg):
    engine, source = make_engine(tmp_path, bundle)
    x = ecg[:, :20 * 500].copy()
    x[8] = 0.0
    feed(source, x)
    summary = run(engine, source)
    assert summary.not_scored == {"lead off": 3} and changes(summary) == [("lead_off", A.ACTIVE)]
    assert "lead V3 flat" in summary.transitions[0].message


def test_a_noisy_lead_is_poor_signal_not_a_pathology(tmp_path, bundle, ecg):
    engine, source = make_engine(tmp_path, bundle)
    x = ecg[:, :30 * 500].copy()
    x[7] += np.random.default_rng(0).normal(0, 1.0, x.shape[1]).astype(np.float32)  # V2 muscle noise
    feed(source, x)
    summary = run(engine, source)
    assert summary.not_scored == {"poor signal": 5}
    assert changes(summary) == [("poor_signal", A.ACTIVE)]  # 2 of 3 windows
    assert summary.transitions[0].message.startswith("Poor signal: V2")


@pytest.mark.parametrize("bad", [np.inf, -np.inf, 3e38])
def test_out_of_range_device_samples_are_never_scored(tmp_path, bundle, ecg, bad):
    """inf (or a value whose square overflows) from a device: poor signal, no score, no NaN in the log."""
    engine, source = make_engine(tmp_path, bundle)
    x = ecg[:, :20 * 500].copy()
    x[1, 4000:4010] = bad  # lead II
    feed(source, x)
    summary = run(engine, source)
    assert summary.scored == 1 and summary.not_scored == {"poor signal": 2}  # 8 s is in windows 0 and 1
    assert changes(summary, "edema") == [] and ("poor_signal", A.ACTIVE) in changes(summary)
    con = sqlite3.connect(tmp_path / "log.db")
    for column in ("scores", "smoothed", "quality"):
        assert not any("NaN" in (v or "") or "Infinity" in (v or "")
                       for (v,) in con.execute(f"select {column} from windows")), column


def test_refused_bundle_is_a_technical_alarm_and_monitoring_goes_on(tmp_path, ecg):
    bad = polarity_bundle(tmp_path / "b.onnx")
    data = bytearray(bad.read_bytes())
    data[len(data) // 2] ^= 0xFF
    bad.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="checksum"):
        load_bundle(bad)
    bundle, reason = load_bundle_or_reason(str(bad), None)
    assert bundle is None and "checksum check failed" in reason
    engine, source = make_engine(tmp_path, None, bundle_error=reason)
    statuses, results = [], []
    engine.subscribe(lambda e: (statuses if isinstance(e, Status) else results).append(e))
    feed(source, synthetic_ecg(20, FS, hr_bpm=130))
    summary = run(engine, source)
    first = summary.transitions[0]
    assert (first.alarm, first.state, first.kind, first.t_s) == ("bundle_refused", A.ACTIVE, AlarmKind.TECHNICAL, 0.0)
    assert "checksum" in first.message
    windows = [r for r in results if isinstance(r, WindowResult)]
    assert [w.reason for w in windows] == ["no model"] * 3 and all(w.hr_bpm > 120 for w in windows)
    assert ("hr_high", A.ACTIVE) in changes(summary)  # heart-rate alarms work without a model
    assert statuses[0].bundle.startswith("none (model bundle refused (checksum")


def _fixed_batch_session(bundle) -> ort.InferenceSession:
    """The bundle's own model with its batch fixed at 2: onnxruntime refuses any other batch size."""
    model = onnx.load_from_string(Path(bundle.path).read_bytes())
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 2
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def test_inference_failure_is_a_technical_alarm(tmp_path, bundle, ecg):
    broken = load_bundle(bundle.path)
    broken.session = _fixed_batch_session(broken)
    engine, source = make_engine(tmp_path, broken, max_batch=1)
    feed(source, ecg[:, :20 * 500])
    summary = run(engine, source)
    assert summary.not_scored == {"inference failed": 3}
    c = summary.transitions[0]
    assert (c.alarm, c.state, c.kind) == ("inference_failed", A.ACTIVE, AlarmKind.TECHNICAL)
    assert "InvalidArgument" in c.message or "dimension" in c.message


def test_storage_failure_keeps_alarms_flowing_and_writes_the_backlog_later(tmp_path, bundle, ecg):
    engine, source = make_engine(tmp_path, bundle)
    seen = []

    def listener(event):
        if isinstance(event, WindowResult):
            seen.append(event.index)
            if event.index == 3:
                engine.store.db.execute("PRAGMA query_only = ON")  # the disk refuses writes from now on
            if event.index == 10:
                engine.store.db.execute("PRAGMA query_only = OFF")
    engine.subscribe(listener)
    x = flip_lead_i(ecg, FS, [(30, 120)])
    engine.start()
    for k, a in enumerate(range(0, 120 * 500, 2500)):  # one hop per iteration, like a live run
        source.put_block(a, x[:, a:a + 2500])
        deadline = time.time() + 5  # pace by the engine, not the clock: a slow start must not batch 3..10 together
        while len(seen) < k - 1 and time.time() < deadline:
            time.sleep(0.005)
    source.end()
    engine._thread.join(30)
    summary = engine.summary
    got = changes(summary)
    assert ("storage_failing", A.ACTIVE) in got and ("storage_failing", A.CLEARED) in got
    assert ("edema", A.ACTIVE) in got
    assert summary.storage_failures >= 1 and summary.dropped_windows == 0
    con = sqlite3.connect(tmp_path / "log.db")
    assert con.execute("select count(*) from windows").fetchone() == (len(seen),)
    logged = con.execute("select alarm, state from alarm_transitions order by seq").fetchall()
    assert logged == [(c.alarm, c.state.value) for c in summary.transitions]
    assert con.execute("pragma integrity_check").fetchone() == ("ok",)


def test_commands_from_another_thread_are_logged_with_who(tmp_path, bundle, ecg):
    engine, source = make_engine(tmp_path, bundle)
    x = flip_lead_i(ecg, FS, [(20, 60)])
    engine.start()
    feed(source, x[:, :45 * 500])
    deadline = time.time() + 20
    while not any(c.alarm == "edema" for c in engine.active_alarms()) and time.time() < deadline:
        time.sleep(0.02)
    engine.pause_audio("rn.lee")
    time.sleep(0.3)
    engine.acknowledge("edema", "dr.kim")
    with pytest.raises(KeyError, match="no alarm named"):
        engine.acknowledge("oedema", "dr.kim")
    time.sleep(0.3)
    feed(source, x[:, 45 * 500:], start=45 * 500)
    source.end()
    engine._thread.join(30)
    summary = engine.summary
    edema = [(c.state, c.cause, c.who) for c in summary.transitions if c.alarm == "edema"]
    assert edema == [(A.ACTIVE, "condition", None), (A.AUDIO_PAUSED, "pause_audio", "rn.lee"),
                     (A.ACKNOWLEDGED, "acknowledge", "dr.kim"), (A.CLEARED, "condition", None)]
    paused = summary.transitions[1]
    assert paused.audio_paused_until_s == pytest.approx(paused.t_s + 120.0)
    assert engine.active_alarms() == []


def test_disconnect_and_no_data_on_a_live_link(tmp_path, bundle, ecg):
    config = load_alarm_config()
    tech = dict(config.technical)
    tech["no_data"] = replace(tech["no_data"], after_s=0.3)
    tech["device_disconnected"] = replace(tech["device_disconnected"], after_s=0.2)
    engine, source = make_engine(tmp_path, bundle, config=replace(config, technical=tech))
    statuses = []
    engine.subscribe(lambda e: statuses.append(e.link) if isinstance(e, Status) else None)
    engine.start()
    feed(source, ecg[:, :12 * 500])
    time.sleep(0.8)  # connected, nothing arrives: no data
    source.connected = False
    source.put_event("disconnect", 6000)
    time.sleep(0.6)
    source.connected = True
    source.put_event("reconnect", 6000)
    feed(source, ecg[:, 12 * 500:20 * 500], start=12 * 500)
    time.sleep(0.3)
    source.end()
    engine._thread.join(10)
    got = changes(engine.summary)
    assert got.index(("no_data", A.ACTIVE)) < got.index(("device_disconnected", A.ACTIVE))
    assert ("device_disconnected", A.CLEARED) in got and ("no_data", A.CLEARED) in got
    assert "disconnected" in statuses and statuses[-1] == "ended"
    assert engine.summary.technical_events == {"disconnect": 1, "reconnect": 1}


def test_a_failing_listener_does_not_stop_the_engine(tmp_path, bundle, ecg):
    engine, source = make_engine(tmp_path, bundle)
    engine.subscribe(lambda e: 1 / 0)
    got = []
    unsubscribe = engine.subscribe(got.append)
    feed(source, ecg[:, :20 * 500])
    summary = run(engine, source)
    assert summary.windows == 3 and summary.listener_errors > 3
    assert any(isinstance(e, Samples) for e in got) and any(isinstance(e, WindowResult) for e in got)
    unsubscribe()


def test_session_row_has_no_identifiers_beyond_bed(tmp_path, bundle, ecg):
    engine, source = make_engine(tmp_path, bundle, encounter_id="enc-42")
    feed(source, ecg[:, :10 * 500])
    summary = run(engine, source)
    con = sqlite3.connect(tmp_path / "log.db")
    con.row_factory = sqlite3.Row
    row = dict(con.execute("select * from sessions").fetchone())
    assert row["bed_id"] == "bed-7" and row["encounter_id"] == "enc-42" and row["end_reason"] == "complete"
    assert row["bundle_sha256"] == bundle.sha256 and row["device"] == "test://feed"
    assert summary.session_id == row["id"]


def test_monitor_command_refuses_bad_arguments_before_starting(tmp_path):
    from click.testing import CliRunner

    from bedside.cli import main

    runner = CliRunner()
    out = runner.invoke(main, ["monitor", "--port", " ", "--protocol", "ads1298", "--db", str(tmp_path / "m.db")])
    assert out.exit_code == 2 and "--port is empty" in out.output
    out = runner.invoke(main, ["monitor", "--port", "/dev/ttyACM9", "--protocol", "healthypie", "--db", str(tmp_path / "m.db")])
    assert out.exit_code == 2 and "unknown; choose one of" in out.output and "ads1298" in out.output
    assert not (tmp_path / "m.db").exists()


def test_a_bundle_that_fails_unexpectedly_is_refused_not_raised(tmp_path, monkeypatch, bundle, ecg):
    """Anything load_bundle raises (not only BundleError) becomes the bundle_refused reason, kept short."""
    import bedside.monitor as monitor

    def broken(*args, **kwargs):
        raise RuntimeError("onnxruntime fell over " + "x" * 500)
    monkeypatch.setattr(monitor, "load_bundle", broken)
    got, reason = load_bundle_or_reason(str(bundle.path), None)
    assert got is None and reason.startswith("model bundle refused (load failed): RuntimeError: onnxruntime")
    assert len(reason) <= monitor.MAX_REASON_CHARS
    engine, source = make_engine(tmp_path, None, bundle_error=reason)
    feed(source, ecg[:, :int(20 * FS)])
    summary = run(engine, source)
    assert [(c.alarm, c.state) for c in summary.transitions] == [("bundle_refused", A.ACTIVE)]
    assert summary.transitions[0].message.endswith(reason)  # after the alarm's label
    assert summary.windows == 3 and summary.scored == 0


def test_broken_alarm_settings_in_monitor_fall_back_to_the_defaults_and_raise_a_technical_alarm(tmp_path, bundle,
                                                                                              ecg):
    """A monitor never exits over its settings file: packaged defaults in force, settings_refused active."""
    from bedside.monitor import load_config_or_reason

    bad = tmp_path / "alarms.toml"
    bad.write_text("[risk]\nsmoothing_windows = nan\n")
    config, reason = load_config_or_reason(str(bad))
    assert config.sha256 == load_alarm_config().sha256  # the packaged defaults
    assert reason is not None and "alarms.toml" in reason and "default settings in force" in reason
    good, none = load_config_or_reason(None)
    assert none is None and good.sha256 == config.sha256
    source = FeedSource(FS)
    engine = Engine(source, Store(tmp_path / "log.db"), config, EngineSettings(bed_id="bed-7", poll_s=0.02),
                    bundle=bundle, settings_error=reason)
    feed(source, ecg[:, :int(20 * FS)])
    summary = run(engine, source)
    first = summary.transitions[0]
    assert (first.alarm, first.state) == ("settings_refused", A.ACTIVE) and reason in first.message
    assert summary.scored == summary.windows == 3  # monitoring (and scoring) goes on under the defaults
