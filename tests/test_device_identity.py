"""Is the port still our board? Over real ptys: stale links, strangers' terminals, another board's serial.

A plain name (a pty path, /dev/ttyUSB0, a link nobody declared stable) is trusted only once valid
frames arrive, and nothing is written to it after a reconnect; a stranger's terminal behind it is
never declared connected and receives zero bytes (read back from its other end). A stable name gets
the identify handshake, and another board's serial is refused.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import termios
import threading
import time
import tty
from pathlib import Path

import numpy as np
import pytest

from bedside.sources import DeviceSource
from devices.driver import Driver
from devices.groundtruth import Received
from devices.identity import FRAMES_TO_CONNECT, LISTEN_S, Identity, Proof, banner_serial, is_stable, \
    plain_port_warning
from devices.protocols import get_protocol
from devices.simulator import Board, Simulator
from devices.sources import synthetic_signal

ROOT = Path(__file__).resolve().parents[1]
LEADS = ("I", "II", "V1", "V2", "V3", "V4", "V5", "V6")
#: Long enough for the driver to open a refused port, listen LISTEN_S and try again at least once.
REFUSALS_S = 2 * LISTEN_S + 1.0


def cli_simulator(link: Path, protocol: str, *extra: str) -> subprocess.Popen:
    """``devices simulate`` in its own process (so it can be killed -9), its pty behind ``link``."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "devices", "simulate", "--protocol", protocol, "--synthetic", "--pty",
         "--link", str(link), "--speed", "2", "--duration", "120", *extra],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == str(link)
    return proc


def end(proc: subprocess.Popen) -> str:
    """SIGTERM a CLI simulator; its last stdout line (the JSON summary)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=20)
    return out.strip().splitlines()[-1] if out.strip() else ""


class Stranger:
    """Another program's terminal: a pty pair whose slave path the stale link now names.

    ``chatter``: text it writes (what the monitor would read); everything the monitor writes to the
    slave is readable here from the master, and :meth:`received` returns it.
    """

    def __init__(self, chatter: bytes = b"") -> None:
        self.master, self.slave = os.openpty()
        self.path = os.ttyname(self.slave)
        if chatter:
            tty.setraw(self.slave)  # no echo: what the master reads is only what the monitor wrote
        self.settings = termios.tcgetattr(self.slave)
        os.set_blocking(self.master, False)
        self.chatter = chatter
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._talk, daemon=True)
        self._thread.start()

    def _talk(self) -> None:
        while self.chatter and not self._stop.wait(0.05):
            try:
                os.write(self.master, self.chatter)
            except BlockingIOError:
                pass

    def received(self) -> bytes:
        got = b""
        while True:
            try:
                chunk = os.read(self.master, 4096)
            except (BlockingIOError, OSError):
                return got
            if not chunk:
                return got
            got += chunk

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        for fd in (self.master, self.slave):
            os.close(fd)


def point(link: Path, target: str) -> None:
    """Make ``link`` name ``target`` (what a stale link to a reused pty number amounts to)."""
    tmp = link.with_name(link.name + ".tmp")
    os.symlink(target, tmp)
    os.replace(tmp, link)


def test_plain_kernel_names_are_warned_about_and_stable_names_are_not() -> None:
    for plain in ("/dev/pts/3", "/dev/ttyUSB0", "/dev/ttyACM12"):
        text = plain_port_warning(plain)
        assert text is not None and plain in text and "/dev/serial/by-id" in text and "--stable-port" in text
        assert not is_stable(plain)
    for name in ("/dev/serial/by-id/usb-FTDI_FT231X_USB_UART_DM00Q0QN-if00-port0", "socket://127.0.0.1:9",
                 "/run/bedside/ecg0"):
        assert plain_port_warning(name) is None
    assert is_stable("/dev/serial/by-id/usb-x-if00") and is_stable("socket://h:1") and is_stable("/x", True)
    assert not is_stable("/run/bedside/ecg0")  # a symlink is stable only when declared so


def test_driver_warns_on_a_plain_pty_path_on_start(caplog) -> None:
    spec = get_protocol("ads1298")
    sim = Simulator(Board(spec, synthetic_signal(spec.fs_hz, LEADS, 4.0)), speed=4)
    got = Received()
    drv = Driver(sim.start(), "ads1298", on_block=got.on_block, on_event=got.on_event)
    try:
        drv.start()
        assert got.wait_for(lambda r: r.blocks, 10.0)
    finally:
        drv.stop()
        sim.stop()
    warning = got.events[0]
    assert warning.kind == "plain_port" and sim.address in warning.detail and "by-id" in warning.detail
    assert any("plain kernel name" in r.message and r.levelname == "WARNING" for r in caplog.records)


def test_proof_needs_consecutive_valid_frames() -> None:
    spec = get_protocol("ads1298")
    frames = spec.encode(np.arange(100, 100 + 2 * FRAMES_TO_CONNECT), np.zeros((2 * FRAMES_TO_CONNECT, 8), int))
    proof = Proof(spec)
    assert not proof.feed(b"user@host:~$ ls\r\n" * 50)
    assert not proof.feed(frames[: FRAMES_TO_CONNECT - 1].tobytes())
    assert not proof.feed(b"\x00noise")  # garbage between frames restarts the count
    assert not proof.feed(frames[FRAMES_TO_CONNECT - 1: 2 * FRAMES_TO_CONNECT - 2].tobytes())
    assert proof.feed(frames[2 * FRAMES_TO_CONNECT - 2:].tobytes())
    skipping = Proof(spec)  # frames of a sequence that jumps never add up
    assert not skipping.feed(frames[::2].tobytes())


def test_identity_mismatch_names_both_serials() -> None:
    first = Identity(usb_serial="DM00Q0QN", board_serial="A1", asked=True)
    assert Identity("DM00Q0QN", "A1", asked=True).mismatch(first) is None
    assert Identity("DM00Q0QN").mismatch(first) is None  # not asked (no handshake on a plain path)
    assert Identity("XX99").mismatch(first) == "USB serial XX99, expected DM00Q0QN"
    assert Identity(None, "A1", asked=True).mismatch(first) == "USB serial none, expected DM00Q0QN"  # a pty now
    assert Identity("DM00Q0QN", "B2", asked=True).mismatch(first) == "serial B2, expected A1"
    assert Identity("DM00Q0QN", None, asked=True).mismatch(first) == "serial none, expected A1"  # no answer


@pytest.mark.parametrize("chatter", [b"", b"user@ward3:~$ "], ids=["silent", "prompt"])
def test_stale_link_to_a_strangers_pty_is_never_connected_and_gets_no_bytes(tmp_path, chatter: bytes) -> None:
    """The simulator is killed -9, its --link now names another program's pty: the monitor never
    declares it connected and writes nothing there; a restarted (streaming) board behind the link
    is trusted only once its frames validate."""
    link = tmp_path / "ecg0"
    proc = cli_simulator(link, "ads1298")
    got = Received()
    drv = Driver(str(link), "ads1298", on_block=got.on_block, on_event=got.on_event, backoff_s=(0.05, 0.3))
    stranger = None
    try:
        drv.start()
        assert got.wait_for(lambda r: sum(b.n_samples for b in r.blocks) >= 500, 20.0)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        assert got.wait_for(lambda r: r.kinds("disconnect"), 10.0)
        assert os.path.islink(link)  # kill -9: nobody removed the link
        stranger = Stranger(chatter)
        if os.path.realpath(link) != stranger.path:  # the freed number went elsewhere: model the reuse
            point(link, stranger.path)
        mine = lambda r: [e for e in r.kinds("refused") if stranger.path in e.detail]  # noqa: E731
        assert got.wait_for(mine, 3 * LISTEN_S + 2), got.events
        time.sleep(REFUSALS_S)
        early = stranger.received()
        assert early == b"", f"the monitor wrote {early!r} into another program's terminal"
        assert not drv.connected and not got.kinds("reconnect")
        (refused,) = mine(got)  # one event per distinct reason, although it was refused again
        assert drv.counters.refused >= 2 and drv.refusal == refused.detail
        assert "nothing is written there" in refused.detail and "--stable-port" in refused.detail
        samples_before = sum(b.n_samples for b in got.blocks)
        # a board streaming again behind the link (new pty) proves itself with frames
        proc = cli_simulator(link, "ads1298", "--autostart")
        assert got.wait_for(lambda r: r.kinds("reconnect"), 20.0), got.events[-4:]
        assert got.wait_for(lambda r: sum(b.n_samples for b in r.blocks) > samples_before + 500, 20.0)
        assert drv.connected and drv.refusal is None and drv.port_path != stranger.path
        assert f"{FRAMES_TO_CONNECT} consecutive valid frames" in got.kinds("reconnect")[0].detail
    finally:
        drv.stop()
        end(proc)
        if stranger is not None:
            received = stranger.received()
            settings = termios.tcgetattr(stranger.slave)
            stranger.close()
    assert received == b"", f"the monitor wrote {received!r} into another program's terminal"
    assert settings == stranger.settings  # its terminal settings were put back after each refusal
    order = [e.kind for e in got.events if e.kind in ("disconnect", "refused", "reconnect")]
    assert order[0] == "disconnect" and order[-1] == "reconnect" and set(order[1:-1]) == {"refused"}, order


def test_plain_link_restarted_board_that_needs_its_start_command_is_refused_unwritten(tmp_path) -> None:
    """Cyton streams only after 'b': after a reconnect on a plain path the driver listens, writes
    nothing, and says what to do; the board is never sent a byte."""
    link = tmp_path / "cyton0"
    proc = cli_simulator(link, "cyton")
    got = Received()
    drv = Driver(str(link), "cyton", on_block=got.on_block, on_event=got.on_event, backoff_s=(0.05, 0.3))
    try:
        drv.start()
        assert got.wait_for(lambda r: r.blocks, 20.0)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        assert got.wait_for(lambda r: r.kinds("disconnect"), 10.0)
        proc = cli_simulator(link, "cyton")  # waits for 'b', which never comes
        assert got.wait_for(lambda r: r.kinds("refused"), 3 * LISTEN_S + 2), got.events
        assert not drv.connected and not got.kinds("reconnect")
        assert "Restart the board's stream" in got.kinds("refused")[0].detail
    finally:
        drv.stop()
        summary = end(proc)
    assert '"commands": 0' in summary and '"clean": 0' in summary, summary


def _sim(link: Path, serial: str) -> Simulator:
    spec = get_protocol("ads1298")
    sim = Simulator(Board(spec, synthetic_signal(spec.fs_hz, LEADS, 8.0), loop=True), link=str(link), speed=2,
                    serial=serial)
    sim.start()
    return sim


def test_another_boards_serial_on_a_stable_link_is_refused(tmp_path) -> None:
    """On a stable link the driver asks the board who it is ('v') before starting it: another
    serial is refused with both serials named, and that board is never started."""
    link = tmp_path / "usb-ADS1298_SIM-0001-if00"
    first = _sim(link, "SIM-0001")
    got = Received()
    drv = Driver(str(link), "ads1298", on_block=got.on_block, on_event=got.on_event, backoff_s=(0.05, 0.3),
                 stable_port=True)
    sims = [first]
    try:
        drv.start()
        assert got.wait_for(lambda r: r.blocks, 10.0)
        assert drv.identity == Identity(None, "SIM-0001", asked=True)
        first.stop()
        assert got.wait_for(lambda r: r.kinds("disconnect"), 10.0)
        other = _sim(link, "SIM-0002")
        sims.append(other)
        assert got.wait_for(lambda r: r.kinds("refused"), 10.0)
        time.sleep(1.0)  # a few more tries, each refused
        (refused,) = got.kinds("refused")
        assert refused.detail.startswith(f"device on {link} (-> ")
        assert "is not the board this session started with: serial SIM-0002, expected SIM-0001" in refused.detail
        assert not drv.connected and not got.kinds("reconnect")
        assert other.report()["clean"] == 0  # never started: only 's' and 'v' reached it
        other.stop()
        back = _sim(link, "SIM-0001")  # the right board again
        sims.append(back)
        assert got.wait_for(lambda r: r.kinds("reconnect"), 10.0)
        assert "serial SIM-0001" in got.kinds("reconnect")[0].detail and drv.refusal is None
    finally:
        drv.stop()
        for sim in sims:
            sim.stop()


def test_device_source_reports_a_refused_port_as_a_technical_condition(tmp_path) -> None:
    link = tmp_path / "ecg0"
    sim = _sim(link, "SIM-0001")
    source = DeviceSource(str(link), "ads1298", stable_port=True)
    assert source.conditions() == {"device_refused": (False, "")}
    try:
        source.open()
        deadline = time.monotonic() + 10
        while not source.connected and time.monotonic() < deadline:
            time.sleep(0.05)
        assert source.connected
        sim.stop()
        sim = _sim(link, "SIM-0009")
        while not source.conditions()["device_refused"][0] and time.monotonic() < deadline + 10:
            time.sleep(0.05)
        present, detail = source.conditions()["device_refused"]
        assert present and "serial SIM-0009, expected SIM-0001" in detail
        kinds = [item.kind for item in source.poll(0.1) if hasattr(item, "kind")]
        assert "refused" in kinds and not source.connected
    finally:
        source.close()
        sim.stop()


def test_docs_state_the_identity_rules_as_coded() -> None:
    """docs/protocol-ads1298.md (for firmware authors) and docs/install.md say what the driver does."""
    proto = " ".join((ROOT / "docs" / "protocol-ads1298.md").read_text().split())
    install = " ".join((ROOT / "docs" / "install.md").read_text().split())
    example = re.search(r"`(ADS1298-ECG protocol 1 firmware [^`]*)\\n`", proto)
    assert example is not None and banner_serial(example.group(1).encode()) == "0001A7"
    assert banner_serial(get_protocol("ads1298").identify_line("SIM-0042")) == "SIM-0042"
    assert banner_serial(get_protocol("cyton").identify_line("SIM-0042")) is None  # Cyton's banner has none
    assert f"proves itself with {FRAMES_TO_CONNECT} consecutive valid frames" in proto
    assert f"only after {FRAMES_TO_CONNECT} consecutive valid frames" in install
    assert f"it listens for {LISTEN_S:g} s" in install


def test_monitor_raises_device_refused_with_both_serials_and_logs_it(tmp_path) -> None:
    """`bedside monitor`'s engine: another board behind the stable link is the technical alarm
    DEVICE REFUSED naming both serials, and the refusal is a technical event in the log."""
    import sqlite3

    from bedside.events import AlarmChange, AlarmState
    from bedside.monitor import MonitorOptions, build_monitor_engine

    link = tmp_path / "ecg0"
    sim = _sim(link, "SIM-0001")
    db = tmp_path / "bedside.db"
    engine = build_monitor_engine(MonitorOptions(port=str(link), protocol="ads1298", model=None, db=str(db),
                                                 bed_id="t", stable_port=True))
    changes: list[AlarmChange] = []
    seen = threading.Condition()

    def collect(item: object) -> None:
        if isinstance(item, AlarmChange):
            with seen:
                changes.append(item)
                seen.notify_all()

    engine.subscribe(collect)
    runner = threading.Thread(target=engine.run, daemon=True)
    runner.start()
    try:
        deadline = time.monotonic() + 15
        while not engine.source.connected and time.monotonic() < deadline:
            time.sleep(0.05)
        assert engine.source.connected
        sim.stop()
        sim = _sim(link, "SIM-0002")
        with seen:
            assert seen.wait_for(lambda: any(c.alarm == "device_refused" and c.state == AlarmState.ACTIVE
                                             for c in changes), 15.0), [c.alarm for c in changes]
            assert seen.wait_for(lambda: any(c.alarm == "device_disconnected" for c in changes), 15.0)
        time.sleep(2 * LISTEN_S)  # more refused tries: the disconnect alarm must not clear meanwhile
    finally:
        engine.stop()
        runner.join(15)
        engine.close()
        sim.stop()
    disconnected = [c.state for c in changes if c.alarm == "device_disconnected"]
    assert disconnected == [AlarmState.ACTIVE], disconnected  # never cleared by the wrong board
    (alarm,) = [c for c in changes if c.alarm == "device_refused" and c.state == AlarmState.ACTIVE]
    assert "is not the board this session started with: serial SIM-0002, expected SIM-0001" in alarm.message
    with sqlite3.connect(db) as con:
        kinds = [k for (k,) in con.execute("SELECT kind FROM technical_events")]
    assert "refused" in kinds and "reconnect" not in kinds[kinds.index("refused"):]
