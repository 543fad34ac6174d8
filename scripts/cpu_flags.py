"""The CPU a benchmark ran on, read from /proc/cpuinfo: model name and the SIMD flags that decide INT8 speed.

Every ``scripts/bench_*.py`` prints :func:`cpu_line` first, so that a number is never recorded against
the wrong CPU again. The flags that matter for onnxruntime's INT8 kernels:

- ``avx512_vnni`` (AVX-512 VNNI) and ``avx_vnni`` (AVX-VNNI, 256-bit): one-instruction u8 x s8 dot
  products on x86; without either, u8s8 GEMMs go through vpmaddubsw and can saturate;
- ``amx_int8`` (Intel AMX, Sapphire Rapids and later): tile matrix multiply, several times VNNI;
- ``asimddp`` (Arm dot product, SDOT/UDOT): the ARM INT8 path (s8s8 preferred there).

    python scripts/cpu_flags.py
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

#: The flags printed (present or absent), in this order.
FLAGS = ("avx512_vnni", "amx_int8", "avx_vnni", "asimddp")


def cpu_info(path: Path = Path("/proc/cpuinfo")) -> tuple[str, set[str]]:
    """(model name, set of flags) of the first processor in ``path``; ("unknown", set()) when unreadable."""
    try:
        text = path.read_text()
    except OSError:
        return platform.processor() or "unknown", set()
    model, flags = "unknown", set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "cpu model") and model == "unknown":
            model = value.strip()
        elif key in ("flags", "features") and not flags:  # x86 "flags", ARM "Features"
            flags = set(value.split())
    return model, flags


def cpu_line(path: Path = Path("/proc/cpuinfo")) -> str:
    """One line: model, CPUs usable by this process, each of :data:`FLAGS` as yes/no, and the load average."""
    model, flags = cpu_info(path)
    marks = ", ".join(f"{f} {'yes' if f in flags else 'no'}" for f in FLAGS)
    load = os.getloadavg()
    return (f"CPU: {model} ({platform.machine()}), {len(os.sched_getaffinity(0))} usable cores; {marks}; "
            f"load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}")


if __name__ == "__main__":
    print(cpu_line())
