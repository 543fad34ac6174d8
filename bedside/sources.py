"""Where the engine's samples come from: a WFDB record (replay) or a serial device (live).

Both give the engine the same things through :meth:`Source.poll`: :class:`Block` (canonical 12-lead
samples in mV at a sample index of the source's own clock) and :class:`LinkEvent` (gaps, resyncs,
disconnects ...). Nothing else differs between replay and live: the engine code after ``poll`` is
shared line for line.

- :class:`RecordSource` reads a record in chunks (a 24-hour record is never loaded whole), as fast
  as the engine takes them (``speed=None``; the next chunk is read on a helper thread meanwhile) or
  paced at ``speed`` times real time.
- :class:`DeviceSource` runs a ``devices.driver.Driver`` (serial port, pty, socket) whose callbacks
  fill a queue; the sample index is the device's sample clock, so signal time is device time.
"""

from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np

if TYPE_CHECKING:  # an annotation only: wfdb (and pandas) stay out of the live monitor's imports
    from bedside.records import EcgRecord


@dataclass(frozen=True)
class Block:
    """Contiguous samples: [12, n] float32 mV in canonical lead order, NaN where missing."""

    first_index: int  # sample index on the source's clock
    data_mv: np.ndarray
    host_time: float  # time.time() when it arrived (replay: when it was read)
    lead_off: dict[str, bool | None]  # electrode -> off / on / not reported; {} when not carried
    fs_hz: float  # sampling rate of the source's clock


@dataclass(frozen=True)
class LinkEvent:
    """Something about the link (see devices.types.EVENT_KINDS), logged as a technical event."""

    kind: str
    host_time: float
    sample_index: int | None = None
    length: int | None = None
    detail: str = ""


class Source(Protocol):
    kind: str  # "replay" or "live"
    description: str  # record name or port URL (never a patient identifier)
    realtime: bool  # samples arrive on the wall clock (link conditions apply)

    @property
    def fs_hz(self) -> float | None: ...
    @property
    def connected(self) -> bool: ...
    @property
    def frames_lost(self) -> int: ...
    def open(self) -> None: ...
    def poll(self, timeout_s: float) -> list[Block | LinkEvent] | None:
        """What arrived within ``timeout_s`` ([] if nothing); None once the source has ended."""
    def close(self) -> None: ...


class RecordSource:
    """A WFDB record in chunks from ``start_index``; paced at ``speed`` x real time, or as fast as taken."""

    kind = "replay"

    def __init__(self, record: EcgRecord, *, speed: float | None = None, chunk_s: float = 120.0,
                 block_s: float = 0.1, start_index: int = 0):
        if speed is not None and speed <= 0:
            raise ValueError(f"speed={speed} must be positive (or None for as fast as possible)")
        self.record = record
        self.description = record.path.rsplit("/", 1)[-1]  # the record name only: paths can hold identifiers
        self.speed = speed
        self.realtime = False
        self.chunk_n = max(1, int(round(chunk_s * record.fs_hz)))
        self.block_n = max(1, int(round(block_s * record.fs_hz)))
        self.start_index = start_index
        self._next = start_index
        self._t0: float | None = None
        self._pending: list[Block] = []
        self._reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bedside-read")
        self._ahead: Future[Block | None] | None = None

    @property
    def fs_hz(self) -> float:
        return self.record.fs_hz

    @property
    def connected(self) -> bool:
        return True

    @property
    def frames_lost(self) -> int:
        return 0

    def seek(self, index: int) -> None:
        """Start at sample ``index`` instead (before :meth:`open`; a resumed replay)."""
        self.start_index = self._next = index

    def open(self) -> None:
        self._t0 = time.monotonic()

    def _read(self, start: int) -> Block | None:
        if start >= self.record.n_samples:
            return None
        data = self.record.read(start, min(start + self.chunk_n, self.record.n_samples))
        return Block(start, data, time.time(), {}, self.fs_hz)

    def _read_chunk(self) -> Block | None:
        """The next chunk; as fast as taken, the one after it is read meanwhile on a helper thread."""
        if self.speed is not None:
            block = self._read(self._next)
        else:
            if self._ahead is None:
                self._ahead = self._reader.submit(self._read, self._next)
            block = self._ahead.result()
            if block is not None:
                self._ahead = self._reader.submit(self._read, self._next + self.chunk_n)
        if block is not None:
            self._next = block.first_index + block.data_mv.shape[1]
        return block

    def poll(self, timeout_s: float) -> list[Block | LinkEvent] | None:
        if self.speed is None:
            block = self._read_chunk()
            return None if block is None else [block]
        if not self._pending:
            chunk = self._read_chunk()
            if chunk is None:
                return None
            n = chunk.data_mv.shape[1]
            self._pending = [Block(chunk.first_index + a, chunk.data_mv[:, a:a + self.block_n], 0.0, {}, self.fs_hz)
                             for a in range(0, n, self.block_n)]
        block = self._pending[0]
        due = (self._t0 or 0.0) + (block.first_index + block.data_mv.shape[1] - self.start_index) / (
            self.fs_hz * self.speed)
        wait = due - time.monotonic()
        if wait > timeout_s:
            time.sleep(timeout_s)
            return []
        if wait > 0:
            time.sleep(wait)
        self._pending.pop(0)
        return [Block(block.first_index, block.data_mv, time.time(), {}, self.fs_hz)]

    def close(self) -> None:
        self._pending = []
        if self._ahead is not None:
            self._ahead.cancel()
            self._ahead = None
        self._reader.shutdown(wait=True)


class DeviceSource:
    """A serial ECG device through ``devices.driver.Driver``; its callbacks feed a queue."""

    kind = "live"

    def __init__(self, url: str, protocol: str, *, baudrate: int | None = None,
                 lead_map: tuple[str, ...] | None = None, reconnect: bool = True, stable_port: bool = False):
        """``stable_port``: ``url`` is a udev symlink only this board's tty can have (see devices.identity)."""
        self.description = url
        self.realtime = True
        self.url, self.protocol, self.baudrate, self.lead_map, self.reconnect = url, protocol, baudrate, lead_map, reconnect
        self.stable_port = stable_port
        self._queue: queue.SimpleQueue[Block | LinkEvent] = queue.SimpleQueue()
        self._driver = None
        self._lock = threading.Lock()

    @property
    def fs_hz(self) -> float | None:
        return getattr(self._driver, "fs_hz", None)

    @property
    def connected(self) -> bool:
        return bool(getattr(self._driver, "connected", False))

    @property
    def frames_lost(self) -> int:
        counters = getattr(self._driver, "counters", None)
        return int(getattr(counters, "frames_lost", 0) or 0)

    def conditions(self) -> dict[str, tuple[bool, str]]:
        """The technical condition ``device_refused``: the last port opened was not used, and why
        (another board's serial, or no valid frames where nothing may be written); an Engine
        condition source (``Engine.add_condition_source``)."""
        why = getattr(self._driver, "refusal", None)
        return {"device_refused": (why is not None, why or "")}

    def open(self) -> None:
        from devices.driver import Driver, to_canonical  # imported here: replay needs no devices package

        self._to_canonical = to_canonical
        self._driver = Driver(self.url, self.protocol, on_block=self._on_block, on_event=self._on_event,
                              baudrate=self.baudrate, lead_map=self.lead_map, reconnect=self.reconnect,
                              stable_port=self.stable_port)
        self._driver.start()

    def _on_block(self, block) -> None:  # driver thread
        data = np.asarray(self._to_canonical(block), dtype=np.float32)
        self._queue.put(Block(int(block.first_index), data, float(block.host_time), dict(block.lead_off or {}),
                              float(block.fs_hz)))

    def _on_event(self, event) -> None:  # driver thread
        self._queue.put(LinkEvent(event.kind, float(event.host_time), event.sample_index, event.length,
                                  event.detail or ""))

    def poll(self, timeout_s: float) -> list[Block | LinkEvent] | None:
        try:
            items = [self._queue.get(timeout=timeout_s)]
        except queue.Empty:
            return []
        while True:
            try:
                items.append(self._queue.get_nowait())
            except queue.Empty:
                return items

    def close(self) -> None:
        if self._driver is not None:
            self._driver.stop()
