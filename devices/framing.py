"""What every wire protocol shares: frame batches, parse incidents, 24-bit samples, the parser loop.

A protocol's parser subclasses :class:`FrameParser` and implements ``_scan``; the loop here keeps
the byte buffer across reads, counts every byte (``bytes_received == frames * frame_size +
bytes_skipped + pending``) and turns skipped runs into ``garbage``/``resync``/``crc_error``
incidents placed between the frames where they happened. Parsers do no I/O and never raise on
any input.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

#: Operations a scan reports, in stream order.
FRAMES, SKIP, CRC = "frames", "skip", "crc"


@dataclass(frozen=True)
class FrameBatch:
    """Frames parsed from one read, in stream order (all arrays share their first dimension n)."""

    counters: np.ndarray  # [n] int64 sequence number as carried on the wire (before unwrapping)
    counts: np.ndarray  # [n, channels] int32 raw ADC codes
    offsets: np.ndarray  # [n] int64 stream offset of each frame's first byte since the port opened
    status: np.ndarray | None = None  # [n] int64 24-bit ADS status word, None when not carried
    timestamps: np.ndarray | None = None  # [n] int64 device clock in µs (wraps), None when not carried
    carried: int = 0  # the first `carried` frames were complete before this read (held back to decide)

    def __len__(self) -> int:
        return int(self.counters.shape[0])

    @staticmethod
    def empty(channels: int = 8, with_status: bool = False) -> FrameBatch:
        z = np.zeros(0, np.int64)
        return FrameBatch(z, np.zeros((0, channels), np.int32), z,
                          z if with_status else None, z if with_status else None)


@dataclass(frozen=True)
class Incident:
    """A parse event placed before frame ``before`` of its batch (``before == len(batch)``: after all)."""

    kind: str  # "garbage", "resync" or "crc_error"
    before: int
    length: int | None = None  # garbage: bytes skipped
    detail: str = ""


@dataclass(frozen=True)
class Parsed:
    frames: FrameBatch
    incidents: list[Incident] = field(default_factory=list)


def be_fields(buf: bytes, start: int, count: int, stride: int, offset: int, width: int,
              n_fields: int = 1, field_stride: int = 0) -> np.ndarray:
    """[count, n_fields] int64 big-endian unsigned fields of ``width`` (2..4) bytes, without copying
    the frames: each field is read as the 4-byte word that ends with its last byte, then masked.

    Frames start at ``start`` every ``stride`` bytes; field j of a frame sits at ``offset + j *
    field_stride``. The 4-byte word may begin before the field (inside the same frame).
    """
    first = start + offset + width - 4
    words = np.ndarray((count, n_fields), dtype=">u4", buffer=buf, offset=first, strides=(stride, field_stride))
    v = words.astype(np.int64)
    if width < 4:
        v &= (1 << (8 * width)) - 1
    return v


def signed24(v: np.ndarray) -> np.ndarray:
    """24-bit two's complement held in the low bits of an int64 array -> int32."""
    return ((v ^ 0x800000) - 0x800000).astype(np.int32)


def encode_be24(values: np.ndarray) -> np.ndarray:
    """[n, k] integers in [-2**23, 2**23) -> [n, 3k] uint8 big-endian two's complement."""
    v = np.asarray(values, dtype=np.int64) & 0xFFFFFF
    out = np.stack([(v >> 16) & 0xFF, (v >> 8) & 0xFF, v & 0xFF], axis=-1).astype(np.uint8)
    return out.reshape(v.shape[0], -1)


def encode_be_uint(values: np.ndarray, width: int) -> np.ndarray:
    """[n] non-negative integers -> [n, width] uint8 big-endian (taken modulo 2**(8*width))."""
    v = np.asarray(values, dtype=np.uint64)
    cols = [((v >> np.uint64(8 * (width - 1 - i))) & np.uint64(0xFF)).astype(np.uint8) for i in range(width)]
    return np.stack(cols, axis=-1)


def counts_to_mv(counts: np.ndarray, mv_per_count: float) -> np.ndarray:
    """ADC codes -> float32 millivolts; the one conversion used by drivers and the simulator alike."""
    return (np.asarray(counts) * float(mv_per_count)).astype(np.float32, order="C")  # float64 product


def mv_to_counts(mv: np.ndarray, mv_per_count: float) -> np.ndarray:
    """Millivolts -> int32 ADC codes, rounded and clipped to the 24-bit range (as an ADC saturates)."""
    codes = np.rint(np.asarray(mv, dtype=np.float64) / mv_per_count)
    return np.clip(codes, -(1 << 23), (1 << 23) - 1).astype(np.int32)


class FrameParser:
    """Bytes in, frames out; keeps partial frames between reads. Subclasses implement ``_scan``."""

    frame_size: int = 0
    channels: int = 8

    def __init__(self) -> None:
        self._buf = b""
        self._base = 0  # stream offset of self._buf[0]
        self._locked = False  # the last thing seen was a valid frame
        self._skip_run = 0  # bytes skipped since the last valid frame
        self._had_lock = False  # lock was held before the current skip run
        self.bytes_received = 0
        self.bytes_skipped = 0
        self.frames = 0
        self.crc_errors = 0
        self.resyncs = 0

    @property
    def pending(self) -> int:
        """Bytes held back (an incomplete frame, or bytes needed to decide)."""
        return len(self._buf)

    def feed(self, data: bytes | bytearray | memoryview) -> Parsed:
        """Parse newly received bytes; never raises."""
        if not isinstance(data, bytes):
            data = bytes(data)
        self.bytes_received += len(data)
        return self._run(self._buf + data if self._buf else data, final=False, old_len=len(self._buf))

    def flush(self) -> Parsed:
        """End of stream (port closed): decide held bytes, report trailing garbage."""
        return self._run(self._buf, final=True, old_len=len(self._buf))

    # -- subclass interface -------------------------------------------------------------------
    def _scan(self, buf: bytes, final: bool) -> tuple[list[tuple], int]:
        """Return (ops, consumed): ops in stream order, each (FRAMES, start, count), (SKIP, n) or
        (CRC, n) (a frame with a good sync and a bad CRC, skipped); consumed = bytes decided."""
        raise NotImplementedError

    def _decode(self, buf: bytes, start: int, count: int, base: int) -> FrameBatch:
        """Decode ``count`` contiguous frames starting at ``buf[start]``; ``buf[0]`` is stream offset ``base``."""
        raise NotImplementedError

    # -- shared loop ----------------------------------------------------------------------------
    def _run(self, buf: bytes, final: bool, old_len: int) -> Parsed:
        ops, consumed = self._scan(buf, final)
        if final:
            leftover = len(buf) - consumed
            if leftover:
                ops.append((SKIP, leftover))
            consumed = len(buf)
        incidents: list[Incident] = []
        runs: list[FrameBatch] = []
        n = carried = 0
        for op in ops:
            if op[0] == FRAMES:
                _, start, count = op
                carried += min(count, max(0, (old_len - start) // self.frame_size))
                if self._skip_run:
                    self._close_skip_run(incidents, n, found=True)
                runs.append(self._decode(buf, start, count, self._base))
                n += count
                self._locked = True
            else:
                if self._locked:
                    self._had_lock, self._locked = True, False
                self._skip_run += op[1]
                self.bytes_skipped += op[1]
                if op[0] == CRC:
                    self.crc_errors += 1
                    incidents.append(Incident("crc_error", n, None,
                                              "frame sync found but its CRC-32 does not match"))
        if final and self._skip_run:
            self._close_skip_run(incidents, n, found=False)
        if len(runs) == 1:
            batch = runs[0]
        elif runs:
            cat = np.concatenate
            st = None if runs[0].status is None else cat([r.status for r in runs])
            ts = None if runs[0].timestamps is None else cat([r.timestamps for r in runs])
            batch = FrameBatch(cat([r.counters for r in runs]), cat([r.counts for r in runs]),
                               cat([r.offsets for r in runs]), st, ts)
        else:
            batch = FrameBatch.empty(self.channels, self._carries_status())
        if carried:
            batch = replace(batch, carried=carried)
        self.frames += n
        self._buf = buf[consumed:]
        self._base += consumed
        return Parsed(batch, incidents)

    def _carries_status(self) -> bool:
        return False

    def _close_skip_run(self, incidents: list[Incident], before: int, found: bool) -> None:
        tail = "before the next valid frame" if found else "at the end of the stream"
        incidents.append(Incident("garbage", before, self._skip_run, f"{self._skip_run} bytes skipped {tail}"))
        if found and self._had_lock:
            self.resyncs += 1
            incidents.append(Incident("resync", before, self._skip_run,
                                      f"frame sync lost and found again after {self._skip_run} bytes"))
        self._skip_run = 0
        self._had_lock = False
