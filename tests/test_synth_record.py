"""The synthetic bedside recording used by the demo: readable by the signal core, gap where asked."""

from __future__ import annotations

import numpy as np
import pytest

from bedside.leads import CANONICAL_LEADS
from bedside.records import open_record
from trainer.synth_record import _lead_off_option, ramp_severities, write_recording


def test_recording_reads_back_with_its_lead_off_gap(tmp_path):
    path = write_recording(tmp_path / "bed", minutes=1.0, seed=3, lead_off=("V3", 20.0, 4.0))
    record = open_record(path)
    assert record.fs_hz == 500 and record.n_samples == 30000
    x = record.read()
    nan = np.isnan(x)
    v3 = CANONICAL_LEADS.index("V3")
    assert nan[v3, 10000:12000].all() and not nan[v3, :10000].any() and not nan[v3, 12000:].any()
    assert not np.delete(nan, v3, axis=0).any()


def test_severities_ramp_up_after_a_flat_start():
    s = ramp_severities(3.0)
    assert len(s) == 18 and s[0] == s[5] < s[-1] and np.all(np.diff(s) >= 0)


def test_lead_off_option_parsing():
    assert _lead_off_option("V3@40+6") == ("V3", 40.0, 6.0)
    assert _lead_off_option("none") is None
    with pytest.raises(ValueError, match="LEAD@START"):
        _lead_off_option("V9@1+2")


@pytest.mark.parametrize("minutes", ["nan", "inf", "-1", "1e9", "0.1"])
def test_minutes_must_be_a_finite_length_up_to_a_day(tmp_path, minutes):
    from click.testing import CliRunner

    from trainer.synth_record import synth_record_command

    result = CliRunner().invoke(synth_record_command(), ["--out", str(tmp_path / "r"), "--minutes", minutes])
    assert result.exit_code == 2 and "--minutes" in result.output and "Traceback" not in result.output
    assert not list(tmp_path.iterdir())
