"""Two beds -> one central, with kill -9 of the central and of one bed during the run.

Bed ``bed-r`` replays a real record (``bedside replay --hl7``); bed ``bed-l`` monitors a simulated
ADS1298 board over a pty (``bedside monitor --hl7``) with lead-off faults. Mid-run the central is killed
with SIGKILL and restarted on the same port and database, then the live bed is killed with SIGKILL and
restarted on the same log (a new session; its outbox survives). At the end every alarm transition in
each bed's log is in central.db exactly once, in the bed's order, and so is every analysed window.
"""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from bundles import LABELS, make_bundle

ROOT = Path(__file__).resolve().parents[1]
RECORDS = ROOT.parent / "shared" / "data" / "records"
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not (RECORDS / "s0010_re.hea").is_file(),
                                 reason=f"real recordings not found at {RECORDS} (see ../shared/data/README.md)")]
BEDS = ("bed-r", "bed-l")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rows(db: Path, sql: str, *args) -> list[tuple]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


def _wait(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(0.2)


def _count(db: Path, table: str, bed: str) -> int:
    try:
        return _rows(db, f"select count(*) from {table} where bed_id = ?", bed)[0][0]
    except sqlite3.Error:
        return 0


@pytest.fixture(scope="module")
def long_record(tmp_path_factory) -> str:
    """s0010_re repeated to about 5 minutes (a replay that outlasts the faults), as a WFDB record."""
    import wfdb

    from bedside.leads import CANONICAL_LEADS
    from bedside.records import open_record

    rec = open_record(RECORDS / "s0010_re")
    x = np.tile(rec.read(0, rec.n_samples), (1, 8))
    out = tmp_path_factory.mktemp("rec")
    wfdb.wrsamp("long", fs=rec.fs_hz, units=["mV"] * 12, sig_name=list(CANONICAL_LEADS), p_signal=x.T.astype(np.float64),
                fmt=["16"] * 12, adc_gain=[1000.0] * 12, baseline=[0] * 12, write_dir=str(out))
    return str(out / "long")


class Procs:
    """Child processes of the test, each ended by its own pid."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self, name: str, args: list[str]) -> subprocess.Popen:
        log = open(self.tmp / f"{name}.log", "a")
        p = subprocess.Popen([sys.executable, *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=log, text=True,
                             env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.procs[name] = p
        return p

    def kill9(self, name: str) -> None:
        p = self.procs[name]
        p.send_signal(signal.SIGKILL)
        p.wait(10)

    def stop(self, name: str, timeout_s: float = 60) -> int | None:
        p = self.procs.get(name)
        if p is None or p.poll() is not None:
            return None if p is None else p.returncode
        p.send_signal(signal.SIGTERM)
        try:
            return p.wait(timeout_s)
        except subprocess.TimeoutExpired:
            p.kill()
            return p.wait(10)

    def close(self) -> None:
        for name in list(self.procs):
            self.stop(name, 20)


def test_two_beds_every_transition_once_in_order_after_kill9(tmp_path, long_record) -> None:
    from bedside.hl7.sender import Sender, SenderSettings

    bundle = make_bundle(tmp_path / "alarm.onnx", thresholds={k: 0.01 for k in LABELS})  # every window alarms
    port = _free_port()
    central_db, dbs = tmp_path / "central.db", {b: tmp_path / f"{b}.db" for b in BEDS}
    link = tmp_path / "usb-ADS1298-if00"
    central_args = ["-m", "bedside.cli", "central", "--listen", f"127.0.0.1:{port}", "--db", str(central_db),
                    "--bed", "bed-r", "--bed", "bed-l", "--silent", "300"]
    monitor_args = ["-m", "bedside.cli", "monitor", "--port", str(link), "--protocol", "ads1298", "--model", str(bundle),
                    "--bed", "bed-l", "--db", str(dbs["bed-l"]), "--hl7", f"127.0.0.1:{port}", "--no-audio", "-q"]
    procs = Procs(tmp_path)
    try:
        central = procs.start("central", central_args)
        assert central.stdout.readline().startswith("listening on ")
        sim = procs.start("simulator", ["-m", "devices", "simulate", "--protocol", "ads1298", "--record",
                                        str(RECORDS / "s0010_re"), "--loop", "--pty", "--link", str(link), "--speed",
                                        "3", "--faults", "leadoff=V3@12s+10s,leadoff=RA@40s+8s,leadoff=V5@70s+10s"])
        assert sim.stdout.readline().strip() == str(link)
        procs.start("monitor", monitor_args)
        procs.start("replay", ["-m", "bedside.cli", "replay", long_record, "--model", str(bundle), "--speed", "8",
                               "--bed", "bed-r", "--db", str(dbs["bed-r"]), "--hl7", f"127.0.0.1:{port}",
                               "--new-session", "-q"])
        _wait(lambda: all(_count(central_db, "alarm_transitions", b) > 0 for b in BEDS), 60,
              "alarm transitions of both beds at the central")

        procs.kill9("central")  # mid-run: whatever it ACKed is committed, the rest is still in the outboxes
        time.sleep(1.0)
        central = procs.start("central", central_args)
        assert central.stdout.readline().startswith("listening on ")
        seen = _count(central_db, "observations", "bed-l")
        _wait(lambda: _count(central_db, "observations", "bed-l") > seen + 2, 60, "bed-l delivering again")

        procs.kill9("monitor")  # the live bed dies mid-run; its log and outbox survive
        time.sleep(1.0)
        procs.start("monitor", monitor_args)
        _wait(lambda: len(_rows(dbs["bed-l"], "select id from sessions")) == 2 and
              _count(central_db, "alarm_transitions", "bed-l") >
              _rows(dbs["bed-l"], "select count(*) from alarm_transitions where session_id = 1")[0][0],
              90, "the restarted live bed's alarms at the central")

        assert procs.procs["replay"].wait(180) == 0  # the replay drains its outbox before it exits
        time.sleep(6)  # a few more windows and lead-off transitions from the live bed
        procs.stop("monitor")
        procs.stop("simulator")
        # what the monitor had not delivered when it stopped goes out as it would on its next start
        sender = Sender(dbs["bed-l"], "bed-l", SenderSettings(host="127.0.0.1", port=port, backoff_s=0.1)).start()
        assert sender.stop(drain_s=60), "bed-l's outbox did not empty"
    finally:
        procs.close()

    for bed in BEDS:
        log = _rows(dbs[bed], "select t.session_id, t.seq, t.alarm, t.state, t.previous from alarm_transitions t "
                              "join sessions s on s.id = t.session_id where s.bed_id = ? order by t.session_id, t.seq",
                    bed)
        got = _rows(central_db, "select session_id, seq, alarm, state, previous from alarm_transitions "
                                "where bed_id = ? order by id", bed)
        assert got == log, f"{bed}: central.db differs from the bed's log"  # once each, in the bed's order
        assert len(log) >= 3
        windows = _rows(dbs[bed], "select w.session_id, w.idx from windows w join sessions s on s.id = w.session_id "
                                  "where s.bed_id = ? order by w.session_id, w.idx", bed)
        assert _rows(central_db, "select session_id, window_index from observations where bed_id = ? order by id",
                     bed) == windows
        assert _rows(dbs[bed], "select count(*) from hl7_outbox")[0][0] == 0
    live = _rows(dbs["bed-l"], "select distinct alarm from alarm_transitions")
    assert ("lead_off",) in live and len(_rows(dbs["bed-l"], "select id from sessions")) == 2
    assert _rows(central_db, "select count(*) from rejects") == [(0,)]
