"""Benchmarks of the device layer: parse throughput, CPU share while streaming, byte-to-block latency,
and a fault-injection run (frames sent, received, reported lost).

Run from the repository root: ``.venv/bin/python scripts/bench_devices.py [--seconds 10]``.
Every number is printed with its goal and its ratio to a baseline measured in the same run (the
real-time byte rate of the protocol, one core, the 50 ms latency budget). Prints Markdown.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from devices.driver import COALESCE_S, Driver  # noqa: E402
from devices.groundtruth import Received, compare  # noqa: E402
from devices.protocols import PROTOCOLS, get_protocol  # noqa: E402
from devices.simulator import Board, Simulator, encode_stream  # noqa: E402
from devices.sources import record_signal, synthetic_signal  # noqa: E402
from devices.types import SampleBlock  # noqa: E402

try:
    from rich.progress import Progress
except ImportError:  # rich is a dev tool here; plain output without it
    Progress = None  # type: ignore[assignment,misc]

#: Read sizes: one frame per read (worst case), what the driver reads at real time (a burst every
#: COALESCE_S), and larger backlogs.
CHUNKS = {"1 frame": None, f"{COALESCE_S * 1e3:g} ms of data": "coalesced", "512 B": 512, "4 KiB": 4096,
          "64 KiB": 65536}
FAULTS = "drop=0.01,flip=0.001,cut=0.001,garbage=200@5s,garbage=200@20s,leadoff=V3@10s+5s,seed=1"
E2E_FAULTS = ("drop=0.01,flip=0.002,cut=0.002,garbage=37@3s,garbage=500@11s,leadoff=V3@5s+4s,"
              "disconnect=20s+3s,seed=5")
E2E_SPEED = {"cyton": 4.0, "ads1298": 10.0}  # Cyton's 1-byte counter needs host timing within half a wrap
RECORD = Path(__file__).resolve().parents[2] / "shared" / "data" / "records" / "s0010_re"


def parse_throughput(protocol: str, chunk: int | str | None, faults: str | None, seconds: float = 60.0,
                     repeat: int = 3) -> float:
    """MB/s of bytes -> parser -> sequencer -> SampleBlocks, fed in ``chunk``-byte reads (best of ``repeat``)."""
    spec = get_protocol(protocol)
    stream = encode_stream(protocol, synthetic_signal(spec.fs_hz, spec.default_leads, seconds), faults)
    data = stream.data
    size = {None: spec.frame_size, "coalesced": spec.frame_size * max(1, round(COALESCE_S * spec.fs_hz))}.get(
        chunk, chunk)
    pieces = [data[i:i + size] for i in range(0, len(data), size)]
    best = float("inf")
    for _ in range(repeat):
        parser, seq = spec.make_parser(), spec.make_sequencer(spec.default_leads)
        t = time.perf_counter()
        host = 0.0
        for piece in pieces:
            host += len(piece) / spec.byte_rate
            seq.push(parser.feed(piece), host)
        seq.push(parser.flush(), host, final=True)
        best = min(best, time.perf_counter() - t)
    return len(data) / best / 1e6


def thread_cpu_s(thread: threading.Thread) -> float:
    return time.clock_gettime(time.pthread_getcpuclockid(thread.ident))


def stream_realtime(protocol: str, seconds: float) -> dict[str, float]:
    """Simulator (own thread, real time) -> pty -> Driver; CPU of the reader thread, latencies."""
    spec = get_protocol(protocol)
    board = Board(spec, synthetic_signal(spec.fs_hz, spec.default_leads, seconds + 2.0))
    sim = Simulator(board, transport="pty", speed=1.0)
    sim.record_write_times = True
    arrivals: list[tuple[int, int, float]] = []

    def on_block(block: SampleBlock) -> None:
        arrivals.append((block.first_index, block.stop_index, time.perf_counter()))

    address = sim.start()
    drv = Driver(address, protocol, on_block=on_block, on_event=lambda e: None)
    drv.start()
    time.sleep(1.0)  # settle
    reader = drv._reader
    cpu0, sim0, wall0, proc0 = thread_cpu_s(reader), thread_cpu_s(sim._thread), time.perf_counter(), time.process_time()
    frames0 = drv.counters.frames_received
    time.sleep(seconds)
    cpu1, sim1, wall1, proc1 = thread_cpu_s(reader), thread_cpu_s(sim._thread), time.perf_counter(), time.process_time()
    frames1 = drv.counters.frames_received
    drv.stop()
    sim.stop()
    writes = np.array(sim.write_times)  # (frames written so far, time) after each write

    def written_at(i: int) -> float:
        return writes[np.searchsorted(writes[:, 0], i, side="right"), 1]  # the write that carried frame i

    first = np.array([(t - written_at(a)) * 1e3 for a, b, t in arrivals if b <= writes[-1, 0]])
    last = np.array([(t - written_at(b - 1)) * 1e3 for a, b, t in arrivals if b <= writes[-1, 0]])
    wall = wall1 - wall0
    return {"reader_cpu_pct": 100 * (cpu1 - cpu0) / wall, "sim_cpu_pct": 100 * (sim1 - sim0) / wall,
            "process_cpu_pct": 100 * (proc1 - proc0) / wall, "frames_per_s": (frames1 - frames0) / wall,
            "blocks": len(first), "writes_per_s": len(writes) / (seconds + 1.0),
            **{f"{name}_{q}": float(np.percentile(v, p)) for name, v in (("first", first), ("last", last))
               for q, p in (("p50", 50), ("p95", 95), ("p99", 99), ("max", 100))}}


def stream_fast(protocol: str, speed: float, seconds: float) -> dict[str, float]:
    """Simulator at ``speed`` x real time over a pty: frames per second the Driver delivers."""
    spec = get_protocol(protocol)
    board = Board(spec, synthetic_signal(spec.fs_hz, spec.default_leads, 60.0), n_frames=10**9)
    sim = Simulator(board, transport="pty", speed=speed, keep_status=False)
    drv = Driver(sim.start(), protocol, on_block=lambda b: None, on_event=lambda e: None)
    drv.start()
    time.sleep(1.0)
    f0, t0 = drv.counters.frames_received, time.perf_counter()
    time.sleep(seconds)
    f1, t1 = drv.counters.frames_received, time.perf_counter()
    sim.stop()  # first, so that it does not write into a port nobody reads
    c = drv.counters
    drv.stop()
    rate = (f1 - f0) / (t1 - t0)
    return {"frames_per_s": rate, "x_real_time": rate / spec.fs_hz, "MB_per_s": rate * spec.frame_size / 1e6,
            "lost": c.frames_lost, "overrun": sim.report()["overrun"]}


def fault_injection(protocol: str, link: str) -> dict[str, object]:
    """The record (or 40 s of synthetic ECG) over a pty with faults; what was sent vs delivered."""
    spec = get_protocol(protocol)
    leads = spec.default_leads
    sig = (record_signal(RECORD, spec.fs_hz, leads) if RECORD.with_suffix(".hea").exists()
           else synthetic_signal(spec.fs_hz, leads, 40.0))
    board = Board(spec, sig, E2E_FAULTS)
    sim = Simulator(board, transport="pty", link=link, speed=E2E_SPEED[protocol])
    got = Received()
    address = sim.start()
    drv = Driver(address, protocol, on_block=got.on_block, on_event=got.on_event, backoff_s=(0.05, 0.4))
    drv.start()
    sim.wait(120)
    got.wait_for(lambda r: len(r.kinds("disconnect")) >= 2, 10)
    drv.stop()
    sim.stop()
    cmp = compare(sim.status, board.truth_mv(0, board.n_frames), got)
    c = drv.counters
    return {"source": sig.name, "speed": E2E_SPEED[protocol], **cmp.row(), "invented": int(cmp.invented.size),
            "unaccounted": int(cmp.unaccounted.size), "crc_errors": len(got.kinds("crc_error")),
            "rejected": c.frames_corrupt - len(got.kinds("crc_error")), "resyncs": c.resyncs,
            "skipped_B": c.bytes_skipped, "reconnects": c.reconnects, "total": int(board.n_frames)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=10.0, help="real-time streaming time per protocol")
    args = ap.parse_args()
    print(f"# devices benchmark: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}, numpy {np.__version__}; load average at start "
          f"{os.getloadavg()[0]:.1f} (other programs share these CPUs: every time below is inflated by them)")
    rows = []
    jobs = [(p, c, f) for p in PROTOCOLS for c in CHUNKS for f in (None, FAULTS)]
    if Progress is not None:
        with Progress(transient=True) as bar:
            task = bar.add_task("parse throughput", total=len(jobs))
            for p, c, f in jobs:
                rows.append((p, c, f, parse_throughput(p, CHUNKS[c], f)))
                bar.advance(task)
    else:
        rows = [(p, c, f, parse_throughput(p, CHUNKS[c], f)) for p, c, f in jobs]
    print("\n## Parse throughput (bytes -> parser -> sequencer -> SampleBlock), goal >= 100x real time\n")
    print("| protocol | real-time rate | read size | faults | MB/s | x real time |")
    print("|---|---|---|---|---|---|")
    for p, c, f, mbs in rows:
        rt = get_protocol(p).byte_rate
        print(f"| {p} | {rt / 1e3:.2f} kB/s | {c} | {'yes' if f else 'no'} | {mbs:.2f} | {mbs * 1e6 / rt:,.0f}x |")
    print(f"\nFaults: `{FAULTS}`")
    print(f"\n## Streaming in real time over a pty for {args.seconds:g} s "
          "(simulator in a thread of the same process)\n")
    print("| protocol | frames/s | reader thread CPU (goal < 5%) | simulator thread CPU | process CPU | "
          "writes/s | blocks | latency, first sample of a block: p50 / p95 / p99 / max (goal < 50 ms) | "
          "latency, last sample of a block: p50 / p95 / p99 / max |")
    print("|---|---|---|---|---|---|---|---|---|")
    for p in PROTOCOLS:
        r = stream_realtime(p, args.seconds)
        q = lambda name: " / ".join(f"{r[f'{name}_{k}']:.1f}" for k in ("p50", "p95", "p99", "max"))  # noqa: E731
        print(f"| {p} | {r['frames_per_s']:.1f} | {r['reader_cpu_pct']:.2f}% | {r['sim_cpu_pct']:.2f}% | "
              f"{r['process_cpu_pct']:.2f}% | {r['writes_per_s']:.0f} | {r['blocks']} | {q('first')} ms | "
              f"{q('last')} ms |")
    print(f"\nThe reader waits {COALESCE_S * 1e3:g} ms after the first byte of a burst before reading it all "
          "(as a USB serial adapter's latency timer does), which bounds wake-ups and adds that much latency.")
    print("\n## Fast streams through a pty (5 s; nothing is lost, so any frames lost are misjudged gaps)\n")
    print("| protocol | speed asked | delivered frames/s | x real time | MB/s | frames lost | simulator overruns |")
    print("|---|---|---|---|---|---|---|")
    for p, speed in (("cyton", 20.0), ("cyton", 200.0), ("ads1298", 200.0)):
        r = stream_fast(p, speed, 5.0)
        print(f"| {p} | {speed:g}x | {r['frames_per_s']:,.0f} | {r['x_real_time']:.0f}x | {r['MB_per_s']:.2f} | "
              f"{r['lost']} | {r['overrun']} |")
    print(f"\n## Fault injection over a pty (faults `{E2E_FAULTS}`)\n")
    print("| protocol | source | speed | frames in stream | sent intact | sent damaged | dropped | not sent "
          "(port gone, before restart) | delivered | reported lost | delivered but wrong | intact but not "
          "delivered | invented | unaccounted | CRC errors | rejected packets | resyncs | bytes skipped | reconnects |")
    print("|" + "---|" * 19)
    for p in PROTOCOLS:
        with tempfile.TemporaryDirectory() as tmp:
            r = fault_injection(p, f"{tmp}/by-id-link")
        print(f"| {p} | {r['source']} | {r['speed']:g}x | {r['total']} | {r['sent_clean']} | {r['sent_damaged']} | "
              f"{r['dropped']} | {r['not_sent']} | {r['received']} | {r['reported_lost']} | {r['mismatched']} | "
              f"{r['clean_missing']} | {r['invented']} | {r['unaccounted']} | {r['crc_errors']} | {r['rejected']} | "
              f"{r['resyncs']} | {r['skipped_B']} | {r['reconnects']} |")


if __name__ == "__main__":
    main()
    print(f"\nLoad average at the end: {os.getloadavg()[0]:.1f}")
