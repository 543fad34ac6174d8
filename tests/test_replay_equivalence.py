"""Live equals replay: a record streamed by the device simulator over a pseudo-terminal gives the same alarm
transitions as `bedside replay` of the record; and `bedside monitor` runs headless under a notify socket."""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from bedside.alarm_config import load_alarm_config
from bedside.bundle import load_bundle
from bedside.engine import Engine, EngineSettings
from bedside.events import WindowResult
from bedside.replay import ReplayOptions, build_replay_engine
from bedside.sources import DeviceSource
from bedside.store import Store
from tests.engine_helpers import flip_lead_i, polarity_bundle, synthetic_ecg, write_record

REPO = Path(__file__).resolve().parents[1]
LINK_ALARMS = {"device_disconnected", "no_data", "inference_stale"}
pytestmark = [pytest.mark.slow,  # both stream in real time (accelerated) through the device simulator
              pytest.mark.skipif(not (REPO / "devices" / "simulator.py").is_file(), reason="devices package absent")]


def start_simulator(*args: str) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-m", "devices", "simulate", "--protocol", "ads1298", "--pty", *args],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    port = proc.stdout.readline().strip()
    if not port.startswith("/dev/"):
        proc.kill()
        pytest.fail(f"simulator did not print a pty path: {port!r} {proc.stderr.read()}")
    return proc, port


@pytest.fixture(scope="module")
def material(tmp_path_factory):
    folder = tmp_path_factory.mktemp("eq")
    x = synthetic_ecg(150, 500.0, hr_bpm=75.0, seed=21)
    x = flip_lead_i(x, 500.0, [(25, 60), (95, 125)])
    return write_record(folder, "eq", x, 500.0), polarity_bundle(folder / "b.onnx"), folder


def test_streaming_through_the_simulator_gives_the_replay_transitions(material):
    record, bundle_path, folder = material
    engine = build_replay_engine(ReplayOptions(record=str(record), model=str(bundle_path), db=str(folder / "replay.db")))
    replayed = engine.run()
    engine.close()
    expected = [(c.alarm, c.state, round(c.t_s, 3)) for c in replayed.transitions]
    assert len(expected) >= 4

    sim, port = start_simulator("--record", str(record), "--speed", "15")
    source = DeviceSource(port, "ads1298", reconnect=False)
    live = Engine(source, Store(folder / "live.db"), load_alarm_config(), EngineSettings(bed_id="eq", poll_s=0.05),
                  bundle=load_bundle(bundle_path))
    last = replayed.windows - 1
    live.subscribe(lambda e: live.stop() if isinstance(e, WindowResult) and e.index == last else None)
    timer = threading.Timer(90, live.stop)  # a safety net, not the expected path
    timer.start()
    try:
        summary = live.run()
    finally:
        timer.cancel()
        live.close()
        sim.terminate()
        sim.wait(10)
    got = [(c.alarm, c.state, round(c.t_s, 3)) for c in summary.transitions if c.alarm not in LINK_ALARMS]
    assert summary.windows == replayed.windows and summary.scored == replayed.scored
    assert got == expected
    assert summary.gap_samples == 0


def test_monitor_command_headless_with_systemd_notify(material, tmp_path):
    _, bundle_path, _ = material
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify"))
    sock.settimeout(0.5)
    messages: list[str] = []

    def listen() -> None:  # as systemd does: read while the service runs
        while True:
            try:
                messages.append(sock.recv(4096).decode())
            except socket.timeout:
                if done.is_set():
                    return
    done = threading.Event()
    listener = threading.Thread(target=listen)
    listener.start()
    sim, port = start_simulator("--synthetic", "--speed", "5", "--duration", "120")
    env = {**os.environ, "NOTIFY_SOCKET": str(tmp_path / "notify"), "WATCHDOG_USEC": "2000000",
           "STATE_DIRECTORY": str(tmp_path)}
    env.pop("WATCHDOG_PID", None)
    try:
        out = subprocess.run([sys.executable, "-m", "bedside.cli", "monitor", "--port", port, "--protocol", "ads1298",
                              "--model", str(bundle_path), "--bed", "bed-3", "--duration", "12", "--no-audio"],
                             cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    finally:
        sim.terminate()
        sim.wait(10)
        done.set()
        listener.join(5)
        sock.close()
    assert out.returncode == 0, out.stdout + out.stderr
    assert messages[0].startswith("READY=1") and messages.count("WATCHDOG=1") >= 3 and messages[-1] == "STOPPING=1"
    con = sqlite3.connect(tmp_path / "bedside.db")  # $STATE_DIRECTORY/bedside.db by default
    n, scored, hr = con.execute("select count(*), sum(scored), avg(hr_bpm) from windows").fetchone()
    assert n >= 5 and scored == n and 65 < hr < 80
    assert con.execute("select bed_id, source_kind, end_reason from sessions").fetchone() == ("bed-3", "live", "stopped")


def test_monitor_with_a_tampered_bundle_keeps_monitoring(material, tmp_path):
    """A bundle that fails verification: the monitor runs on (exit 0, no restart loop), raises bundle_refused
    with the failed check, measures heart rate, logs every window as not scored and raises no risk alarm."""
    _, bundle_path, _ = material
    tampered = tmp_path / "tampered.onnx"
    data = bytearray(bundle_path.read_bytes())
    data[len(data) // 2] ^= 1  # one bit of the graph or its weights
    tampered.write_bytes(bytes(data))
    sim, port = start_simulator("--synthetic", "--speed", "5", "--duration", "120")
    try:
        out = subprocess.run([sys.executable, "-m", "bedside.cli", "monitor", "--port", port, "--protocol", "ads1298",
                              "--model", str(tampered), "--db", str(tmp_path / "m.db"), "--duration", "12",
                              "--no-audio"], cwd=REPO, capture_output=True, text=True, timeout=120)
    finally:
        sim.terminate()
        sim.wait(10)
    assert out.returncode == 0, out.stdout + out.stderr
    con = sqlite3.connect(tmp_path / "m.db")
    refused = con.execute("select kind, priority, state, message from alarm_transitions "
                          "where alarm = 'bundle_refused' order by seq").fetchall()
    assert refused[0][:3] == ("technical", "medium", "active") and len(refused) == 1  # raised at start, never cleared
    assert "checksum check failed" in refused[0][3] and len(refused[0][3]) <= 250
    assert con.execute("select count(*) from alarm_transitions where kind = 'physiological'").fetchone() == (0,)
    n, scored, hr = con.execute("select count(*), sum(scored), avg(hr_bpm) from windows").fetchone()
    assert n >= 5 and scored == 0 and 65 < hr < 80
    reasons = con.execute("select distinct reason, detail from windows").fetchall()
    assert len(reasons) == 1 and reasons[0][0] == "no model" and "checksum check failed" in reasons[0][1]
    assert con.execute("select bundle_sha256, end_reason from sessions").fetchone() == (None, "stopped")
