"""The monitor app on the real engine: replay of a real record, and a live simulated board over a pty.

The engine raises alarms from a real bundle whose thresholds force them (``tests/bundles.make_bundle``);
keys pressed through Pilot go to the engine, which logs them (who and when) in its SQLite database
before the screen changes.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest
import sqlite_utils
import wfdb

from bedside.events import AlarmKind, AlarmState
from bedside.ui.alarm_banner import AlarmBanner
from bedside.ui.alarm_list import AlarmList
from bedside.ui.app import MonitorApp
from bedside.ui.waveform import WaveformPanel
from bundles import LABELS, make_bundle
from ui_pilot import sync

RECORDS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "records"
pytestmark = pytest.mark.skipif(not (RECORDS / "s0010_re.hea").is_file(),
                                reason=f"real recordings not found at {RECORDS} (see ../shared/data/README.md)")
USER = "rn.lee"


async def until(pilot, condition, timeout_s: float = 30.0, what: str = "") -> None:
    """Let the app run until ``condition()`` holds; fail naming ``what`` after ``timeout_s``."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout_s
    while not condition():
        if loop.time() > end:
            pytest.fail(f"timed out after {timeout_s:g} s waiting for {what}")
        await pilot.pause(0.05)


@pytest.fixture(scope="module")
def long_record(tmp_path_factory) -> str:
    """s0010_re's 12 leads repeated to 5 minutes (a replay that outlasts the test), as a WFDB record."""
    from bedside.leads import CANONICAL_LEADS
    from bedside.records import open_record

    rec = open_record(RECORDS / "s0010_re")
    x = rec.read(0, rec.n_samples)
    x = np.tile(x, (1, 8))
    out = tmp_path_factory.mktemp("rec")
    wfdb.wrsamp("long", fs=rec.fs_hz, units=["mV"] * 12, sig_name=list(CANONICAL_LEADS), p_signal=x.T.astype(np.float64),
                fmt=["16"] * 12, adc_gain=[1000.0] * 12, baseline=[0] * 12, write_dir=str(out))
    return str(out / "long")


@pytest.fixture(scope="module")
def alarm_bundle(tmp_path_factory) -> Path:
    """A real bundle whose thresholds every window exceeds: all three risk alarms raise."""
    return make_bundle(tmp_path_factory.mktemp("bundle") / "alarm.onnx", thresholds={k: 0.01 for k in LABELS})


def transitions(db: Path, alarm: str) -> list[dict]:
    return list(sqlite_utils.Database(db).query(
        "select state, previous, who, cause, wall_time from alarm_transitions where alarm = ? order by seq", [alarm]))


@sync
async def test_alarm_acknowledge_and_audio_pause_go_through_the_engine_to_the_log(
        tmp_path: Path, long_record: str, alarm_bundle: Path) -> None:
    from bedside.replay import ReplayOptions, build_replay_engine

    db = tmp_path / "bedside.db"
    opts = ReplayOptions(record=long_record, model=str(alarm_bundle), db=str(db), speed=12.0, bed_id="ICU-07",
                         resume=False)
    app = MonitorApp(lambda: build_replay_engine(opts), bed_id="ICU-07", user=USER, fps=20)
    async with app.run_test(size=(100, 30)) as pilot:
        await until(pilot, lambda: "edema" in app.state.alarms, what="the engine to raise the edema alarm")
        assert app.state.thresholds == {k: 0.01 for k in LABELS}  # read from the engine's bundle
        entry = app.state.alarms["edema"]
        assert entry.change.kind is AlarmKind.PHYSIOLOGICAL and entry.change.state is AlarmState.ACTIVE

        table = app.screen.query_one(AlarmList)
        await until(pilot, lambda: table.row_count == 3, what="three alarms in the list")
        text, cls = app.screen.query_one(AlarmBanner).line(AlarmKind.PHYSIOLOGICAL)
        assert text.startswith("**  PATIENT") and "ACTIVE" in text and "+2 more" in text and cls == "banner--medium"
        assert app.screen.query_one(AlarmBanner).line(AlarmKind.TECHNICAL)[1] == "banner--quiet"
        while table.selected_alarm() != "edema":
            await pilot.press("down")
        await pilot.press("a")
        await until(pilot, lambda: app.state.alarms["edema"].change.state is AlarmState.ACKNOWLEDGED,
                    what="the engine to announce the acknowledgement")
        assert app.state.alarms["edema"].change.who == USER
        assert str(table.get_cell("edema", "state")) == "ACKNOWLEDGED"
        logged = transitions(db, "edema")
        assert logged[-1]["state"] == "ACKNOWLEDGED" and logged[-1]["who"] == USER
        assert logged[-1]["cause"] == "acknowledge" and logged[-1]["wall_time"] > 0

        await pilot.press("p")
        await until(pilot, lambda: app.state.alarms["cardiomegaly"].change.state is AlarmState.AUDIO_PAUSED,
                    what="the engine to pause the audio")
        paused = app.state.alarms["cardiomegaly"]
        assert paused.change.audio_paused_until_s == pytest.approx(paused.change.t_s + 120.0)  # alarms.toml pause_s
        left0 = app.state.audio_paused_left_s(paused)
        assert 0 < left0 <= 120
        await until(pilot, lambda: app.state.audio_paused_left_s(app.state.alarms["cardiomegaly"]) <= left0 - 2,
                    what="the audio pause to count down with the replayed signal")
        assert str(table.get_cell("cardiomegaly", "state")).startswith("AUDIO PAUSED 1:")
        assert transitions(db, "cardiomegaly")[-1]["who"] == USER
        assert app.state.alarms["edema"].change.state is AlarmState.ACKNOWLEDGED  # pause leaves it alone
        await pilot.press("ctrl+q")
    assert app.return_value == 0
    assert app._engine_thread is not None and not app._engine_thread.is_alive()


@sync
async def test_a_live_device_disconnect_shows_the_technical_alarm(tmp_path: Path, alarm_bundle: Path) -> None:
    from bedside.monitor import MonitorOptions, build_monitor_engine
    from devices.protocols import get_protocol
    from devices.simulator import Board, Simulator
    from devices.sources import record_signal

    spec = get_protocol("ads1298")
    board = Board(spec, record_signal(str(RECORDS / "s0010_re"), spec.fs_hz, spec.default_leads),
                  "disconnect=3s+60s", loop=True)
    sim = Simulator(board, transport="pty", speed=1.0, keep_status=False)
    address = sim.start()
    try:
        opts = MonitorOptions(port=address, protocol="ads1298", model=str(alarm_bundle), db=str(tmp_path / "b.db"),
                              bed_id="ICU-07")
        app = MonitorApp(lambda: build_monitor_engine(opts), bed_id="ICU-07", user=USER, fps=20)
        async with app.run_test(size=(100, 30)) as pilot:
            await until(pilot, lambda: app.buffer.end_index > 0, timeout_s=15, what="samples from the board")
            await until(pilot, lambda: "device_disconnected" in app.state.alarms, timeout_s=20,
                        what="the device_disconnected alarm")
            text, cls = app.screen.query_one(AlarmBanner).line(AlarmKind.TECHNICAL)
            assert app.state.alarms["device_disconnected"].change.kind is AlarmKind.TECHNICAL
            assert "DEVICE DISCONNECTED" in text and cls == "banner--medium"
            assert app.state.status is not None and app.state.status.link in ("disconnected", "reconnecting")
            await pilot.pause(1.5)  # time goes on: the traces scroll into blank, never a flat line
            for trace in app.screen.query_one(WaveformPanel).traces():
                assert all(not row[-12:].strip() for row in trace.last_rows)
                assert "NO SIGNAL" in trace.render().plain
            await pilot.press("ctrl+q")
    finally:
        sim.stop()
