"""Every numeric option of `bedside` is range-checked by click: a bad value is a usage error naming the
option (exit 2), never a traceback, and nothing is opened or written."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from bedside.cli import main

REPLAY = ["replay", "rec", "--model", "m.onnx", "--db", "never.db"]
MONITOR = ["monitor", "--port", "loop://", "--protocol", "ads1298", "--db", "never.db"]
ALERTS = ["alerts", "--db", "never.db"]


@pytest.mark.parametrize("command, option, value", [
    *[(REPLAY, "--hop", v) for v in ("nan", "inf", "-inf", "1e9", "0", "-5", "abc")],
    *[(REPLAY, "--speed", v) for v in ("nan", "inf", "0", "-1", "1e9")],
    *[(MONITOR, "--hop", v) for v in ("nan", "inf", "1e9", "0")],
    *[(MONITOR, "--duration", v) for v in ("nan", "inf", "0", "-3", "1e300")],
    *[(MONITOR, "--baudrate", v) for v in ("0", "-9600", "1e9", "99999999999")],
    *[(MONITOR, "--lead-map", v) for v in ("V1,V2,V3,V4,V5,V6,V1,V2", "III,aVF", "")],
    *[(ALERTS, "--since", v) for v in ("nan", "inf", "-inf", "1e300", "-5", "yesterday")],
    *[(ALERTS, "--session", v) for v in ("0", "-1", str(2**63), "99999999999999999999999", "nan")],
])
def test_a_bad_number_is_a_usage_error_naming_the_option(tmp_path, monkeypatch, command, option, value):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("BEDSIDE_DB", raising=False)
    result = CliRunner().invoke(main, [*command, option, value])
    assert result.exit_code == 2, result.output
    assert option in result.output and "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert not (tmp_path / "never.db").exists()


def test_monitor_with_an_empty_db_is_refused_not_sent_to_the_default_log(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("BEDSIDE_DB", raising=False)
    result = CliRunner().invoke(main, ["monitor", "--port", "loop://", "--protocol", "ads1298", "--db", ""])
    assert result.exit_code == 2 and "--db is empty" in result.output, result.output
    assert list(tmp_path.iterdir()) == []
