"""Reading real and written WFDB records as canonical leads in mV, and refusing unusable ones."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import wfdb

from bedside.errors import RecordError
from bedside.leads import CANONICAL_LEADS, INDEPENDENT_LEADS
from bedside.records import open_record, read_record


def test_ptb_record_loads_as_12_canonical_leads_in_mv(records_dir):
    record = open_record(records_dir / "s0010_re")
    assert record.fs_hz == 1000 and record.n_samples == 38400
    assert record.derived == ()  # PTB records all 12 leads (lower-case names)
    x = record.read()
    raw = wfdb.rdrecord(str(records_dir / "s0010_re"))
    names = [n.lower() for n in raw.sig_name]
    assert x.shape == (12, 38400) and x.dtype == np.float32
    for k, lead in enumerate(CANONICAL_LEADS):  # each canonical slot holds the lead of that name
        np.testing.assert_allclose(x[k], raw.p_signal[:, names.index(lead.lower())], rtol=1e-6, atol=1e-6)


def test_ptb_slots_aVF_before_aVL(records_dir):
    """PTB stores avl before avf; the canonical order puts aVF before aVL."""
    x = open_record(records_dir / "s0010_re").read(0, 2000)
    raw = wfdb.rdrecord(str(records_dir / "s0010_re"), sampto=2000)
    np.testing.assert_allclose(x[CANONICAL_LEADS.index("aVF")], raw.p_signal[:, 5], atol=1e-6)  # 'avf'
    np.testing.assert_allclose(x[CANONICAL_LEADS.index("aVL")], raw.p_signal[:, 4], atol=1e-6)  # 'avl'


@pytest.mark.parametrize("name, expected", [
    ("100", ["missing I, II, III", "'MLII', 'V5'"]),
    ("3000003_0003", ["8.22 s long", "needs at least one 10 s window", "'II', 'V'"]),
    ("test01_00s", ["'ECG 1', 'ECG 2', 'ECG 3', 'ECG 4'", "never guessed"]),
    ("a103l", ["'II', 'V', 'PLETH'"]),
    ("mixedsignals", ["'II', 'III', 'V'"]),
])
def test_unusable_real_records_are_refused_with_reasons(records_dir, name, expected):
    with pytest.raises(RecordError) as err:
        open_record(records_dir / name)
    message = str(err.value)
    assert str(records_dir / name) in message
    for fragment in expected:
        assert fragment in message


def _write(tmp: Path, name: str, leads, fs=500, n=6000, units="mV", seed=0, fmt="16") -> np.ndarray:
    sig = np.random.default_rng(seed).normal(0, 0.5, (n, len(leads)))
    wfdb.wrsamp(name, fs=fs, units=[units] * len(leads), sig_name=list(leads), p_signal=sig,
                fmt=[fmt] * len(leads), write_dir=str(tmp))
    return sig


def test_eight_independent_leads_derive_the_limb_leads(tmp_path):
    sig = _write(tmp_path, "eight", INDEPENDENT_LEADS)
    record = open_record(tmp_path / "eight")
    assert record.derived == ("III", "aVR", "aVF", "aVL")
    x = record.read()
    lead_i, lead_ii = x[0], x[1]
    np.testing.assert_allclose(x[CANONICAL_LEADS.index("III")], lead_ii - lead_i, atol=1e-5)
    np.testing.assert_allclose(x[CANONICAL_LEADS.index("aVF")], lead_ii - lead_i / 2, atol=1e-5)
    np.testing.assert_allclose(x[CANONICAL_LEADS.index("aVL")], lead_i - lead_ii / 2, atol=1e-5)
    np.testing.assert_allclose(lead_i, sig[:, 0], atol=1e-3)  # 16-bit quantisation of wrsamp


@pytest.mark.parametrize("units, factor", [("uV", 1e-3), ("V", 1e3), ("mV", 1.0)])
def test_units_convert_to_millivolts(tmp_path, units, factor):
    sig = _write(tmp_path, "u", INDEPENDENT_LEADS, units=units)
    x = open_record(tmp_path / "u").read()
    np.testing.assert_allclose(x[0], sig[:, 0] * factor, rtol=2e-3, atol=2e-3 * factor)


def test_non_voltage_units_are_refused(tmp_path):
    _write(tmp_path, "mmhg", INDEPENDENT_LEADS, units="mmHg")
    with pytest.raises(RecordError, match="not a voltage unit"):
        open_record(tmp_path / "mmhg")


def test_chunks_equal_a_whole_read_and_any_rate_works(tmp_path):
    _write(tmp_path, "r", INDEPENDENT_LEADS, fs=360, n=9000, fmt="212")
    record = open_record(tmp_path / "r")
    whole = record.read()
    pieces = [chunk for _, chunk in record.chunks(1000)]
    np.testing.assert_array_equal(np.concatenate(pieces, axis=1), whole)


def test_multisegment_record_with_missing_signal_gives_nan_gap(tmp_path):
    _write(tmp_path, "seg0", INDEPENDENT_LEADS, n=3000, seed=1)
    _write(tmp_path, "seg1", INDEPENDENT_LEADS[:7], n=4000, seed=2)  # V6 absent in segment 2
    (tmp_path / "lay.hea").write_text("lay 8 500 0\n" + "".join(f"~ 0 200/mV 16 0 0 0 0 {n}\n" for n in INDEPENDENT_LEADS))
    (tmp_path / "multi.hea").write_text("multi/3 8 500 7000\nlay 0\nseg0 3000\nseg1 4000\n")
    record = open_record(tmp_path / "multi")
    assert record.n_samples == 7000
    x = record.read(2500, 3500)
    v6 = CANONICAL_LEADS.index("V6")
    assert not np.isnan(x[v6, :500]).any() and np.isnan(x[v6, 500:]).all()
    assert not np.isnan(np.delete(x, v6, axis=0)).any()


def test_corrupt_header_and_missing_file_are_named(tmp_path):
    (tmp_path / "bad.hea").write_text("this is not a header\n")
    with pytest.raises(RecordError, match="bad.hea"):
        open_record(tmp_path / "bad")
    with pytest.raises(RecordError, match="no such WFDB header"):
        open_record(tmp_path / "absent")


def test_truncated_signal_file_is_reported(tmp_path):
    _write(tmp_path, "trunc", INDEPENDENT_LEADS)
    dat = tmp_path / "trunc.dat"
    dat.write_bytes(dat.read_bytes()[:1000])
    record = open_record(tmp_path / "trunc")
    with pytest.raises(RecordError, match="trunc"):
        record.read()


def test_read_record_returns_rate(records_dir):
    x, fs = read_record(records_dir / "s0010_re")
    assert fs == 1000.0 and x.shape[0] == 12


def _edit_header(tmp: Path, name: str, record_line: str | None = None, gain: str | None = None) -> None:
    hea = tmp / f"{name}.hea"
    lines = hea.read_text().splitlines()
    if record_line is not None:
        lines[0] = record_line
    if gain is not None:
        fields = lines[1].split()
        fields[2] = gain + fields[2][fields[2].index("("):]
        lines[1] = " ".join(fields)
    hea.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("record_line, field", [
    ("r 8", "no sampling frequency"),  # wfdb would silently read 250 Hz
    ("r 8 0 6000", "'0'"), ("r 8 -500 6000", "'-500'"), ("r 8 nan 6000", "'nan'"), ("r 8 inf 6000", "'inf'"),
    ("r 8 abc 6000", "'abc'"), ("r 8 5 6000", "'5'"), ("r 8 1e6 6000", "'1e6'"),
])
def test_an_impossible_sampling_frequency_is_refused(tmp_path, record_line, field):
    (tmp_path / "sub").mkdir()
    _write(tmp_path / "sub", "r", INDEPENDENT_LEADS)
    _edit_header(tmp_path / "sub", "r", record_line=record_line)
    with pytest.raises(RecordError, match="sampling frequency|between") as err:
        open_record(tmp_path / "sub" / "r")
    message = str(err.value)
    assert message.startswith("record r:") and field in message and str(tmp_path) not in message
    assert "Correct the header" in message


@pytest.mark.parametrize("gain", ["0", "nan", "inf", "NaN"])
def test_a_zero_or_non_finite_gain_is_refused(tmp_path, gain):
    _write(tmp_path, "g", INDEPENDENT_LEADS)
    _edit_header(tmp_path, "g", gain=gain)
    with pytest.raises(RecordError, match=f"record g: signal 'I' of g has gain '{gain}'"):
        open_record(tmp_path / "g")


def test_samples_that_become_infinite_are_refused(tmp_path):
    _write(tmp_path, "tiny", INDEPENDENT_LEADS)
    _edit_header(tmp_path, "tiny", gain="1e-300")
    record = open_record(tmp_path / "tiny")
    with pytest.raises(RecordError, match="record tiny: lead I becomes infinite at sample 0"):
        record.read(0, 1000)
