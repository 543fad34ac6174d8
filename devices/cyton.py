"""OpenBCI Cyton (ADS1299, 8 channels, 250 Hz): 33-byte packets, no CRC, a 1-byte sample counter.

Packet: ``0xA0``, sample counter (0..255), 8 x 24-bit big-endian two's-complement channel codes,
6 aux bytes, stop byte ``0xC0``..``0xC6``. Streaming starts with ``b`` and stops with ``s``; ``v``
resets the board, which prints a text banner. No lead-off bits travel in the stream.

Framing without a CRC: a packet is accepted when its header and stop byte are right and it is
followed by another header, or by the end of the bytes read so far when no 0xA0 inside it could
begin an overlapping packet (else it waits for the next byte). When something other than a
header follows, the packet is rejected only if a well-formed packet overlaps it (the usual case
of a truncated packet followed by a good one). A burst of garbage can still contain a
well-formed packet, and a bit error inside the samples cannot be detected: the sequencer's
counter checks catch corrupted counters, nothing catches corrupted samples.
"""

from __future__ import annotations

import numpy as np

from devices.framing import FRAMES, SKIP, FrameBatch, FrameParser, be_fields, encode_be24, signed24

HEADER = 0xA0
STOP_DEFAULT = 0xC0  # stop byte of a standard packet (aux bytes hold accelerometer data)
FRAME_SIZE = 33
FS_HZ = 250.0
BAUDRATE = 115200
VREF_V = 4.5
GAINS = (1, 2, 4, 6, 8, 12, 24)
DEFAULT_GAIN = 24  # the board's power-up gain
BANNER = (b"OpenBCI V3 8-16 channel\nOn Board ADS1299 Device ID: 0x3E\n"
          b"LIS3DH Device ID: 0x33\nFirmware: v3.1.2\n$$$")
_HDR = bytes([HEADER])

__all__ = ["CytonParser", "encode_frames", "mv_per_count", "FRAME_SIZE", "FS_HZ", "BAUDRATE"]


def mv_per_count(gain: int = DEFAULT_GAIN) -> float:
    """Millivolts per ADC code at a PGA gain (OpenBCI's scale factor 4.5 V / gain / (2**23 - 1))."""
    return VREF_V * 1000.0 / gain / (2 ** 23 - 1)


def encode_frames(counters: np.ndarray, counts: np.ndarray, stop_byte: int = STOP_DEFAULT) -> np.ndarray:
    """Packets for samples: counters [n] (taken mod 256), counts [n, 8] int -> [n, 33] uint8."""
    n = counts.shape[0]
    out = np.zeros((n, FRAME_SIZE), np.uint8)
    out[:, 0] = HEADER
    out[:, 1] = np.asarray(counters, dtype=np.int64) & 0xFF
    out[:, 2:26] = encode_be24(counts)
    out[:, 32] = stop_byte
    return out


def _stop_ok(b: int) -> bool:
    return 0xC0 <= b <= 0xC6


class CytonParser(FrameParser):
    """Parses the Cyton byte stream into frames; see the module docstring for the framing rule."""

    frame_size = FRAME_SIZE

    def _decode(self, buf: bytes, start: int, count: int, base: int) -> FrameBatch:
        counters = np.ndarray((count,), np.uint8, buf, start + 1, (FRAME_SIZE,)).astype(np.int64)
        counts = signed24(be_fields(buf, start, count, FRAME_SIZE, 2, 3, 8, 3))
        return FrameBatch(counters, counts, np.arange(base + start, base + start + count * FRAME_SIZE, FRAME_SIZE))

    def _scan(self, buf: bytes, final: bool) -> tuple[list[tuple], int]:
        F, L = FRAME_SIZE, len(buf)
        arr = np.frombuffer(buf, np.uint8)
        ops: list[tuple] = []
        pos = 0
        while pos < L:
            n = (L - pos) // F
            if n >= 2:
                rows = arr[pos: pos + n * F].reshape(n, F)
                stop = rows[:, F - 1]
                ok = (rows[:, 0] == HEADER) & (stop >= 0xC0) & (stop <= 0xC6)
                bad = np.flatnonzero(~ok)
                k = int(bad[0]) if bad.size else n
                end = pos + k * F
                if k and end < L and buf[end] == HEADER:
                    accept = k
                else:
                    accept = max(k - 1, 0)  # the last one is decided below (nothing or no header follows)
                if accept:
                    ops.append((FRAMES, pos, accept))
                    pos += accept * F
                    continue
            verdict, nxt = self._decide(buf, pos, L, final)
            if verdict == "wait":
                break
            if verdict == "accept":
                ops.append((FRAMES, pos, 1))
                pos += F
            else:
                ops.append((SKIP, nxt - pos))
                pos = nxt
        return ops, pos

    @staticmethod
    def _decide(buf: bytes, p: int, L: int, final: bool) -> tuple[str, int]:
        """Verdict for a possible packet at p: ("accept", _), ("skip", next position) or ("wait", _)."""
        F = FRAME_SIZE
        if buf[p] != HEADER:
            q = buf.find(_HDR, p + 1)
            return "skip", (q if q != -1 else L)
        if p + F > L:
            return ("skip", L) if final else ("wait", p)
        if not _stop_ok(buf[p + F - 1]):
            q = buf.find(_HDR, p + 1)
            return "skip", (q if q != -1 else L)
        if p + F == L:  # nothing follows yet: wait if an overlapping packet could still complete
            return ("accept", p) if final or buf.find(_HDR, p + 1, p + F) == -1 else ("wait", p)
        if buf[p + F] == HEADER:
            return "accept", p
        # Well formed but not followed by a header: prefer an overlapping well-formed packet.
        undecided = False
        q = buf.find(_HDR, p + 1, p + F)
        while q != -1:
            if q + F > L:
                undecided = undecided or not final
            elif _stop_ok(buf[q + F - 1]):
                return "skip", q
            q = buf.find(_HDR, q + 1, p + F)
        return ("wait", p) if undecided else ("accept", p)
