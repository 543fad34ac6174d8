"""The driver: a port opened with ``serial_for_url``, a reader thread, reconnection with backoff.

``Driver(url, protocol, on_block=..., on_event=...)`` opens ``url`` (a device path such as
``/dev/serial/by-id/...``, ``loop://``, ``socket://host:port``, ``spy://...``), sends the board's
start command, and from pyserial's :class:`serial.threaded.ReaderThread` feeds the bytes to the
protocol's parser and the sequencer. Blocks and events reach the callbacks from the reader thread,
in stream order; the callbacks must be quick (queue the work). When the port vanishes the driver
reports ``disconnect``, retries with exponential backoff (re-resolving a symlink such as
``/dev/serial/by-id/...`` on every try, since a board can come back as another ``/dev/ttyACM*``),
and reports ``reconnect`` when a port opens again.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import struct
import termios
import threading
import time
from collections.abc import Callable
from dataclasses import replace

import numpy as np
import serial
import serial.threaded

from bedside.leads import assemble_canonical
from devices.errors import DeviceError
from devices.framing import Parsed
from devices.protocols import check_lead_map, get_protocol
from devices.types import Counters, DeviceEvent, SampleBlock

log = logging.getLogger(__name__)

#: Read timeout of ports that cannot cancel a blocking read (sockets): how soon stop() is noticed.
POLL_TIMEOUT_S = 0.05
#: After the first byte of a burst, wait this long and read everything that came meanwhile: a board
#: sending one frame per sample would otherwise wake the reader 500 times a second (USB serial
#: adapters batch the same way: an FTDI chip's latency timer is 16 ms by default).
COALESCE_S = 0.016
#: Bytes already waiting that make the reader skip the coalescing wait (it is behind, or the
#: stream is fast, as from a simulator at many times real time).
BURST_BYTES = 1024
#: Most bytes gathered before they are parsed (a backlog after a stall is read in one go up to this).
MAX_READ = 1 << 20


def to_canonical(block: SampleBlock) -> np.ndarray:
    """[12, n] float32 mV in canonical lead order (III, aVR, aVF, aVL derived from I and II)."""
    try:
        return assemble_canonical({name: block.samples_mv[i] for i, name in enumerate(block.leads)})
    except KeyError as exc:
        raise DeviceError(f"block leads {block.leads} lack {exc.args[0]}: the canonical 12 leads need "
                          "I, II and V1-V6; fix the driver's lead_map") from None


def resolve_url(url: str) -> str:
    """A port to open now: URLs as given, a path with its symlinks resolved (by-id links move)."""
    if "://" in url:
        return url
    return os.path.realpath(url)


def _bytes_waiting(port: serial.SerialBase) -> int:
    """Bytes that can be read now without blocking. pyserial's socket:// reports 0 or 1 here, and
    its read() discards what it gathered when the peer closes, so sockets are asked directly."""
    if not isinstance(port, serial.Serial) and hasattr(port, "fileno") and not hasattr(port, "queue"):
        return struct.unpack("i", fcntl.ioctl(port.fileno(), termios.FIONREAD, b"\0\0\0\0"))[0]
    return port.in_waiting


class _Reader(serial.threaded.ReaderThread):
    """pyserial's ReaderThread, reading whole bursts and treating any read error as a disconnect."""

    def run(self) -> None:
        self.protocol = self.protocol_factory()
        try:
            self.protocol.connection_made(self)
        except Exception as exc:  # noqa: BLE001 - a failed start command is a lost connection
            self.alive = False
            self.protocol.connection_lost(exc)
            self._connection_made.set()
            return
        self._connection_made.set()
        error: Exception | None = None
        while self.alive and self.serial.is_open:
            try:
                data = self.serial.read(1)  # blocks until a byte (or cancel_read / the poll timeout)
                waiting = _bytes_waiting(self.serial) if data else 0
                if data and waiting < BURST_BYTES and self.alive:  # a trickle: let a burst gather
                    time.sleep(COALESCE_S)
                    waiting = _bytes_waiting(self.serial)
                while waiting and len(data) < MAX_READ:  # the whole backlog, so that host times hold
                    data += self.serial.read(waiting)
                    waiting = _bytes_waiting(self.serial)
            except Exception as exc:  # noqa: BLE001 - SerialException, OSError(EIO) of a vanished tty
                error = exc
                break
            if data:
                self.protocol.data_received(data)
        self.alive = False
        self.protocol.connection_lost(error)
        self.protocol = None


class _Link(serial.threaded.Protocol):
    """The pyserial Protocol of one connection: bytes -> parser -> sequencer -> callbacks."""

    def __init__(self, driver: Driver) -> None:
        self.driver = driver
        self.parser = driver._spec.make_parser()

    def connection_made(self, transport: serial.threaded.ReaderThread) -> None:
        self.driver._connection_made(self, transport)

    def data_received(self, data: bytes) -> None:
        now = time.time()
        self.driver._deliver(self.parser.feed(data), now, self.parser)

    def connection_lost(self, exc: BaseException | None) -> None:
        self.driver._deliver(self.parser.flush(), time.time(), self.parser, final=True)
        self.driver._connection_lost(self, exc)


class Driver:
    """Streams one board: blocks and events to callbacks, counters and state as properties."""

    def __init__(self, url: str, protocol: str, *, on_block: Callable[[SampleBlock], None],
                 on_event: Callable[[DeviceEvent], None], baudrate: int | None = None,
                 lead_map: tuple[str, ...] | None = None, reconnect: bool = True,
                 backoff_s: tuple[float, float] = (0.2, 5.0), gain: int | None = None) -> None:
        self._spec = get_protocol(protocol)
        self.url = url
        self.protocol = protocol
        self.fs_hz: float = self._spec.fs_hz
        self.leads: tuple[str, ...] = check_lead_map(lead_map or self._spec.default_leads, self._spec.channels)
        self.baudrate = baudrate or self._spec.baudrate
        self.gain = self._spec.gain_or_default(gain)
        lo, hi = backoff_s
        if not 0 < lo <= hi:
            raise DeviceError(f"backoff_s={backoff_s!r}: need 0 < first delay <= longest delay (seconds)")
        self.backoff_s = (float(lo), float(hi))
        self.reconnect = reconnect
        self._on_block, self._on_event = on_block, on_event
        self._sequencer = self._spec.make_sequencer(self.leads, self.gain)
        self._lock = threading.Lock()
        self._counters = Counters()
        self._parser_totals = Counters()  # of finished connections
        self._link: _Link | None = None
        self._reader: _Reader | None = None
        self._stopping = threading.Event()
        self._lost = threading.Event()
        self._supervisor: threading.Thread | None = None
        self._reported_down = False  # a disconnect event was sent and no reconnect yet
        self._port_path: str | None = None

    # -- public -------------------------------------------------------------------------------
    @property
    def counters(self) -> Counters:
        """A snapshot of the running totals."""
        with self._lock:
            return replace(self._counters)

    @property
    def connected(self) -> bool:
        return self._reader is not None and self._reader.alive

    @property
    def measured_rate_hz(self) -> float:
        """Device samples per host second over the last 10 s (the nominal rate until measured)."""
        return self._sequencer.rate.rate_hz

    @property
    def port_path(self) -> str | None:
        """The port last opened (a by-id link resolved to its /dev/tty* target)."""
        return self._port_path

    def start(self) -> None:
        """Open the port and start reading. Raises DeviceError when the first open fails and
        reconnect is off; with reconnect on, a failed first open is a ``disconnect`` event and retried."""
        if self._supervisor is not None:
            raise DeviceError("driver already started; create a new Driver to start again")
        self._stopping.clear()
        first_error = self._try_open()
        if first_error is not None:
            if not self.reconnect:
                raise DeviceError(first_error)
            self._lost.set()
            self._emit_event(DeviceEvent("disconnect", time.time(), None, None, first_error), count="disconnects")
        self._supervisor = threading.Thread(target=self._supervise, name=f"devices-driver[{self.url}]",
                                            daemon=True)
        self._supervisor.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Send the stop command, close the port, end the threads (no disconnect event)."""
        self._stopping.set()
        self._lost.set()  # wakes the supervisor, which then ends without opening anything
        if self._supervisor is not None and self._supervisor is not threading.current_thread():
            self._supervisor.join(timeout_s)
        reader = self._reader
        if reader is not None:
            with contextlib.suppress(Exception):  # best effort: the port may be gone already
                if reader.alive:
                    reader.write(self._spec.stop_command)
            reader.alive = False
            with contextlib.suppress(Exception):  # the reader may have closed the port itself
                if hasattr(reader.serial, "cancel_read"):
                    reader.serial.cancel_read()
            if reader is not threading.current_thread():
                reader.join(2.0)
            with contextlib.suppress(Exception):
                reader.serial.close()

    def write(self, data: bytes) -> None:
        """Send bytes to the board (commands); DeviceError when no port is open."""
        reader = self._reader
        if reader is None or not reader.alive:
            raise DeviceError(f"{self.url}: not connected; wait for a reconnect event")
        reader.write(data)

    def __enter__(self) -> Driver:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- connection management ----------------------------------------------------------------
    def _try_open(self) -> str | None:
        """Open the port and start a reader; None on success, else why it failed."""
        target = resolve_url(self.url)
        try:
            port = serial.serial_for_url(target, baudrate=self.baudrate, do_not_open=True)
            port.timeout = None if hasattr(port, "cancel_read") else POLL_TIMEOUT_S
            if isinstance(port, serial.Serial):
                port.exclusive = True  # a second program reading the same tty would steal bytes
            port.open()
        except (serial.SerialException, OSError, ValueError) as exc:
            where = self.url if target == self.url else f"{self.url} (-> {target})"
            return f"cannot open {where}: {exc}"
        if self._stopping.is_set():  # stop() came while the port was opening
            port.close()
            return "stopped"
        self._port_path = target
        self._lost.clear()
        reader = _Reader(port, lambda: _Link(self))
        reader.name = f"devices-reader[{self.url}]"
        self._reader = reader
        reader.start()
        return None

    def _supervise(self) -> None:
        """Reopen the port after a loss, waiting b0, 2 b0, 4 b0 ... up to the longest delay."""
        delay = self.backoff_s[0]
        while True:
            self._lost.wait()
            if self._stopping.is_set() or not self.reconnect:
                return
            if self._stopping.wait(delay):
                return
            error = self._try_open()  # clears _lost on success
            if error is None:
                delay = self.backoff_s[0]
            else:
                delay = min(delay * 2, self.backoff_s[1])
                log.info("%s; retrying in %.1f s", error, delay)

    def _connection_made(self, link: _Link, transport: serial.threaded.ReaderThread) -> None:
        self._link = link
        if self._reported_down:  # a disconnect was reported: this is the way back
            self._reported_down = False
            self._emit_event(DeviceEvent("reconnect", time.time(), None, None, f"opened {self._port_path}"),
                             count="reconnects")
        transport.write(self._spec.start_command)

    def _connection_lost(self, link: _Link, exc: BaseException | None) -> None:
        with self._lock:
            p = link.parser
            t = self._parser_totals
            t.bytes_received += p.bytes_received
            t.bytes_skipped += p.bytes_skipped
            t.frames_corrupt += p.crc_errors
            t.resyncs += p.resyncs
        if not self._stopping.is_set():
            why = f"{exc}" if exc is not None else "port closed"
            self._emit_event(DeviceEvent("disconnect", time.time(), self._sequencer.last_index + 1, None,
                                         f"{self._port_path}: {why}"), count="disconnects")
        with contextlib.suppress(Exception):
            link_reader = self._reader
            if link_reader is not None and not self._stopping.is_set():
                link_reader.serial.close()
        self._lost.set()

    # -- delivery -----------------------------------------------------------------------------
    def _deliver(self, parsed: Parsed, host_time: float, parser, final: bool = False) -> None:
        items = self._sequencer.push(parsed, host_time, final=final)
        s, t = self._sequencer, self._parser_totals
        with self._lock:
            c = self._counters
            c.frames_received = s.frames_received
            c.frames_lost = s.frames_lost
            c.frames_corrupt = t.frames_corrupt + parser.crc_errors + s.frames_rejected
            c.bytes_received = t.bytes_received + parser.bytes_received
            c.bytes_skipped = t.bytes_skipped + parser.bytes_skipped + s.frames_rejected * self._spec.frame_size
            c.resyncs = t.resyncs + parser.resyncs
        for item in items:
            if isinstance(item, SampleBlock):
                self._call(self._on_block, item)
            else:
                self._call(self._on_event, item)

    def _emit_event(self, event: DeviceEvent, count: str) -> None:
        if event.kind == "disconnect":
            self._reported_down = True
        with self._lock:
            setattr(self._counters, count, getattr(self._counters, count) + 1)
        self._call(self._on_event, event)

    @staticmethod
    def _call(callback: Callable, item: object) -> None:
        try:
            callback(item)
        except Exception:  # noqa: BLE001 - a consumer bug must not take the port down
            log.exception("device callback %r raised on %r; the driver keeps running", callback, item)
