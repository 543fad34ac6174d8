"""The systemd drop-in that lets bedside.service send HL7: verifies, stays hardened, reaches one address."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from bedside.hl7.settings import parse_target
from tests.test_systemd import ANALYZE, UNITS, checkable_copy, directives

needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze not installed (apt-get install systemd)")
DROP_IN = UNITS / "bedside.service.d" / "hl7.conf"


def test_drop_in_opens_tcp_to_the_central_only():
    d = directives(DROP_IN)
    host, port = parse_target(d["Environment"][0].split("=", 1)[1])
    assert d["Environment"][0].startswith("BEDSIDE_HL7=") and port == 2575
    assert d["IPAddressDeny"] == ["any"] and d["IPAddressAllow"] == [host]
    assert d["PrivateNetwork"] == ["no"]
    assert set(d["RestrictAddressFamilies"][0].split()) == {"AF_UNIX", "AF_INET", "AF_INET6"}


@needs_analyze
def test_unit_with_the_drop_in_verifies_and_stays_hardened(tmp_path):
    unit = checkable_copy(UNITS / "bedside.service", tmp_path, "bedside.service")
    (tmp_path / "bedside.service.d").mkdir()
    shutil.copy(DROP_IN, tmp_path / "bedside.service.d" / "hl7.conf")
    verify = subprocess.run([ANALYZE, "verify", str(unit)], capture_output=True, text=True, cwd=tmp_path)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    security = subprocess.run([ANALYZE, "security", "--offline=true", str(unit)], capture_output=True, text=True,
                              cwd=tmp_path)
    assert "PrivateNetwork=" in security.stdout and "has access to the host's network" in security.stdout
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", security.stdout)
    assert m and float(m.group(1)) <= 2.0, security.stdout
