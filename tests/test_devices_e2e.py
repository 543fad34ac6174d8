"""End to end over real ports: simulator on a pty/TCP/loop, the Driver on the other end.

Every delivered sample is compared with what the simulator sent (its quantised codes back in mV),
exactly; every missing index must lie in a reported gap; nothing is delivered from a frame that
was never sent. Streams run at 5-20x real time to keep each test a few seconds.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from devices.cli import main
from devices.driver import Driver, to_canonical
from devices.errors import DeviceError
from devices.groundtruth import Comparison, Received, compare
from devices.protocols import get_protocol
from devices.simulator import CLEAN, Board, Simulator, encode_stream
from devices.sources import record_signal, synthetic_signal

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
RECORD = DATA / "records" / "s0010_re"
needs_record = pytest.mark.skipif(not (DATA / "records" / "s0010_re.hea").exists(),
                                  reason=f"real record {RECORD} absent (../shared/data is not in a fresh clone)")
LEADS = ("I", "II", "V1", "V2", "V3", "V4", "V5", "V6")
FAULTS = "drop=0.01,flip=0.002,cut=0.002,garbage=37@3s,garbage=500@11s,leadoff=V3@5s+4s,leadoff=RA@13s+1s,seed=5"


def stream(board: Board, *, speed: float, transport: str = "pty", link: str | None = None,
           timeout_s: float = 60.0) -> tuple[Simulator, Received, Driver]:
    """Run a board to its end with a Driver attached; returns after the driver saw the port go.

    A ``link`` plays a /dev/serial/by-id link (it follows the board and only the board), so it is
    declared stable: after a replug the driver sends the handshake and start command there."""
    sim = Simulator(board, transport=transport, link=link, speed=speed)
    got = Received()
    address = sim.start()
    drv = Driver(address, board.spec.name, on_block=got.on_block, on_event=got.on_event, backoff_s=(0.05, 0.4),
                 stable_port=link is not None)
    try:
        drv.start()
        assert sim.wait(timeout_s), "simulator did not finish"
        n_disc = len(board.plan.disconnect_windows()) + 1
        assert got.wait_for(lambda r: len(r.kinds("disconnect")) >= n_disc, 10.0), got.events[-5:]
    finally:
        drv.stop()
        sim.stop()
    return sim, got, drv


def check(sim: Simulator, got: Received, drv: Driver, exact: bool) -> Comparison:
    """The invariants every run must keep; ``exact``: the protocol has a CRC (nothing damaged gets through)."""
    cmp = compare(sim.status, sim.board.truth_mv(0, sim.board.n_frames), got)
    wraps = [e.detail for e in got.kinds("gap") if "wrap" in e.detail]
    assert not cmp.problems, (cmp.problems, wraps)
    assert cmp.invented.size == 0, f"samples from frames never sent: {cmp.invented[:10]}"
    assert cmp.unaccounted.size == 0, f"missing without a gap event: {cmp.unaccounted[:10]}"
    assert cmp.double_counted.size == 0
    assert cmp.mismatched.get("clean", 0) == 0, cmp.mismatched
    c = drv.counters
    assert c.frames_received == cmp.received and c.frames_lost == cmp.reported_lost
    assert c.bytes_received == sim.report()["bytes_sent"]
    if exact:
        assert sum(cmp.mismatched.values()) == 0 and cmp.clean_missing.size == 0, cmp.clean_missing[:10]
    else:  # Cyton: a clean packet can be lost only next to a damaged or missing one
        st = sim.status
        for i in cmp.clean_missing:
            assert st[max(i - 1, 0)] != CLEAN or st[min(i + 1, st.size - 1)] != CLEAN, i
    counts = {k: len(got.kinds(k)) for k in sorted({e.kind for e in got.events})}
    print(f"\n{sim.board.spec.name}: {cmp.row()} events={counts}")
    return cmp


# Cyton's counter wraps every 256 samples: at speed X a reader stall of about 128 / (250 X) s makes
# the host clock unable to count wraps (see devices.sequencer), so Cyton streams run slower here,
# over the first 16 s of the record (the whole record for ADS1298).
SPEED = {"cyton": 3, "ads1298": 20}
SECONDS = {"cyton": 16.0, "ads1298": None}


@needs_record
@pytest.mark.parametrize("name", ["cyton", "ads1298"])
def test_record_over_pty_arrives_exactly(name: str) -> None:
    spec = get_protocol(name)
    board = Board(spec, record_signal(RECORD, spec.fs_hz, LEADS, duration_s=SECONDS[name]))
    sim, got, drv = stream(board, speed=SPEED[name])
    cmp = check(sim, got, drv, exact=True)
    assert cmp.received == board.n_frames and cmp.reported_lost == 0
    # the plain /dev/pts/N name is warned about at start; the simulator closing at the end
    assert [e.kind for e in got.events] == ["plain_port", "disconnect"]
    x = to_canonical(got.blocks[0])
    assert x.shape == (12, got.blocks[0].n_samples)
    assert np.allclose(x[2], x[1] - x[0], atol=1e-6)  # III = II - I


@needs_record
@pytest.mark.parametrize("name", ["cyton", "ads1298"])
def test_record_over_pty_with_faults(name: str) -> None:
    spec = get_protocol(name)
    board = Board(spec, record_signal(RECORD, spec.fs_hz, LEADS, duration_s=SECONDS[name]), FAULTS)
    sim, got, drv = stream(board, speed=SPEED[name])
    cmp = check(sim, got, drv, exact=name == "ads1298")
    assert cmp.sent["dropped"] > 20 and cmp.sent["damaged"] > 10
    assert got.kinds("garbage") and got.kinds("resync")
    assert drv.counters.resyncs == len(got.kinds("resync"))
    if name == "ads1298":
        assert len(got.kinds("crc_error")) == drv.counters.frames_corrupt > 0
        idx = got.indices()
        lead_events = [(e.kind, e.detail, e.sample_index) for e in got.events if e.kind.startswith("lead")]
        first_at = lambda i: int(idx[idx >= i][0])  # noqa: E731 - the first delivered sample from i on
        assert lead_events == [("lead_off", "V3", first_at(2500)), ("lead_on", "V3", first_at(4500)),
                               ("lead_off", "RA", first_at(6500)), ("lead_on", "RA", first_at(7000))]
        for b in got.blocks:
            assert b.lead_off["V3"] is (2500 <= b.first_index < 4500)
    else:
        assert not got.kinds("lead_off")  # Cyton carries no lead-off bits
        assert all(set(b.lead_off.values()) == {None} for b in got.blocks)


@pytest.mark.parametrize("name, speed", [("cyton", 4), ("ads1298", 10)])
def test_vanished_port_is_a_disconnect_and_the_driver_follows_the_link(name: str, speed: float, tmp_path) -> None:
    """The pty disappears for 2 s and comes back as a new pty; the by-id style link moves to it."""
    spec = get_protocol(name)
    board = Board(spec, synthetic_signal(spec.fs_hz, LEADS, 10.0), "disconnect=4s+2s,drop=0.005,seed=2")
    sim, got, drv = stream(board, speed=speed, link=str(tmp_path / "usb-OpenBCI-if00"))
    check(sim, got, drv, exact=name == "ads1298")
    kinds = [e.kind for e in got.events if e.kind in ("disconnect", "reconnect")]
    assert kinds == ["disconnect", "reconnect", "disconnect"]
    assert drv.counters.disconnects == 2 and drv.counters.reconnects == 1
    gap = max(got.kinds("gap"), key=lambda e: e.length)
    idx = got.indices()
    assert gap.sample_index == 4 * spec.fs_hz  # the port vanished at 4 s of stream time
    assert gap.sample_index + gap.length == int(idx[idx > gap.sample_index][0]) and gap.length > 2 * spec.fs_hz
    if name == "cyton":
        assert "wrap ambiguous" in gap.detail  # the 1-byte counter wrapped several times meanwhile


def test_socket_url_with_a_server_that_goes_away() -> None:
    spec = get_protocol("ads1298")
    board = Board(spec, synthetic_signal(spec.fs_hz, LEADS, 8.0), "disconnect=3s+1s,flip=0.005,seed=1")
    sim, got, drv = stream(board, speed=8, transport="tcp")
    check(sim, got, drv, exact=True)
    assert drv.url.startswith("socket://") and len(got.kinds("reconnect")) == 1


def test_loop_url_delivers_what_was_written() -> None:
    stream_ = encode_stream("cyton", synthetic_signal(250.0, LEADS, 6.0), "drop=0.02,garbage=20@2s,seed=3")
    got = Received()
    drv = Driver("loop://", "cyton", on_block=got.on_block, on_event=got.on_event)
    drv.start()
    try:
        data = stream_.data
        for pos in range(0, len(data), 330):  # loop:// hands the bytes back to the reader
            drv.write(data[pos:pos + 330])
            time.sleep(0.004)
        want = int(np.sum(stream_.status == CLEAN))
        assert got.wait_for(lambda r: drv.counters.frames_received >= want, 20.0), drv.counters
        c = drv.counters  # before stop(), whose 's' command the loop would hand back too
    finally:
        drv.stop()
    cmp = compare(stream_.status, stream_.truth_mv, got)
    assert cmp.invented.size == 0 and sum(cmp.mismatched.values()) == 0 and cmp.unaccounted.size == 0
    assert c.bytes_received == len(stream_.data) + 1  # + the start command 'b', echoed by the loop
    assert c.bytes_skipped == 20 + 1


def _start_cli_simulator(link: Path, seed: int) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "devices", "simulate", "--protocol", "ads1298", "--synthetic", "--pty",
         "--link", str(link), "--speed", "4", "--duration", "60", "--seed", str(seed)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = proc.stdout.readline().strip()
    return proc, first


def test_killed_simulator_then_a_new_one_on_the_same_link(tmp_path) -> None:
    """CLI simulator killed (port vanishes), a new board process appears behind the same by-id link."""
    link = tmp_path / "usb-ADS1298-if00"
    proc, first = _start_cli_simulator(link, seed=1)
    got = Received()
    drv = Driver(str(link), "ads1298", on_block=got.on_block, on_event=got.on_event, backoff_s=(0.05, 0.3),
                 stable_port=True)  # the link plays udev's by-id link here (removed on unplug)
    try:
        assert first == str(link) and os.path.islink(link)
        drv.start()
        assert got.wait_for(lambda r: sum(b.n_samples for b in r.blocks) >= 1000, 20.0)
        old_path = drv.port_path
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        assert got.wait_for(lambda r: r.kinds("disconnect"), 10.0)
        before = got.indices().max()
        os.unlink(link)  # udev removes the by-id link of an unplugged board
        squatter = os.openpty()  # takes the freed tty number: the board comes back under another one
        proc, first = _start_cli_simulator(link, seed=2)
        assert got.wait_for(lambda r: r.kinds("reconnect") and r.indices().max() > before + 1000, 30.0)
        assert drv.port_path != old_path and os.path.realpath(link) == drv.port_path
    finally:
        drv.stop()
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=20)
        for fd in locals().get("squatter", ()):
            os.close(fd)
    idx = got.indices()
    assert np.all(np.diff(idx) > 0)  # still monotonic although the new board counts from 0
    (gap,) = [e for e in got.kinds("gap") if "restarted" in e.detail]
    assert gap.sample_index == before + 1
    assert '"frames_due"' in out.splitlines()[-1]  # the JSON summary on SIGTERM


def test_cli_probe_identifies_the_protocol_and_prints_rates() -> None:
    spec = get_protocol("cyton")
    sim = Simulator(Board(spec, synthetic_signal(spec.fs_hz, LEADS, 30.0), "drop=0.01,seed=1"), speed=2)
    address = sim.start()
    try:
        r = CliRunner().invoke(main, ["probe", address, "--seconds", "2", "--listen", "0.8"])
    finally:
        sim.stop()
    assert r.exit_code == 0, r.output
    assert "OpenBCI Cyton (ADS1299) (cyton)" in r.output.splitlines()[0]
    last = r.output.strip().splitlines()[-1]
    assert '"protocol": "cyton"' in last and '"frames_received": ' in last
    assert '"frames_received": 0,' not in last


def test_a_port_that_is_not_there_yet(tmp_path) -> None:
    """With reconnect, a missing port is a disconnect event and retried; without, start() says why."""
    link = tmp_path / "usb-board-if00"
    with pytest.raises(DeviceError, match="cannot open"):
        Driver(str(link), "ads1298", on_block=print, on_event=print, reconnect=False).start()
    got = Received()
    drv = Driver(str(link), "ads1298", on_block=got.on_block, on_event=got.on_event, backoff_s=(0.02, 0.1))
    spec = get_protocol("ads1298")
    sim = Simulator(Board(spec, synthetic_signal(spec.fs_hz, LEADS, 4.0)), link=str(link), speed=4)
    try:
        drv.start()
        assert [e.kind for e in got.events] == ["disconnect"] and not drv.connected
        time.sleep(0.3)  # several retries, backing off
        sim.start()
        assert got.wait_for(lambda r: r.kinds("reconnect") and r.blocks, 10.0)
        assert drv.connected and drv.counters.reconnects == 1
    finally:
        drv.stop()
        sim.stop()
