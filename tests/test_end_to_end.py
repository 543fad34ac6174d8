"""The whole path of the product, through its command lines: `trainer synth` -> `trainer prepare` ->
`trainer run` -> `trainer export` -> `bedside verify` -> `bedside replay` -> rows in SQLite."""

from __future__ import annotations

import os
import stat

import pytest
import sqlite_utils
from click.testing import CliRunner

from bedside.cli import main as bedside_main
from tests.trainer_fixtures import tiny_config
from trainer.cli import main as trainer_main


def _ok(result) -> str:
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result.output


@pytest.mark.slow
def test_synthetic_cohort_to_alarm_rows_in_sqlite(tmp_path):
    trainer, bedside = CliRunner(), CliRunner()
    _ok(trainer.invoke(trainer_main, ["synth", "--out", str(tmp_path / "mimic"), "--subjects", "80", "--seed", "2"]))
    _ok(trainer.invoke(trainer_main, ["prepare", "--mimic-root", str(tmp_path / "mimic"), "--out",
                                      str(tmp_path / "cache"), "--workers", "1"]))
    config = tiny_config(tmp_path / "tiny.toml")
    _ok(trainer.invoke(trainer_main, ["run", "--config", str(config), "--cache", str(tmp_path / "cache"),
                                      "--out", str(tmp_path / "run"), "--no-progress"]))
    bundle = tmp_path / "model.onnx"
    key = tmp_path / "signing" / "release.key"
    kid = _ok(trainer.invoke(trainer_main, ["keygen", "--out", str(key)])).split("key id ")[1].split()[0]
    trust = tmp_path / "trusted-keys"  # the public key only
    trust.mkdir()
    (trust / "release.pub").write_bytes(key.with_name("release.key.pub").read_bytes())
    # the tiny run may learn no label credibly: allow such a bundle (its risks are logged, never alarmed)
    _ok(trainer.invoke(trainer_main, ["export", str(tmp_path / "run"), "--out", str(bundle), "--allow-unvalidated",
                                      "--sign", str(key)]))
    assert bundle.is_file()
    verified = _ok(bedside.invoke(bedside_main, ["verify", str(bundle), "--trust", str(trust)]))
    assert "golden" in verified and "checksum" in verified and f"signed by key {kid}" in verified
    record = tmp_path / "records" / "bed"
    _ok(trainer.invoke(trainer_main, ["synth-record", "--out", str(record), "--minutes", "1.5",
                                      "--lead-off", "V3@40+6"]))

    db_path = tmp_path / "alerts.db"
    out = _ok(bedside.invoke(bedside_main, ["replay", str(record), "--model", str(bundle), "--db", str(db_path),
                                            "--bed", "e2e-bed", "--trust", str(trust)]))
    assert "UNSIGNED" not in out
    assert str(db_path) in out or "alerts.db" in out

    assert stat.S_IMODE(os.stat(db_path).st_mode) == 0o600  # no one else reads the alarm log
    db = sqlite_utils.Database(db_path)
    sessions = list(db["sessions"].rows)
    assert len(sessions) == 1 and sessions[0]["bed_id"] == "e2e-bed"
    windows = list(db["windows"].rows)
    assert len(windows) == 17  # 90 s, 10 s windows every 5 s
    assert sum(1 for w in windows if w["scored"]) >= 12  # the V3 lead-off windows are not scored
    transitions = list(db["alarm_transitions"].rows)
    lead_off = [t for t in transitions if t["alarm"] == "lead_off"]
    assert lead_off and lead_off[0]["state"] == "active" and lead_off[0]["kind"] == "technical"
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
