"""Fault specs, the simulated board, its sources, and the whole chain without a port."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from scipy.signal import resample_poly

from devices import ads1298
from devices.cli import main
from devices.errors import DeviceError
from devices.faults import FaultPlan, FaultSpec, parse_faults
from devices.groundtruth import Received, compare
from devices.protocols import get_protocol
from devices.simulator import CLEAN, DAMAGED, DROPPED, NO_SIGNAL, RAIL, Board, encode_stream
from devices.sources import DeviceSignal, record_signal, resample_leads, synthetic_signal

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
RECORD = DATA / "records" / "s0010_re"
needs_record = pytest.mark.skipif(not (DATA / "records" / "s0010_re.hea").exists(),
                                  reason=f"real record {RECORD} absent (../shared/data is not in a fresh clone)")
LEADS = ("I", "II", "V1", "V2", "V3", "V4", "V5", "V6")


def test_fault_spec_parses_the_documented_example() -> None:
    spec = parse_faults("drop=0.01,flip=0.001,garbage=5@2s,leadoff=V3@10s+5s,disconnect=20s+3s,drift=50ppm,seed=1")
    assert spec == FaultSpec(drop=0.01, flip=0.001, garbage=((5, 2.0),), leadoff=(("V3", 10.0, 5.0),),
                             disconnect=((20.0, 3.0),), drift_ppm=50.0, seed=1)
    assert parse_faults("garbage=3@500ms,garbage=4@1s,cut=0.5,drift=-20ppm").garbage == ((3, 0.5), (4, 1.0))
    assert parse_faults("").is_clean and parse_faults(None) == FaultSpec()


@pytest.mark.parametrize("spec, words", [
    ("drop=1.5", "outside [0, 1)"), ("drop=x", "not a probability"), ("garbage=5", "garbage=BYTES@TIME"),
    ("leadoff=V9@1s+1s", "not one of"), ("leadoff=V3@1+1s", "not a time"), ("disconnect=3s", "START+DURATION"),
    ("drift=50", "drift=Xppm"), ("wobble=1", "unknown fault"), ("seed=-1", "non-negative"), ("drop", "KEY=VALUE"),
])
def test_fault_spec_errors_name_the_item_and_the_fix(spec: str, words: str) -> None:
    with pytest.raises(DeviceError) as err:
        parse_faults(spec)
    assert words in str(err.value) and spec.split("=")[0] in str(err.value)


def test_fault_decisions_are_per_frame_and_reproducible() -> None:
    plan = FaultPlan(parse_faults("drop=0.2,flip=0.1,cut=0.05,seed=4"), 500.0, 43)
    whole = plan.frame_faults(0, 9000)
    parts = [plan.frame_faults(a, b) for a, b in ((0, 100), (100, 4500), (4500, 9000))]
    assert np.array_equal(whole.drop, np.concatenate([p.drop for p in parts]))
    assert np.array_equal(whole.flip_byte, np.concatenate([p.flip_byte for p in parts]))
    assert whole.drop.mean() == pytest.approx(0.2, abs=0.02)
    assert (whole.flip_byte >= 0).mean() == pytest.approx(0.1, abs=0.02)
    assert np.all((whole.cut_len == 0) | ((whole.cut_len >= 1) & (whole.cut_len < 43)))
    other = FaultPlan(parse_faults("drop=0.2,seed=5"), 500.0, 43).frame_faults(0, 9000)
    assert not np.array_equal(whole.drop, other.drop)


def test_board_applies_faults_and_lead_off() -> None:
    sig = synthetic_signal(500.0, LEADS, 12.0)
    board = Board("ads1298", sig, "drop=0.05,flip=0.01,garbage=9@2s,leadoff=V3@4s+2s,leadoff=LA@5s+1s,seed=2")
    r = board.render(0, 6000)
    assert (r.status == DROPPED).mean() == pytest.approx(0.05, abs=0.015)
    assert r.garbage.sum() == 9 and r.garbage[1000] == 9
    assert all(p == b"" or r.status[i] != DROPPED for i, p in enumerate(r.pieces) if r.garbage[i] == 0)
    codes, status, _ = board.codes(0, 6000)
    v3, la = ads1298.lead_off_masks(LEADS)["V3"], ads1298.lead_off_masks(LEADS)["LA"]
    assert np.array_equal(np.flatnonzero(status & v3), np.arange(2000, 3000))
    assert np.array_equal(np.flatnonzero(status & la), np.arange(2500, 3000))
    assert np.all(codes[2000:3000, LEADS.index("V3")] == RAIL)
    assert np.all(codes[2500:3000, 0] == RAIL)  # LA feeds lead I
    assert np.all(codes[:2000, LEADS.index("V3")] != RAIL)
    clean = np.flatnonzero(r.status == CLEAN)
    frames = get_protocol("ads1298").encode(clean, codes[clean], status[clean])
    assert all(r.pieces[i].endswith(frames[k].tobytes()) for k, i in enumerate(clean[:200]))
    damaged = np.flatnonzero(r.status == DAMAGED)
    assert damaged.size and all(r.pieces[i] != get_protocol("ads1298").encode(
        np.array([i]), codes[i:i + 1], status[i:i + 1]).tobytes() for i in damaged)


def test_gaps_in_the_source_are_never_sent() -> None:
    mv = synthetic_signal(250.0, LEADS, 4.0).mv.copy()
    mv[300:320, 2] = np.nan
    board = Board("cyton", DeviceSignal("with-gap", 250.0, LEADS, mv))
    r = board.render(0, 1000)
    assert np.array_equal(np.flatnonzero(r.status == NO_SIGNAL), np.arange(300, 320))
    assert all(r.pieces[i] == b"" for i in range(300, 320))


def test_resampling_keeps_gaps_as_gaps() -> None:
    rows = np.sin(np.linspace(0, 20, 4000))[None, :].repeat(2, 0)
    rows[1, 1000:1010] = np.nan
    y = resample_leads(rows, 1000.0, 250.0)
    assert np.allclose(y[0], resample_poly(rows[0], 1, 4))
    bad = np.flatnonzero(np.isnan(y[1]))
    assert bad.size and bad.min() <= 250 <= bad.max() and bad.max() - bad.min() < 40
    assert not np.isnan(y[0]).any()


@needs_record
@pytest.mark.parametrize("name", ["cyton", "ads1298"])
def test_record_is_resampled_to_the_board_rate(name: str) -> None:
    from bedside.records import open_record

    fs = get_protocol(name).fs_hz
    sig = record_signal(RECORD, fs, LEADS)
    rec = open_record(RECORD, require_window=False)
    x = rec.read()
    assert sig.mv.shape == (int(rec.n_samples * fs / rec.fs_hz), 8)
    want = resample_poly(x[6].astype(np.float64), 1, int(rec.fs_hz / fs))  # V1
    assert np.allclose(sig.mv[:, 2], want, atol=1e-5)


def test_synthetic_ecg_obeys_einthoven_and_its_seed() -> None:
    a = synthetic_signal(500.0, ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2"), 5.0, seed=3)
    assert np.allclose(a.mv[:, 2], a.mv[:, 1] - a.mv[:, 0], atol=1e-5)
    assert np.array_equal(a.mv, synthetic_signal(500.0, a.leads, 5.0, seed=3).mv)
    assert not np.array_equal(a.mv, synthetic_signal(500.0, a.leads, 5.0, seed=4).mv)
    assert 0.5 < np.ptp(a.mv[:, 1]) < 5.0  # millivolt-scale QRS in lead II


@pytest.mark.parametrize("name", ["cyton", "ads1298"])
def test_encoded_stream_through_parser_and_sequencer_matches_the_truth(name: str) -> None:
    """The whole chain without a port: every delivered sample exact, every loss reported."""
    spec = get_protocol(name)
    faults = "drop=0.02,cut=0.005,garbage=40@3s,garbage=300@7s,leadoff=V2@2s+3s,disconnect=9s+2s,seed=9"
    stream = encode_stream(name, synthetic_signal(spec.fs_hz, LEADS, 16.0), faults)
    parser, seqr, got = spec.make_parser(), spec.make_sequencer(LEADS), Received()
    step = spec.frame_size * 3
    for pos in range(0, len(stream.data), step):
        host_time = stream.host_time_at(pos + step, t0=100.0)  # reads as a real-time board would deliver them
        for item in seqr.push(parser.feed(stream.data[pos:pos + step]), host_time):
            (got.on_block if hasattr(item, "samples_mv") else got.on_event)(item)
    for item in seqr.push(parser.flush(), 1e9, final=True):
        (got.on_block if hasattr(item, "samples_mv") else got.on_event)(item)
    cmp = compare(stream.status, stream.truth_mv, got)
    assert not cmp.problems and cmp.invented.size == 0 and cmp.unaccounted.size == 0 and cmp.double_counted.size == 0
    assert cmp.mismatched.get("clean", 0) == 0
    assert cmp.sent["disconnected"] == 1000 * int(spec.fs_hz) // 500
    if name == "ads1298":
        assert cmp.clean_missing.size == 0 and sum(cmp.mismatched.values()) == 0
        assert [(e.kind, e.sample_index) for e in got.events if e.kind.startswith("lead")] == [
            ("lead_off", 1000), ("lead_on", 2500)]


def test_cli_simulate_rejects_bad_arguments_with_the_fix() -> None:
    runner = CliRunner()
    r = runner.invoke(main, ["simulate", "--protocol", "cyton", "--synthetic", "--record", "x", "--pty"])
    assert r.exit_code == 2 and "exactly one source" in r.output
    r = runner.invoke(main, ["simulate", "--protocol", "cyton", "--synthetic"])
    assert r.exit_code == 2 and "--pty or --tcp" in r.output
    r = runner.invoke(main, ["simulate", "--protocol", "cyton", "--synthetic", "--pty", "--faults", "drop=2"])
    assert r.exit_code == 1 and "outside [0, 1)" in r.output
    r = runner.invoke(main, ["simulate", "--protocol", "ads1298", "--record", "/nonexistent/rec", "--pty"])
    assert r.exit_code == 1 and "no such WFDB header" in r.output
    r = runner.invoke(main, ["simulate", "--help"])
    assert "leadoff=E@T+D" in r.output and "leadoff=V3@10s+5s,disconnect=20s+3s" in r.output
    r = runner.invoke(main, ["probe", "/nonexistent/tty", "--listen", "0.1"])
    assert r.exit_code == 1 and "cannot open /nonexistent/tty" in r.output and "dialout" in r.output


def test_the_device_layer_never_imports_torch() -> None:
    code = ("import sys, devices.cli, devices.driver, devices.simulator, devices.probe, devices.groundtruth; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'torchvision')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1],
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
