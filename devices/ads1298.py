"""The ADS1298 12-lead frame (this project's protocol; specified in docs/protocol-ads1298.md).

One frame per sample, 43 bytes, every multi-byte field big-endian (the byte order the ADS1298
itself uses on SPI, so firmware copies the 27 bytes it reads verbatim)::

    0  sync        4  AA 55 EC 98
    4  sequence    4  uint32, +1 per sample, wraps at 2**32
    8  timestamp   4  uint32, device clock in microseconds, wraps at 2**32
    12 status      3  ADS1298 status word: 1100 | LOFF_STATP[7:0] | LOFF_STATN[7:0] | GPIO[4:1]
    15 channels   24  CH1..CH8, 24-bit two's complement
    39 crc32       4  CRC-32/ISO-HDLC (zlib.crc32) of bytes 0..38

Channels (default wiring): CH1 = I (IN1P=LA, IN1N=RA), CH2 = II (IN2P=LL, IN2N=RA), CH3..CH8 =
V1..V6 (INxP = the chest electrode, INxN = Wilson central terminal). 500 Hz x 43 B x 10 bits =
215 kbit/s: 460800 baud (47% busy); 230400 would be 93% busy, too close to the limit.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Sequence

import numpy as np

from devices.framing import CRC, FRAMES, SKIP, FrameBatch, FrameParser, be_fields, encode_be24, \
    encode_be_uint, signed24
from devices.types import ELECTRODES

SYNC = bytes([0xAA, 0x55, 0xEC, 0x98])
FRAME_SIZE = 43
CRC_SPAN = 39  # bytes 0..38 are covered by the CRC
FS_HZ = 500.0
BAUDRATE = 460800
VREF_V = 2.4
GAINS = (1, 2, 3, 4, 6, 8, 12)
DEFAULT_GAIN = 6
STATUS_PREFIX = 0xC00000  # the status word's fixed top nibble 1100
BANNER = b"ADS1298-ECG protocol 1 firmware sim-0.1\n"
SEQ_MODULUS = 1 << 32

#: Which electrode sits on the positive and negative input of a channel measuring each lead
#: (None: the Wilson central terminal, or a lead no single channel measures).
LEAD_INPUTS: dict[str, tuple[str | None, str | None]] = {
    "I": ("LA", "RA"), "II": ("LL", "RA"), "III": ("LL", "LA"),
    "aVR": (None, None), "aVL": (None, None), "aVF": (None, None),
    **{f"V{k}": (f"V{k}", None) for k in range(1, 7)},
}

__all__ = ["Ads1298Parser", "encode_frames", "mv_per_count", "lead_off_masks", "electrode_states",
           "status_words", "SYNC", "FRAME_SIZE", "FS_HZ", "BAUDRATE"]


def mv_per_count(gain: int = DEFAULT_GAIN) -> float:
    """Millivolts per ADC code at a PGA gain (ADS1298 datasheet: LSB = VREF / gain / 2**23)."""
    return VREF_V * 1000.0 / gain / (1 << 23)


def lead_off_masks(leads: Sequence[str]) -> dict[str, int | None]:
    """Electrode -> status-word bits that report it off, for channels CH1.. measuring ``leads``.

    LOFF_STATP bit i (status bit 12 + i) is the positive input of CH(i+1), LOFF_STATN bit i
    (status bit 4 + i) its negative input. An electrode on no channel input maps to None.
    """
    masks: dict[str, int] = {}
    for i, lead in enumerate(leads):
        pos, neg = LEAD_INPUTS.get(lead, (None, None))
        if pos is not None:
            masks[pos] = masks.get(pos, 0) | (1 << (12 + i))
        if neg is not None:
            masks[neg] = masks.get(neg, 0) | (1 << (4 + i))
    return {e: masks.get(e) for e in ELECTRODES}


def electrode_states(status: int, masks: dict[str, int | None]) -> dict[str, bool | None]:
    """Electrode -> True (off), False (on), None (not reported) for one status word."""
    return {e: (None if m is None else bool(status & m)) for e, m in masks.items()}


def status_words(off: Iterable[str], leads: Sequence[str], n: int = 1) -> np.ndarray:
    """[n] status words with the lead-off bits of the electrodes in ``off`` set (simulator side)."""
    word = STATUS_PREFIX
    masks = lead_off_masks(leads)
    for e in off:
        word |= masks.get(e) or 0
    return np.full(n, word, np.int64)


def encode_frames(seq: np.ndarray, counts: np.ndarray, status: np.ndarray | None = None,
                  timestamps_us: np.ndarray | None = None) -> np.ndarray:
    """Frames for samples: seq [n], counts [n, 8], status [n], timestamps [n] µs -> [n, 43] uint8."""
    n = counts.shape[0]
    seq = np.asarray(seq, dtype=np.int64)
    if status is None:
        status = np.full(n, STATUS_PREFIX, np.int64)
    if timestamps_us is None:
        timestamps_us = np.rint(seq * (1e6 / FS_HZ)).astype(np.int64)
    out = np.zeros((n, FRAME_SIZE), np.uint8)
    out[:, 0:4] = np.frombuffer(SYNC, np.uint8)
    out[:, 4:8] = encode_be_uint(seq % SEQ_MODULUS, 4)
    out[:, 8:12] = encode_be_uint(np.asarray(timestamps_us, dtype=np.int64) % SEQ_MODULUS, 4)
    out[:, 12:15] = encode_be_uint(np.asarray(status, dtype=np.int64) & 0xFFFFFF, 3)
    out[:, 15:39] = encode_be24(counts)
    crc = np.fromiter((zlib.crc32(row[:CRC_SPAN].tobytes()) for row in out), dtype=np.int64, count=n)
    out[:, 39:43] = encode_be_uint(crc, 4)
    return out


class Ads1298Parser(FrameParser):
    """Parses the ADS1298 frame stream: sync word, then CRC-32 decides; resyncs by scanning."""

    frame_size = FRAME_SIZE

    def _carries_status(self) -> bool:
        return True

    def _decode(self, buf: bytes, start: int, count: int, base: int) -> FrameBatch:
        F = FRAME_SIZE
        head = be_fields(buf, start, count, F, 4, 4, 2, 4)  # sequence, timestamp
        words = be_fields(buf, start, count, F, 12, 3, 9, 3)  # status word, CH1..CH8
        return FrameBatch(head[:, 0], signed24(words[:, 1:]), np.arange(base + start, base + start + count * F, F),
                          words[:, 0], head[:, 1])

    def _scan(self, buf: bytes, final: bool) -> tuple[list[tuple], int]:
        F, L = FRAME_SIZE, len(buf)
        mv = memoryview(buf)
        crc32 = zlib.crc32
        ops: list[tuple] = []
        pos = 0
        while pos < L:
            # fast path: consecutive frames with a sync and a matching CRC
            k = 0
            s = pos
            while s + F <= L and buf.startswith(SYNC, s) \
                    and crc32(mv[s: s + CRC_SPAN]) == int.from_bytes(mv[s + CRC_SPAN: s + F], "big"):
                k += 1
                s += F
            if k:
                ops.append((FRAMES, pos, k))
                pos = s
                continue
            if not buf.startswith(SYNC, pos):
                if not final and L - pos < len(SYNC) and SYNC.startswith(buf[pos:]):
                    break  # a partial sync word at the end: wait for the rest
                q = buf.find(SYNC, pos + 1)
                if q == -1:  # keep the last bytes: they may begin a sync word
                    q = L if final else max(pos + 1, L - (len(SYNC) - 1))
                ops.append((SKIP, q - pos))
                pos = q
                continue
            if pos + F > L:
                if final:
                    ops.append((SKIP, L - pos))
                    pos = L
                break
            # sync present, CRC wrong: a corrupted frame (or a sync pattern inside garbage)
            q = buf.find(SYNC, pos + 1)
            q = q if q != -1 else (L if final else max(pos + 1, L - (len(SYNC) - 1)))
            ops.append((CRC, q - pos))
            pos = q
        return ops, pos
