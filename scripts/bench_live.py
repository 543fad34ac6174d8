"""Live monitoring from the device simulator: CPU share and resident memory of `bedside monitor`.

Two phases, each a `devices simulate --pty` stream read by a `bedside monitor` subprocess whose
/proc/PID/stat and /proc/PID/status are sampled every second:

1. real time (speed 1) for ``--realtime-s`` seconds: CPU share of one core (goal < 5 %) and RSS
   (goal < 250 MB with the paper-size INT8 bundle);
2. accelerated: ``--hours`` of signal at ``--speed`` x real time: RSS over the run (flat = no leak),
   with the least-squares slope of RSS against signal hours.

Baseline, measured in the same run: an idle `python -c "import bedside.engine, onnxruntime"` process's
RSS (the libraries alone), so the engine's own memory is the difference.

    .venv/bin/python scripts/bench_live.py [--model PATH|paper|linear] [--realtime-s 120] [--hours 24] [--speed 200]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from cpu_flags import cpu_line  # noqa: E402  (scripts/cpu_flags.py)
TICK = os.sysconf("SC_CLK_TCK")
#: Seconds after the monitor's start that are not counted: imports, the bundle's verification (golden
#: inference), the session's first calls and the first windows (about 8-15 s on the 2-core VM)
WARM_S = 20.0


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024


def start_simulator(speed: float, duration_s: float) -> tuple[subprocess.Popen, str]:
    sim = subprocess.Popen([sys.executable, "-m", "devices", "simulate", "--protocol", "ads1298", "--synthetic",
                            "--pty", "--speed", str(speed), "--duration", str(duration_s)],
                           cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    return sim, sim.stdout.readline().strip()


def run_phase(model: Path, speed: float, signal_s: float, db: Path) -> dict:
    """Stream ``signal_s`` seconds at ``speed``; sample the monitor's CPU and RSS every second."""
    wall_s = signal_s / speed
    sim, port = start_simulator(speed, signal_s + 30 * speed)
    mon = subprocess.Popen([sys.executable, "-m", "bedside.cli", "monitor", "--port", port, "--protocol", "ads1298",
                            "--model", str(model), "--db", str(db), "--duration", str(wall_s + 8), "--no-audio", "-q",
                            "--allow-unsigned"],  # the benchmark bundles are unsigned (development)
                           cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    samples = []  # (wall s since start, cpu s, rss MB)
    t0 = time.monotonic()
    warm = None
    while mon.poll() is None:
        time.sleep(1.0)
        try:
            now, cpu, rss = time.monotonic() - t0, cpu_seconds(mon.pid), rss_mb(mon.pid)
        except (FileNotFoundError, StopIteration, ProcessLookupError):
            break
        samples.append((now, cpu, rss))
        if warm is None and now > WARM_S:  # start-up (imports, bundle verification, first windows) done
            warm = len(samples) - 1
    out = mon.communicate()[0]
    sim.terminate()
    sim.wait(10)
    s = np.array(samples[warm:-1] if warm is not None else samples)
    cpu_share = (s[-1, 1] - s[0, 1]) / (s[-1, 0] - s[0, 0])
    hours = (s[:, 0] - s[0, 0]) * speed / 3600
    slope = float(np.polyfit(hours, s[:, 2], 1)[0]) if len(s) > 2 else float("nan")
    tail = [line for line in out.splitlines() if "s of signal in" in line or "analysed" in line or "scored" in line]
    return dict(cpu_share=cpu_share, rss_start=s[0, 2], rss_end=s[-1, 2], rss_max=s[:, 2].max(), slope_mb_per_h=slope,
                wall_s=s[-1, 0] - s[0, 0], monitor=tail)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="paper-int8",
                        help="bundle path, 'paper-int8' (bench_replay's INT8 variant, the CPU bundle), 'paper' or 'linear'")
    parser.add_argument("--realtime-s", type=float, default=120.0)
    parser.add_argument("--hours", type=float, default=24.0)
    parser.add_argument("--speed", type=float, default=200.0)
    args = parser.parse_args()
    print(cpu_line(), flush=True)
    from bench_replay import resolve_model

    model = resolve_model(args.model)
    idle = subprocess.Popen([sys.executable, "-c", "import bedside.engine, bedside.cli, bedside.qrs, onnxruntime, "
                             "devices.driver, time; time.sleep(30)"], cwd=REPO)
    time.sleep(20)
    idle_rss = rss_mb(idle.pid)
    idle.kill()
    with tempfile.TemporaryDirectory() as tmp:
        rt = run_phase(model, 1.0, args.realtime_s, Path(tmp) / "rt.db")
        fast = run_phase(model, args.speed, args.hours * 3600, Path(tmp) / "fast.db")
    print(f"model {model.name}; baseline: the libraries alone (idle import) RSS {idle_rss:.0f} MB")
    print(f"real time, {rt['wall_s']:.0f} s: CPU {100 * rt['cpu_share']:.1f} % of one core (goal < 5 %), "
          f"RSS {rt['rss_end']:.0f} MB, max {rt['rss_max']:.0f} MB (goal < 250 MB; "
          f"{rt['rss_max'] - idle_rss:.0f} MB above the idle libraries)")
    print(f"accelerated {args.hours:g} h at {args.speed:g}x ({fast['wall_s']:.0f} s): RSS {fast['rss_start']:.0f} MB "
          f"-> {fast['rss_end']:.0f} MB (max {fast['rss_max']:.0f}), slope {fast['slope_mb_per_h']:+.2f} MB per "
          f"signal hour; CPU {100 * fast['cpu_share']:.0f} % of one core")
    for line in rt["monitor"] + fast["monitor"]:
        print("  monitor:", line.strip())


if __name__ == "__main__":
    main()
