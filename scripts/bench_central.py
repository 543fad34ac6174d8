"""Load and faults on the central station: 32 beds against one `bedside central` (on this machine's cores).

Phase 1, load (baseline in the same run): 1 bed, then ``--beds`` beds, each a lightweight MLLP client
that sends its pre-built messages (one alarm per ten observations, built by bedside.hl7.messages) one at
a time and waits for each ACK, as the bed's sender does. Prints messages/s stored, ACK latency p50/p99
(send -> AA read), the central's CPU (user+system seconds per second) and peak RSS (/proc). Then steady
state: the same beds paced at one message per second each and per 0.1 s each (5x and 50x a ward's rate
of one window per 5 s), ACK latency p50/p99/max.

Phase 2, faults: ``--beds`` bed logs written by bedside.store.Store with the HL7 outbox
(bedside.hl7.outbox.Outbox builds every message), delivered by the HL7 helper's Sender threads; the
central is killed with SIGKILL when about half has been accepted, and restarted on the same port and
database. At the end every alarm transition and window of every bed must be in central.db exactly once,
in the bed's order.

    .venv/bin/python scripts/bench_central.py [--beds 32] [--messages 200] [--fault-windows 60]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bedside.hl7 import messages, mllp  # noqa: E402
from bedside.hl7.model import AlarmReport, Envelope, ObservationReport  # noqa: E402

FLAGS = ("avx512_vnni", "amx_int8", "avx_vnni", "asimddp")
LABELS = ("edema", "pleural_effusion", "cardiomegaly")
TICK = os.sysconf("SC_CLK_TCK")


def cpu_line() -> str:
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return f"CPU: {platform.machine()}"
    model = next((ln.split(":", 1)[1].strip() for ln in info.splitlines() if ln.startswith("model name")), "?")
    flags = set(next((ln.split(":", 1)[1].split() for ln in info.splitlines() if ln.startswith(("flags", "Features"))), []))
    return f"CPU: {model}, {os.cpu_count()} cores; " + " ".join(f"{f}={'yes' if f in flags else 'no'}" for f in FLAGS)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Central:
    """`bedside central` in a subprocess; CPU and RSS sampled from /proc."""

    def __init__(self, db: Path, beds: list[str], port: int, extra: tuple[str, ...] = ()):
        self.args = [sys.executable, "-m", "bedside.cli", "central", "--listen", f"127.0.0.1:{port}", "--db", str(db),
                     "--silent", "3600", *[a for b in beds for a in ("--bed", b)], *extra]
        self.port = port
        self.proc: subprocess.Popen | None = None
        self.peak_rss_kb = 0

    def start(self) -> "Central":
        self.proc = subprocess.Popen(self.args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1"})
        line = self.proc.stdout.readline()
        if not line.startswith("listening on"):
            raise SystemExit(f"central did not start: {line}{self.proc.stderr.read()}")
        return self

    def pids(self) -> list[int]:
        """The central and its child processes (if any)."""
        out = [self.proc.pid]
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == self.proc.pid:
                    out.append(int(stat.parent.name))
            except (OSError, ValueError, IndexError):
                pass
        return out

    def cpu_s(self) -> float:
        """User + system CPU seconds of the central (and any children) so far."""
        total = 0.0
        for pid in self.pids():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += (int(fields[11]) + int(fields[12])) / TICK
            except OSError:
                pass
        return total

    def sample_rss(self) -> None:
        rss = 0
        for pid in self.pids():
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        rss += int(line.split()[1])
            except OSError:
                pass
        self.peak_rss_kb = max(self.peak_rss_kb, rss)

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> str:
        self.proc.send_signal(signal.SIGTERM)
        _, err = self.proc.communicate(timeout=30)
        return next((ln for ln in err.splitlines() if ln.startswith("stopped:")), "")


# -- phase 1: load ------------------------------------------------------------------------------------

def bed_messages(bed: str, n: int) -> list[str]:
    """``n`` ER7 messages of one bed: an alarm transition after every ten observations."""
    out, seq, t0 = [], 0, time.time()
    for i in range(n):
        if i % 11 == 10:
            seq += 1
            report = AlarmReport(bed_id=bed, session_id=1, seq=seq, alarm="edema", kind="physiological",
                                 priority="high", state="active" if seq % 2 else "cleared",
                                 previous=None if seq % 2 else "active", cause="condition", text="Edema risk 0.71 > 0.55",
                                 t_s=5.0 * i, wall_time=t0 + i, score=0.71, threshold=0.55)
        else:
            report = ObservationReport(bed_id=bed, session_id=1, window_index=i, t_s=5.0 * i, wall_time=t0 + i,
                                       scored=True, reason="", hr_bpm=72.0, sqi_min=0.93,
                                       risks={k: 0.3 for k in LABELS}, thresholds={k: 0.5 for k in LABELS},
                                       validated={k: True for k in LABELS})
        out.append(messages.build(Envelope(control_id=messages.new_control_id(), bed_seq=i + 1, report=report)))
    return out


async def one_bed(port: int, texts: list[str], latencies: list[float], interval_s: float = 0.0) -> None:
    """Send ``texts`` one at a time, each after the previous ACK; ``interval_s`` > 0: one every interval_s
    seconds (paced from a random phase, as independent beds are), else as fast as the ACKs come."""
    import random

    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    next_at = time.perf_counter() + random.uniform(0, interval_s)
    try:
        for text in texts:
            if interval_s > 0:
                await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
                next_at += interval_s
            t = time.perf_counter()
            await mllp.write_message(writer, text)
            reply = await mllp.read_message(reader)
            latencies.append(time.perf_counter() - t)
            if reply is None or messages.read_ack(reply)[1] != "AA":
                raise SystemExit(f"not accepted: {reply!r}")
    finally:
        writer.close()


def load(n_beds: int, n_messages: int, tmp: Path, extra: tuple[str, ...] = (), interval_s: float = 0.0) -> dict[str, float]:
    beds = [f"bed-{i:02d}" for i in range(1, n_beds + 1)]
    texts = {b: bed_messages(b, n_messages) for b in beds}
    central = Central(tmp / f"load{n_beds}{'-'.join(extra)}.db", beds, free_port(), extra).start()
    latencies: list[float] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.2):
            central.sample_rss()

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    cpu0, t0 = central.cpu_s(), time.perf_counter()

    async def run() -> None:
        await asyncio.gather(*(one_bed(central.port, texts[b], latencies, interval_s) for b in beds))

    asyncio.run(run())
    wall = time.perf_counter() - t0
    cpu = central.cpu_s() - cpu0
    stop.set()
    central.sample_rss()
    central.stop()
    lat = sorted(latencies)
    return {"beds": n_beds, "messages": len(lat), "wall_s": wall, "msg_per_s": len(lat) / wall,
            "p50_ms": 1000 * statistics.median(lat), "p99_ms": 1000 * lat[min(len(lat) - 1, int(0.99 * len(lat)))],
            "max_ms": 1000 * lat[-1],
            "cpu_per_s": cpu / wall, "rss_mb": central.peak_rss_kb / 1024}


# -- phase 2: kill -9 the central ---------------------------------------------------------------------

def bed_log(path: Path, bed: str, n_windows: int) -> None:
    """A bed's log written as the engine does (Store.commit with the HL7 outbox): windows and transitions."""
    from bedside.events import AlarmChange, AlarmKind, AlarmState, Priority, WindowResult
    from bedside.hl7.outbox import Outbox
    from bedside.store import Store

    thresholds = {k: 0.5 for k in LABELS}
    store = Store(path, outbox=Outbox(thresholds=thresholds, validated={k: True for k in LABELS}))
    sid = store.open_session(bed_id=bed, source_kind="replay", device="bench", fs_hz=500.0, bundle_sha256="b",
                             bundle_version="0", provider="CPU", hop_s=5.0, config_sha256="c", resume_key=None,
                             engine_version="bench", wall_time=time.time())
    seq, active = 0, False
    for i in range(n_windows):
        risk = 0.3 + 0.4 * ((i // 7) % 2)  # above the threshold for 7 windows, below for 7
        w = WindowResult(t_s=10.0 + 5 * i, index=i, scored=True, reason="", scores={k: risk for k in LABELS},
                         smoothed={k: risk for k in LABELS}, hr_bpm=70.0, quality={"II": 0.95}, lead_off={})
        changes = []
        if (risk > 0.5) != active:
            active, seq = not active, seq + 1
            changes.append((i, AlarmChange(
                t_s=w.t_s, wall_time=time.time(), alarm="edema", kind=AlarmKind.PHYSIOLOGICAL, priority=Priority.MEDIUM,
                state=AlarmState.ACTIVE if active else AlarmState.CLEARED,
                previous=None if active else AlarmState.ACTIVE, message=f"Edema risk {risk:.2f}", score=risk,
                threshold=0.5, seq=seq)))
        store.commit(sid, [w], time.time(), changes, [])
    store.close()


def faults(n_beds: int, n_windows: int, tmp: Path) -> dict[str, float]:
    from bedside.hl7.sender import Sender, SenderSettings

    beds = [f"bed-{i:02d}" for i in range(1, n_beds + 1)]
    logs = {b: tmp / f"{b}.db" for b in beds}
    for b in beds:
        bed_log(logs[b], b, n_windows)
    total = sum(sqlite3.connect(logs[b]).execute("select count(*) from hl7_outbox").fetchone()[0] for b in beds)
    db, port = tmp / "faults.db", free_port()
    central = Central(db, beds, port).start()
    senders = [Sender(logs[b], b, SenderSettings(host="127.0.0.1", port=port, backoff_s=0.1, max_backoff_s=1.0)).start()
               for b in beds]
    t0 = time.perf_counter()

    def stored() -> int:
        try:
            conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
            try:
                return conn.execute("select count(*) from messages").fetchone()[0]
            finally:
                conn.close()
        except sqlite3.Error:
            return 0

    while stored() < total // 2:
        time.sleep(0.05)
    central.kill9()
    at_kill = stored()
    time.sleep(1.0)
    central = Central(db, beds, port).start()
    while any(s._waiting() != 0 for s in senders):
        time.sleep(0.1)
    wall = time.perf_counter() - t0
    for s in senders:
        s.stop()
    counters = central.stop()
    bad = 0
    conn = sqlite3.connect(db)
    for b in beds:
        bed = sqlite3.connect(logs[b])
        want = bed.execute("select session_id, seq, state from alarm_transitions order by session_id, seq").fetchall()
        want_w = bed.execute("select session_id, idx from windows order by session_id, idx").fetchall()
        bed.close()
        got = conn.execute("select session_id, seq, state from alarm_transitions where bed_id = ? order by id",
                           [b]).fetchall()
        got_w = conn.execute("select session_id, window_index from observations where bed_id = ? order by id",
                             [b]).fetchall()
        bad += (got != want) + (got_w != want_w)
    transitions = conn.execute("select count(*) from alarm_transitions").fetchone()[0]
    conn.close()
    return {"beds": n_beds, "messages": total, "transitions": transitions, "stored_at_kill": at_kill,
            "wall_s": wall, "beds_not_exact": bad, "restarted_central": counters}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--beds", type=int, default=32)
    ap.add_argument("--messages", type=int, default=200, help="messages per bed in the load phase")
    ap.add_argument("--fault-windows", type=int, default=60, help="windows per bed log in the fault phase")
    ap.add_argument("--paced-s", type=float, default=10.0, help="seconds of each paced (steady-state) run")
    args = ap.parse_args()
    print(cpu_line())
    print(f"load average before: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}")
    tmp = Path(tempfile.mkdtemp(prefix="bench_central_"))
    try:
        base = load(1, args.messages, tmp)
        many = load(args.beds, args.messages, tmp)
        for r in (base, many):
            print(f"load {r['beds']:>2} beds: {r['messages']} messages in {r['wall_s']:.1f} s = {r['msg_per_s']:.0f} msg/s; "
                  f"ACK p50 {r['p50_ms']:.1f} ms p99 {r['p99_ms']:.1f} ms; central CPU {r['cpu_per_s']:.2f} s/s, "
                  f"peak RSS {r['rss_mb']:.0f} MB")
        print(f"ratio {args.beds} beds / 1 bed: throughput x{many['msg_per_s'] / base['msg_per_s']:.1f}, "
              f"p50 latency x{many['p50_ms'] / base['p50_ms']:.1f}")
        for interval in (1.0, 0.1):  # steady state at 5x and 50x a ward's rate (one window per 5 s per bed)
            n = max(2, int(args.paced_s / interval))
            r = load(args.beds, n, tmp, interval_s=interval)
            print(f"paced {args.beds} beds, one message per {interval:g} s each ({args.beds / interval:.0f} msg/s offered, "
                  f"{5 / interval:.0f}x a ward's rate): {r['messages']} messages; ACK p50 {r['p50_ms']:.1f} ms "
                  f"p99 {r['p99_ms']:.1f} ms max {r['max_ms']:.1f} ms; central CPU {r['cpu_per_s']:.2f} s/s")
        f = faults(args.beds, args.fault_windows, tmp)
        print(f"faults: {f['beds']} beds, {f['messages']} messages ({f['transitions']} alarm transitions) via the HL7 "
              f"Sender; central killed -9 after {f['stored_at_kill']} stored, restarted; all delivered in "
              f"{f['wall_s']:.1f} s; beds whose central.db rows differ from their log: {f['beds_not_exact']}")
        print(f"restarted central: {f['restarted_central']}")
        print(f"load average after: {os.getloadavg()[0]:.2f}")
        if f["beds_not_exact"]:
            raise SystemExit("FAILED: central.db does not hold every transition exactly once in order")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
