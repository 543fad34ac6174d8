"""``devices probe``: which protocol a port speaks, identified from its bytes, then live rates."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import serial

from devices.driver import POLL_TIMEOUT_S, resolve_url
from devices.errors import DeviceError
from devices.protocols import PROTOCOLS, ProtocolSpec


@dataclass(frozen=True)
class Identification:
    protocol: str | None  # None: nothing recognised
    scores: dict[str, int]  # protocol -> consecutive frame pairs found
    bytes_read: int
    baudrate: int


def score(spec: ProtocolSpec, data: bytes) -> int:
    """Pairs of consecutive frames (counter + 1) a protocol's parser finds in ``data``."""
    parsed = spec.make_parser().feed(data)
    c = parsed.frames.counters
    return int(np.sum(np.diff(c) % spec.counter_modulus == 1)) if len(c) > 1 else 0


def identify_bytes(data: bytes, candidates: tuple[str, ...] = tuple(PROTOCOLS), min_pairs: int = 5) -> str | None:
    """The protocol whose parser finds the most consecutive frames (at least ``min_pairs``), or None."""
    scores = {name: score(PROTOCOLS[name], data) for name in candidates}
    best = max(scores, key=scores.get)
    return best if scores[best] >= min_pairs else None


def capture(url: str, baudrate: int, seconds: float, start_command: bytes = b"b") -> bytes:
    """Open a port, send the start command, read for ``seconds``, close it."""
    try:
        port = serial.serial_for_url(resolve_url(url), baudrate=baudrate, timeout=POLL_TIMEOUT_S)
    except (serial.SerialException, OSError, ValueError) as exc:
        raise DeviceError(f"cannot open {url}: {exc}. Check the path (ls -l /dev/serial/by-id/), "
                          "that you are in the dialout group, and that no other program holds the port") from None
    try:
        if start_command:
            port.write(start_command)
        out = bytearray()
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            out += port.read(65536)
        return bytes(out)
    finally:
        port.close()


def identify(url: str, baudrate: int | None = None, seconds: float = 1.5, send_start: bool = True,
             candidates: tuple[str, ...] = tuple(PROTOCOLS)) -> Identification:
    """Listen at each candidate's baud rate (or ``baudrate``) until a protocol is recognised."""
    bauds = [baudrate] if baudrate else list(dict.fromkeys(PROTOCOLS[n].baudrate for n in candidates))
    best = Identification(None, {n: 0 for n in candidates}, 0, bauds[0])
    for baud in bauds:
        data = capture(url, baud, seconds, b"b" if send_start else b"")
        scores = {name: score(PROTOCOLS[name], data) for name in candidates}
        found = identify_bytes(data, candidates)
        result = Identification(found, scores, len(data), baud)
        if found is not None:
            return result
        if len(data) >= best.bytes_read:
            best = result
    return best
