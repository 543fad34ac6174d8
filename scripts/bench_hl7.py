"""Cost of HL7 on the bed: encoding, the outbox in Store.commit, and the sender's delivery rate.

Baselines measured in the same run:
- ``Store.commit`` of one window (and a transition every 10th) without the outbox, then with it;
- raw MLLP round trips (pre-framed messages, one connection, wait for each ACK, no SQLite), then the
  Sender draining an outbox of the same messages to the same local ACK server (asyncio, answers AA).
Also the receiving side: CPU per message of every way the central could read a message (hl7apy strict,
hl7apy tolerant without groups, hl7apy segment by segment, python-hl7's bare ``hl7.parse``,
bedside.hl7.parsing (python-hl7 plus our checks), the hand-written ER7 reader it replaced (loaded from git
commit ``HAND_READER_COMMIT``, skipped when git or the commit is missing), and a bare str.split as the
floor), interleaved in one run.

    .venv/bin/python scripts/bench_hl7.py [--windows 600] [--messages 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import hl7

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bedside.events import AlarmChange, AlarmKind, AlarmState, Priority, WindowResult  # noqa: E402
from bedside.hl7 import messages, mllp  # noqa: E402
from bedside.hl7.outbox import Outbox  # noqa: E402
from bedside.hl7.sender import Sender, SenderSettings  # noqa: E402
from bedside.store import Store  # noqa: E402
from scripts.cpu_flags import cpu_line  # noqa: E402

LABELS = ("edema", "pleural_effusion", "cardiomegaly")
#: Last commit whose bedside/hl7/parsing.py split ER7 by hand (before python-hl7): the baseline.
HAND_READER_COMMIT = "a9dbefd"


def window(i: int) -> WindowResult:
    return WindowResult(t_s=10.0 + 5 * i, index=i, scored=True, reason="",
                        scores={k: 0.3 for k in LABELS}, smoothed={k: 0.3 for k in LABELS}, hr_bpm=72.0,
                        quality={k: 0.9 for k in ("I", "II", "V1", "V2", "V3", "V4", "V5", "V6")})


def change(seq: int) -> AlarmChange:
    return AlarmChange(t_s=10.0 + seq, wall_time=time.time(), alarm="edema", kind=AlarmKind.PHYSIOLOGICAL,
                       priority=Priority.MEDIUM, state=AlarmState.ACTIVE if seq % 2 else AlarmState.CLEARED,
                       previous=None, message="Edema risk 0.71 > 0.50", score=0.71, threshold=0.5, seq=seq)


def run_commits(folder: Path, windows: int, thresholds: dict[str, float]) -> tuple[list[float], list[float]]:
    """Commit times (s) without and with the outbox, interleaved window by window (same load, same disk)."""
    stores = [Store(folder / "base.db"), Store(folder / "hl7.db", outbox=Outbox(
        thresholds=thresholds, validated={k: True for k in LABELS}))]
    sids = [s.open_session(bed_id="bench", source_kind="live", device="bench", fs_hz=500.0, bundle_sha256=None,
                           bundle_version=None, provider=None, hop_s=5.0, config_sha256="x", resume_key=None,
                           engine_version="bench", wall_time=time.time()) for s in stores]
    times: tuple[list[float], list[float]] = ([], [])
    for i in range(windows):
        changes = [(i, change(i // 10 + 1))] if i % 10 == 9 else []
        for k, (store, sid) in enumerate(zip(stores, sids)):
            t = time.perf_counter()
            store.commit(sid, [window(i)], time.time(), changes, [])
            times[k].append(time.perf_counter() - t)
    for store in stores:
        store.close()
    return times


class AckServer:
    """asyncio MLLP server answering AA to everything (the fastest possible central)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.count = 0
        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        self.port = asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)

    async def _start(self) -> int:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def _handle(self, reader, writer) -> None:
        while (text := await mllp.read_message(reader)) is not None:
            self.count += 1
            await mllp.write_message(writer, messages.ack(text, "AA"))
        writer.close()


def raw_round_trips(port: int, texts: list[str]) -> float:
    sock = socket.create_connection(("127.0.0.1", port))
    decoder = mllp.MllpDecoder()
    t = time.perf_counter()
    for text in texts:
        sock.sendall(mllp.frame(text))
        while not decoder.feed(sock.recv(65536)):
            pass
    elapsed = time.perf_counter() - t
    sock.close()
    return elapsed


def parse_options() -> dict[str, object]:
    """Ways the central could read a message, each to what it needs (the fields of the report)."""
    from hl7apy.consts import VALIDATION_LEVEL
    from hl7apy.parser import parse_message, parse_segments

    def tolerant(text: str) -> object:  # hl7apy without groups or strict checks, then the OBX values
        msg = parse_message(text, validation_level=VALIDATION_LEVEL.TOLERANT, find_groups=False)
        return [c.obx_5.to_er7() for c in msg.children if c.name == "OBX"]

    def segments(text: str) -> object:  # hl7apy segment by segment, no message structure
        return [s.obx_5.to_er7() for s in parse_segments(text, version=messages.VERSION,
                                                         validation_level=VALIDATION_LEVEL.TOLERANT) if s.name == "OBX"]

    options: dict[str, object] = {
        "hl7apy strict: parse + validate + read (parse(strict=True))": lambda t: messages.parse(t, strict=True),
        "hl7apy tolerant, find_groups=False (OBX values only)": tolerant,
        "hl7apy parse_segments, tolerant (OBX values only)": segments,
        "bedside.hl7.parsing: python-hl7 + checks + report (parse())": messages.parse,
        "python-hl7 hl7.parse (containers only, no checks)": hl7.parse,
        "floor: str.split of segments and fields only": lambda t: [x.split("|") for x in t.split("\r")],
    }
    hand = hand_reader()
    if hand is not None:
        options[f"hand-written ER7 reader of {HAND_READER_COMMIT}: split + checks + report"] = hand
    return options


def hand_reader() -> object | None:
    """``parse_report`` of the hand-written reader (git show HAND_READER_COMMIT), or None without git."""
    try:
        source = subprocess.run(["git", "show", f"{HAND_READER_COMMIT}:bedside/hl7/parsing.py"], cwd=REPO,
                                capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        print(f"(no hand-reader baseline: git show {HAND_READER_COMMIT} failed: {exc})")
        return None
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(source)
    spec = importlib.util.spec_from_file_location("hand_parsing", f.name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    os.unlink(f.name)
    return module.parse_report


def receiving_side(texts: list[str], rounds: int) -> None:
    """CPU time per message of each option, interleaved: every round runs every option on the same messages."""
    options = parse_options()
    cpu: dict[str, list[float]] = {k: [] for k in options}
    for _ in range(rounds):
        for name, fn in options.items():
            reps = 1 if name.startswith("hl7apy") else 50
            t = time.process_time()
            for _ in range(reps):
                for text in texts:
                    fn(text)
            cpu[name].append((time.process_time() - t) / (reps * len(texts)))
    strict = statistics.median(cpu[next(iter(options))])
    print(f"receiving side, CPU per message (median of {rounds} interleaved rounds, {len(texts)} messages, "
          "observations and alarms):")
    for name, values in cpu.items():
        m = statistics.median(values)
        print(f"  {name}: {m * 1e3:.3f} ms (strict / this: {strict / m:.{1 if strict / m < 10 else 0}f}x)")
    ours = statistics.median(cpu["bedside.hl7.parsing: python-hl7 + checks + report (parse())"])
    hand = [v for k, v in cpu.items() if k.startswith("hand-written")]
    if hand:
        ratio = ours / statistics.median(hand[0])
        print(f"  bedside.hl7.parsing on python-hl7 / the hand reader: {ratio:.1f}x the CPU; "
              f"one core reads {1 / ours:.0f} msg/s (32 beds send about 6.4 msg/s)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--windows", type=int, default=600)
    ap.add_argument("--messages", type=int, default=2000)
    ap.add_argument("--parse-rounds", type=int, default=3, help="interleaved rounds of the receiving-side options")
    args = ap.parse_args()
    print(cpu_line())
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    thresholds = {k: 0.5 for k in LABELS}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        # encoding
        outbox = Outbox(thresholds=thresholds, validated={k: k != "cardiomegaly" for k in LABELS})
        store = Store(folder / "enc.db", outbox=outbox)
        sid = store.open_session(bed_id="bench", source_kind="live", device="bench", fs_hz=500.0, bundle_sha256=None,
                                 bundle_version=None, provider=None, hop_s=5.0, config_sha256="x", resume_key=None,
                                 engine_version="bench", wall_time=time.time())
        store.commit(sid, [window(i) for i in range(50)], time.time(), [(i, change(i + 1)) for i in range(50)], [])
        texts = [r[0] for r in store.db.execute("select message from hl7_outbox order by id")]
        store.close()
        envs = [messages.parse(t) for t in texts]
        obs = [e for e in envs if e.report.__class__.__name__ == "ObservationReport"]
        alarms = [e for e in envs if e.report.__class__.__name__ == "AlarmReport"]
        for name, group in (("PCD-01 observation", obs), ("PCD-04 alarm", alarms)):
            t = time.perf_counter()
            for _ in range(20):
                for e in group:
                    messages.build(e)
            build_us = (time.perf_counter() - t) / (20 * len(group)) * 1e6
            size = statistics.mean(len(messages.build(e).encode()) for e in group)
            print(f"{name}: build {build_us:.0f} us, {size:.0f} bytes")
        receiving_side(texts[:40], args.parse_rounds)
        # Store.commit with and without the outbox
        base, with_hl7 = run_commits(folder, args.windows, thresholds)
        b, h = statistics.median(base) * 1e3, statistics.median(with_hl7) * 1e3
        print(f"Store.commit of one window (+ a transition every 10th), interleaved, median of {args.windows}: "
              f"{b:.2f} ms without the outbox, {h:.2f} ms with it ({h / b:.2f}x); "
              f"p99 {statistics.quantiles(base, n=100)[98] * 1e3:.2f} / {statistics.quantiles(with_hl7, n=100)[98] * 1e3:.2f} ms")
        # delivery
        server = AckServer()
        fill = Outbox(thresholds=thresholds, validated={k: True for k in LABELS})
        store = Store(folder / "send.db", outbox=fill)
        sid = store.open_session(bed_id="bench", source_kind="live", device="bench", fs_hz=500.0, bundle_sha256=None,
                                 bundle_version=None, provider=None, hop_s=5.0, config_sha256="x", resume_key=None,
                                 engine_version="bench", wall_time=time.time())
        for start in range(0, args.messages, 100):
            store.commit(sid, [window(i) for i in range(start, min(start + 100, args.messages))], time.time(), [], [])
        store.close()
        texts = [r[0] for r in sqlite3.connect(folder / "send.db").execute("select message from hl7_outbox order by id")]
        raw_s = raw_round_trips(server.port, texts)
        sender = Sender(folder / "send.db", "bench", SenderSettings(host="127.0.0.1", port=server.port))
        t = time.perf_counter()
        sender.start()
        while sender.delivered < len(texts):
            time.sleep(0.005)
        send_s = time.perf_counter() - t
        sender.stop()
        print(f"delivery of {len(texts)} observation messages to a local asyncio ACK server: raw MLLP round trips "
              f"{len(texts) / raw_s:.0f} msg/s, Sender (outbox read, send, ACK, delete) {len(texts) / send_s:.0f} msg/s "
              f"({send_s / raw_s:.1f}x the raw time)")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
