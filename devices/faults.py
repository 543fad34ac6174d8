"""Fault injection for the simulator: a spec string, parsed once, decided per frame.

A spec is comma-separated items. Times are stream time: the board's clock since its first frame,
written with a unit (``2s``, ``1500ms``); at ``--speed 10`` ``20s`` comes 2 s after the start.

===================  ==========================================================================
``drop=P``           each frame is lost with probability P (0 <= P < 1)
``flip=P``           each frame, with probability P, has one random bit inverted
``cut=P``            each frame, with probability P, is truncated: only its first k bytes are
                     sent (1 <= k < frame size), as when a board resets mid-frame
``garbage=N@T``      N random bytes are sent before the frame due at time T (repeatable)
``leadoff=E@T+D``    electrode E (RA LA LL V1..V6) is off from T for D (repeatable): its lead-off
                     bits are set (ADS1298; Cyton has none) and every channel with E on an input
                     reads positive full scale, as a detached electrode drives its amplifier to
                     the rail (the chest leads' Wilson terminal is not modelled)
``disconnect=T+D``   the port vanishes at T and comes back after D (repeatable): a pty is closed
                     and a new one opened (a ``--link`` follows it, as /dev/serial/by-id does), a
                     TCP server closes and listens again. The board keeps sampling: frames due
                     meanwhile are lost, and after the host's start command the stream resumes
                     with the tail of a frame, as when a port is opened mid-frame
``drift=Xppm``       the board's clock runs X ppm fast (negative: slow) against the host's
``seed=N``           random seed (default 0): a spec and a seed always give the same faults
===================  ==========================================================================

Example: ``drop=0.01,flip=0.001,garbage=5@2s,leadoff=V3@10s+5s,disconnect=20s+3s,drift=50ppm,seed=1``
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from devices.errors import DeviceError
from devices.types import ELECTRODES

SPEC_HELP = ("comma-separated: drop=P, flip=P, cut=P (per-frame probabilities), garbage=N@T (N bytes at "
             "time T), leadoff=E@T+D (electrode E off from T for D), disconnect=T+D, drift=Xppm, seed=N; "
             "times in stream seconds with a unit (2s, 500ms). Example: "
             "drop=0.01,flip=0.001,garbage=5@2s,leadoff=V3@10s+5s,disconnect=20s+3s,drift=50ppm,seed=1")

#: The spec as ``devices simulate --help`` shows it (one item a line).
SPEC_LINES = """Fault spec (--faults): comma-separated items; T and D are stream times with a unit (2s, 500ms)
  drop=P            each frame lost with probability P
  flip=P            each frame, with probability P, gets one bit inverted
  cut=P             each frame, with probability P, is truncated
  garbage=N@T       N random bytes before the frame due at T (repeatable)
  leadoff=E@T+D     electrode E (RA LA LL V1..V6) off from T for D (repeatable)
  disconnect=T+D    the port vanishes at T, returns after D (repeatable)
  drift=Xppm        the board's clock X ppm fast (negative: slow)
  seed=N            random seed (default 0)
Example: drop=0.01,flip=0.001,garbage=5@2s,leadoff=V3@10s+5s,disconnect=20s+3s,drift=50ppm,seed=1"""

_TIME = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*(ms|s)\s*$")
_BLOCK = 4096  # frames per block of random draws


@dataclass(frozen=True)
class FaultSpec:
    """Parsed faults (times in stream seconds)."""

    drop: float = 0.0
    flip: float = 0.0
    cut: float = 0.0
    garbage: tuple[tuple[int, float], ...] = ()  # (bytes, time)
    leadoff: tuple[tuple[str, float, float], ...] = ()  # (electrode, start, duration)
    disconnect: tuple[tuple[float, float], ...] = ()  # (start, duration)
    drift_ppm: float = 0.0
    seed: int = 0

    @property
    def is_clean(self) -> bool:
        return self == FaultSpec(seed=self.seed)


def _time(text: str, item: str) -> float:
    m = _TIME.match(text)
    if not m:
        raise DeviceError(f"fault {item!r}: {text!r} is not a time; write a number with a unit, e.g. 2s or 500ms")
    return float(m.group(1)) * (1e-3 if m.group(2) == "ms" else 1.0)


def _span(text: str, item: str) -> tuple[float, float]:
    if "+" not in text:
        raise DeviceError(f"fault {item!r}: write START+DURATION, e.g. 20s+3s")
    a, b = text.split("+", 1)
    start, dur = _time(a, item), _time(b, item)
    if dur <= 0:
        raise DeviceError(f"fault {item!r}: the duration must be positive")
    return start, dur


def _probability(text: str, item: str) -> float:
    try:
        p = float(text)
    except ValueError:
        raise DeviceError(f"fault {item!r}: {text!r} is not a probability (a number in [0, 1))") from None
    if not 0.0 <= p < 1.0:
        raise DeviceError(f"fault {item!r}: probability {p} is outside [0, 1)")
    return p


def parse_faults(spec: str | None) -> FaultSpec:
    """Parse a fault spec (see the module docstring); DeviceError names the bad item and the fix."""
    if not spec or not spec.strip():
        return FaultSpec()
    values: dict = {"garbage": [], "leadoff": [], "disconnect": []}
    for raw in spec.split(","):
        item = raw.strip()
        if not item:
            continue
        key, sep, val = item.partition("=")
        key, val = key.strip().lower(), val.strip()
        if not sep or not val:
            raise DeviceError(f"fault {item!r}: write KEY=VALUE; {SPEC_HELP}")
        if key in ("drop", "flip", "cut"):
            values[key] = _probability(val, item)
        elif key == "garbage":
            n, at, t = val.partition("@")
            if not at or not n.strip().isdigit() or int(n) <= 0:
                raise DeviceError(f"fault {item!r}: write garbage=BYTES@TIME, e.g. garbage=5@2s")
            values["garbage"].append((int(n), _time(t, item)))
        elif key == "leadoff":
            e, at, span = val.partition("@")
            electrode = e.strip().upper()
            if electrode not in ELECTRODES:
                raise DeviceError(f"fault {item!r}: electrode {e!r} is not one of {', '.join(ELECTRODES)}")
            if not at:
                raise DeviceError(f"fault {item!r}: write leadoff=ELECTRODE@START+DURATION, e.g. leadoff=V3@10s+5s")
            values["leadoff"].append((electrode, *_span(span, item)))
        elif key == "disconnect":
            values["disconnect"].append(_span(val, item))
        elif key == "drift":
            m = re.match(r"^([+-]?[0-9]*\.?[0-9]+)\s*ppm$", val)
            if not m:
                raise DeviceError(f"fault {item!r}: write drift=Xppm, e.g. drift=50ppm or drift=-20ppm")
            values["drift_ppm"] = float(m.group(1))
        elif key == "seed":
            if not val.isdigit():
                raise DeviceError(f"fault {item!r}: the seed is a non-negative integer")
            values["seed"] = int(val)
        else:
            raise DeviceError(f"unknown fault {key!r} in {item!r}; {SPEC_HELP}")
    values["disconnect"].sort()
    return FaultSpec(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


@dataclass
class FrameFaults:
    """Per-frame decisions for frames [start, stop)."""

    drop: np.ndarray  # bool
    flip_byte: np.ndarray  # int, -1: no flip
    flip_bit: np.ndarray
    cut_len: np.ndarray  # int, 0: not cut


@dataclass
class FaultPlan:
    """A :class:`FaultSpec` laid on a board's timeline (sample indices at fs_hz)."""

    spec: FaultSpec
    fs_hz: float
    frame_size: int
    _cache: dict[int, tuple[np.ndarray, ...]] = field(default_factory=dict, repr=False)

    def index(self, t_s: float) -> int:
        return int(round(t_s * self.fs_hz))

    def _draws(self, block: int) -> tuple[np.ndarray, ...]:
        got = self._cache.get(block)
        if got is None:
            rng = np.random.default_rng([self.spec.seed, block])
            F = self.frame_size
            got = (rng.random(_BLOCK), rng.random(_BLOCK), rng.integers(0, F, _BLOCK), rng.integers(0, 8, _BLOCK),
                   rng.random(_BLOCK), rng.integers(1, F, _BLOCK))
            if len(self._cache) > 8:
                self._cache.clear()
            self._cache[block] = got
        return got

    def frame_faults(self, start: int, stop: int) -> FrameFaults:
        """Drop/flip/cut decisions for frames [start, stop); the same frame always gets the same."""
        parts = []
        for block in range(start // _BLOCK, (stop - 1) // _BLOCK + 1 if stop > start else start // _BLOCK):
            a, b = max(start, block * _BLOCK) - block * _BLOCK, min(stop, (block + 1) * _BLOCK) - block * _BLOCK
            parts.append(tuple(d[a:b] for d in self._draws(block)))
        if not parts:
            z = np.zeros(0, np.int64)
            return FrameFaults(np.zeros(0, bool), z, z, z)
        u_drop, u_flip, fbyte, fbit, u_cut, clen = (np.concatenate(c) for c in zip(*parts))
        s = self.spec
        flip = u_flip < s.flip
        cut = u_cut < s.cut
        return FrameFaults(u_drop < s.drop, np.where(flip, fbyte, -1), fbit, np.where(cut, clen, 0))

    def garbage_before(self, start: int, stop: int) -> list[tuple[int, bytes]]:
        """(frame index, bytes) of garbage bursts due before frames in [start, stop)."""
        out = []
        for k, (n, t) in enumerate(self.spec.garbage):
            i = self.index(t)
            if start <= i < stop:
                out.append((i, np.random.default_rng([self.spec.seed, 1 << 20, k]).bytes(n)))
        return out

    def electrodes_off(self, start: int, stop: int) -> list[tuple[str, int, int]]:
        """(electrode, first index, stop index) of lead-off episodes overlapping [start, stop)."""
        out = []
        for e, t, d in self.spec.leadoff:
            a, b = self.index(t), self.index(t + d)
            if a < stop and b > start:
                out.append((e, a, b))
        return out

    def disconnect_windows(self) -> list[tuple[int, int]]:
        """[first index, stop index) of each disconnect, in order."""
        return [(self.index(t), self.index(t + d)) for t, d in self.spec.disconnect]
