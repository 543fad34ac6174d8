"""systemd units (verify, security exposure <= 2.0, the required directives) and the sd_notify watchdog."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from bedside.alarm_config import load_alarm_config
from bedside.engine import Engine, EngineSettings
from bedside.store import Store
from bedside.watchdog import Notifier
from tests.engine_helpers import FeedSource, synthetic_ecg

UNITS = Path(__file__).resolve().parents[1] / "systemd"
ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze not installed "
                                   "(apt-get install systemd) - the units are not checked here")


def directives(path: Path) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            key, value = line.split("=", 1)
            out.setdefault(key.strip(), []).append(value.strip())
    return out


def checkable_copy(unit: Path, folder: Path, name: str) -> Path:
    """The unit with ExecStart on an executable that exists here and the env file optional."""
    text = unit.read_text().replace("/opt/bedside/venv/bin/bedside", f"{sys.executable} -m bedside.cli")
    text = text.replace("EnvironmentFile=/etc", "EnvironmentFile=-/etc")
    out = folder / name
    out.write_text(text)
    return out


@pytest.mark.parametrize("unit, instance", [("bedside.service", "bedside.service"),
                                            ("bedside-ui@.service", "bedside-ui@tty2.service")])
@needs_analyze
def test_units_verify_and_are_hardened(tmp_path, unit, instance):
    path = checkable_copy(UNITS / unit, tmp_path, instance)
    verify = subprocess.run([ANALYZE, "verify", str(path)], capture_output=True, text=True, cwd=tmp_path)
    problems = [line for line in (verify.stdout + verify.stderr).splitlines() if instance in line]
    assert verify.returncode == 0 and not problems, verify.stdout + verify.stderr
    security = subprocess.run([ANALYZE, "security", "--offline=true", str(path)], capture_output=True, text=True,
                              cwd=tmp_path)
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", security.stdout)
    assert m, security.stdout + security.stderr
    assert float(m.group(1)) <= 2.0, security.stdout


@pytest.mark.parametrize("unit", ["bedside.service", "bedside-ui@.service"])
def test_units_carry_what_the_issue_requires(unit):
    d = directives(UNITS / unit)
    for key, value in [("Type", "notify"), ("Restart", "on-failure"), ("ProtectSystem", "strict"),
                       ("NoNewPrivileges", "yes"), ("DevicePolicy", "closed"), ("PrivateNetwork", "yes"),
                       ("StateDirectory", "bedside"), ("CacheDirectory", "bedside")]:
        assert d.get(key) == [value], key
    assert "dialout" in d["SupplementaryGroups"][0]
    assert {"char-ttyACM rw", "char-ttyUSB rw"} <= set(d["DeviceAllow"])
    assert d["WatchdogSec"] and d["StartLimitBurst"] and d["StartLimitIntervalSec"] and d["RestartSec"]
    assert d["ExecStart"][0].split()[:2] == ["/opt/bedside/venv/bin/bedside", "monitor"]


def test_ui_unit_runs_on_a_console_tty():
    d = directives(UNITS / "bedside-ui@.service")
    assert d["TTYPath"] == ["/dev/%I"] and d["StandardInput"] == ["tty"] and d["TTYReset"] == ["yes"]
    assert "getty@%i.service" in d["Conflicts"][0] and "bedside.service" in d["Conflicts"][0]
    assert d["ExecStart"][0].endswith("monitor --ui")


@pytest.fixture
def notify_socket(tmp_path):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = tmp_path / "notify"
    sock.bind(str(path))
    sock.settimeout(2.0)
    yield str(path), sock
    sock.close()


def received(sock: socket.socket) -> list[str]:
    out = []
    sock.settimeout(0.05)
    try:
        while True:
            out.append(sock.recv(4096).decode())
    except (socket.timeout, BlockingIOError):
        return out


def test_notifier_speaks_sd_notify_and_rate_limits_watchdog(notify_socket):
    path, sock = notify_socket
    now = [100.0]
    n = Notifier(path, watchdog_usec=10_000_000, clock=lambda: now[0])
    assert n.ready("up") and received(sock) == ["READY=1\nSTATUS=up"]
    assert n.ping() and not n.ping()  # WATCHDOG=1 at most every half interval (5 s)
    now[0] += 5.0
    assert n.ping()
    assert received(sock) == ["WATCHDOG=1", "WATCHDOG=1"]
    n.stopping()
    assert received(sock) == ["STOPPING=1"]


def test_abstract_socket_and_environment(tmp_path):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0bedside-test-notify")
    n = Notifier.from_env({"NOTIFY_SOCKET": "@bedside-test-notify", "WATCHDOG_USEC": "4000000"})
    assert n.interval_s == 2.0 and n.status("ok")
    assert received(sock) == ["STATUS=ok"]
    sock.close()
    other = Notifier.from_env({"NOTIFY_SOCKET": "@x", "WATCHDOG_USEC": "4000000", "WATCHDOG_PID": "1"})
    assert other.interval_s is None  # the watchdog is meant for another process
    silent = Notifier.from_env({})
    assert not silent.enabled and not silent.ready() and not silent.ping()


def test_the_processing_loop_pings_the_watchdog(tmp_path, notify_socket):
    path, sock = notify_socket
    source = FeedSource(500.0)
    engine = Engine(source, Store(tmp_path / "w.db"), load_alarm_config(), EngineSettings(bed_id="b", poll_s=0.01),
                    notifier=Notifier(path, watchdog_usec=20_000))
    x = synthetic_ecg(20, 500.0)
    for a in range(0, x.shape[1], 500):
        source.put_block(a, x[:, a:a + 500])
    source.end()
    engine.run()
    messages = received(sock)
    assert messages[0].startswith("READY=1") and messages[-1] == "STOPPING=1"
    assert "WATCHDOG=1" in messages


def test_a_reader_that_stops_reading_never_blocks_the_loop(notify_socket):
    path, sock = notify_socket
    n = Notifier(path, watchdog_usec=2)  # ping every microsecond
    t = __import__("time").perf_counter()
    sent = sum(n.status(f"s{i}") for i in range(200))  # the queue (10-512 datagrams) fills up
    assert __import__("time").perf_counter() - t < 2.0 and sent < 200 and n.failures == 200 - sent
