"""The driver: a port opened with ``serial_for_url``, a reader thread, reconnection with backoff.

``Driver(url, protocol, on_block=..., on_event=...)`` opens ``url`` (a device path such as
``/dev/serial/by-id/...``, ``loop://``, ``socket://host:port``, ``spy://...``), sends the board's
start command, and from pyserial's :class:`serial.threaded.ReaderThread` feeds the bytes to the
protocol's parser and the sequencer. Blocks and events reach the callbacks from the reader thread,
in stream order; the callbacks must be quick (queue the work). When the port vanishes the driver
reports ``disconnect``, retries with exponential backoff (re-resolving a symlink such as
``/dev/serial/by-id/...`` on every try, since a board can come back as another ``/dev/ttyACM*``),
and reports ``reconnect`` when a port proves to be the board again.

A connection is up (``connected``, the ``reconnect`` event) only once
:data:`devices.identity.FRAMES_TO_CONNECT` consecutive valid frames of the expected protocol have
arrived, and a port whose identity (USB serial number, the board's serial) differs from the first
connection's is refused and closed unused. Before its first connection is up, and always on a
stable name (``/dev/serial/by-id/...``, a URL, or a path declared with ``stable_port``), the driver
sends the identify handshake and the start command; after a reconnect on a plain name it writes
nothing until the stream has proved itself (see :mod:`devices.identity`). Bytes that arrive while
a connection proves itself are held and delivered once it is up (counted as skipped if not).
"""

from __future__ import annotations

import contextlib
import logging
import os
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
from devices.identity import FRAMES_TO_CONNECT, LISTEN_S, Identity, Proof, identify, is_stable, \
    plain_port_warning, restore_tty, tty_settings, usb_serial
from devices.protocols import check_lead_map, get_protocol
from devices.reader import COALESCE_S, POLL_TIMEOUT_S, BurstReader as _Reader  # noqa: F401 - re-exported
from devices.types import Counters, DeviceEvent, SampleBlock

log = logging.getLogger(__name__)

#: Most bytes held while a connection proves itself; older ones are dropped and counted as skipped.
MAX_HELD = 1 << 20


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


def _read_timeout(port: serial.SerialBase) -> float | None:
    """Block in read() where stop() can cancel it (cancel_read); poll where it cannot (sockets)."""
    return None if hasattr(port, "cancel_read") else POLL_TIMEOUT_S


class _Link(serial.threaded.Protocol):
    """The pyserial Protocol of one connection: bytes -> parser -> sequencer -> callbacks.

    Until the stream has proved itself (:class:`devices.identity.Proof`) the bytes are held, not
    parsed for delivery; ``writable``: the driver may write before that (handshake, start command).
    """

    def __init__(self, driver: Driver, writable: bool, identity: Identity, tty: list | None) -> None:
        self.driver = driver
        self.parser = driver._spec.make_parser()
        self.writable = writable
        self.identity = identity
        self.tty = tty  # the tty's settings before it was opened (restored if the port is refused)
        self.proof = Proof(driver._spec)
        self.proven = False
        self.closing = False  # the supervisor gave up on it: never declare it up
        self.held = bytearray()
        self.dropped = 0  # held bytes dropped (MAX_HELD), never delivered

    def connection_made(self, transport: serial.threaded.ReaderThread) -> None:
        self.driver._connection_made(self, transport)

    def data_received(self, data: bytes) -> None:
        now = time.time()
        if not self.proven:
            self.held += data
            if len(self.held) > MAX_HELD:
                cut = len(self.held) - MAX_HELD
                del self.held[:cut]
                self.dropped += cut
            if not self.proof.feed(data) or not self.driver._connection_up(self):
                return
            data, self.held = bytes(self.held), bytearray()
        self.driver._deliver(self.parser.feed(data), now, self.parser)

    def connection_lost(self, exc: BaseException | None) -> None:
        if self.proven:
            self.driver._deliver(self.parser.flush(), time.time(), self.parser, final=True)
        self.driver._connection_lost(self, exc)


class Driver:
    """Streams one board: blocks and events to callbacks, counters and state as properties."""

    def __init__(self, url: str, protocol: str, *, on_block: Callable[[SampleBlock], None],
                 on_event: Callable[[DeviceEvent], None], baudrate: int | None = None,
                 lead_map: tuple[str, ...] | None = None, reconnect: bool = True,
                 backoff_s: tuple[float, float] = (0.2, 5.0), gain: int | None = None,
                 stable_port: bool = False) -> None:
        """``stable_port``: ``url`` is a udev symlink that only this board's tty can have (as
        /dev/serial/by-id/... links, which are stable without saying so): the driver may send the
        handshake and start command there after a reconnect, before the stream proves itself."""
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
        self.stable = is_stable(url, stable_port)
        self._up = threading.Event()  # the current connection has proved itself
        self._identity: Identity | None = None  # of the first connection that came up
        self._refusal: str | None = None  # why the last port opened was not used (None once one is up)

    # -- public -------------------------------------------------------------------------------
    @property
    def counters(self) -> Counters:
        """A snapshot of the running totals."""
        with self._lock:
            return replace(self._counters)

    @property
    def connected(self) -> bool:
        """A port is open and its stream has proved itself (valid frames of the expected protocol)."""
        return self._up.is_set() and self._reader is not None and self._reader.alive

    @property
    def identity(self) -> Identity | None:
        """The identity of the board of the first connection (what every later port must match)."""
        return self._identity

    @property
    def refusal(self) -> str | None:
        """Why the last port opened was not used (wrong board, no valid frames); None once one is up."""
        return self._refusal

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
        warning = plain_port_warning(self.url)
        if warning:
            log.warning("%s", warning)
            self._call(self._on_event, DeviceEvent("plain_port", time.time(), None, None, warning))
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
        reader, link = self._reader, self._link
        if reader is not None:
            with contextlib.suppress(Exception):  # best effort: the port may be gone already
                if reader.alive and link is not None and (link.writable or link.proven):
                    reader.write(self._spec.stop_command)
            self._close_reader(reader)  # the reader may have closed the port itself: best effort
            if link is not None and not link.proven:  # listening on a plain name: leave its tty as it was
                restore_tty(self._port_path or self.url, link.tty)

    def write(self, data: bytes) -> None:
        """Send bytes to the board (commands); DeviceError when no port is open."""
        reader, link = self._reader, self._link
        if reader is None or not reader.alive or link is None:
            raise DeviceError(f"{self.url}: not connected; wait for a reconnect event")
        if not (link.writable or link.proven):
            raise DeviceError(f"{self.url}: the port has not proved to be the board yet (no valid frames); "
                              "nothing is written to a plain path before that: wait for a reconnect event")
        reader.write(data)

    def __enter__(self) -> Driver:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- connection management ----------------------------------------------------------------
    def _where(self, target: str) -> str:
        return self.url if target == self.url else f"{self.url} (-> {target})"

    def _try_open(self) -> str | None:
        """Open the port, check who is behind it, start a reader; None on success, else why not."""
        target = resolve_url(self.url)
        where = self._where(target)
        writable = self.stable or self._identity is None  # after a reconnect on a plain name: listen only
        saved = None if writable else tty_settings(target)
        try:
            port = serial.serial_for_url(target, baudrate=self.baudrate, do_not_open=True)
            port.timeout = _read_timeout(port)
            if isinstance(port, serial.Serial):
                port.exclusive = True  # a second program reading the same tty would steal bytes
            port.open()
        except (serial.SerialException, OSError, ValueError) as exc:
            return f"cannot open {where}: {exc}"
        if self._stopping.is_set():  # stop() came while the port was opening
            self._close_unused(port, target, saved)
            return "stopped"
        identity = Identity(usb_serial=usb_serial(target))  # read from sysfs: nothing is written
        mismatch = identity.mismatch(self._identity) if self._identity is not None else None
        if mismatch is None and writable and self._spec.serial_in_banner:
            try:
                board_serial, seen = identify(port, self._spec)
            except (serial.SerialException, OSError) as exc:
                self._close_unused(port, target, saved)
                return f"cannot identify the board on {where}: {exc}"
            self._count_unused(len(seen))
            port.timeout = _read_timeout(port)
            identity = replace(identity, board_serial=board_serial, asked=True)
            mismatch = identity.mismatch(self._identity) if self._identity is not None else None
        if mismatch is not None:
            self._close_unused(port, target, saved)
            self._refuse(f"device on {where} is not the board this session started with: {mismatch}. The port "
                         "is not used; reconnect the board this session started with, or start a new session "
                         "for this one")
            return f"refused {where}: {mismatch}"
        self._port_path = target
        self._lost.clear()
        self._up.clear()
        link = _Link(self, writable, identity, saved)
        self._link = link
        reader = _Reader(port, lambda: link)
        reader.name = f"devices-reader[{self.url}]"
        self._reader = reader
        reader.start()
        return None

    def _close_unused(self, port: serial.SerialBase, target: str, saved: list | None) -> None:
        with contextlib.suppress(Exception):
            port.close()
        restore_tty(target, saved)

    def _count_unused(self, n_bytes: int) -> None:
        """Bytes read but never delivered (handshake, a refused port): received and skipped."""
        with self._lock:
            self._parser_totals.bytes_received += n_bytes
            self._parser_totals.bytes_skipped += n_bytes
            self._counters.bytes_received += n_bytes
            self._counters.bytes_skipped += n_bytes

    def _refuse(self, why: str) -> None:
        """A port was opened and not used: logged each time, an event when the reason is new."""
        log.warning("%s", why)
        new = why != self._refusal
        self._refusal = why
        with self._lock:
            self._counters.refused += 1
        if new:
            self._call(self._on_event, DeviceEvent("refused", time.time(), None, None, why))
        if not self._reported_down:  # the consumer was never told the link is down
            self._emit_event(DeviceEvent("disconnect", time.time(), None, None, why), count="disconnects")

    def _prove(self) -> str:
        """Wait until the open connection proves itself: "up", "lost", "stopped" or "refused" (closed)."""
        deadline = time.monotonic() + LISTEN_S
        while not self._up.wait(min(0.05, max(deadline - time.monotonic(), 0.0))):
            if self._stopping.is_set():
                return "stopped"
            if self._lost.is_set():
                return "lost"
            if time.monotonic() >= deadline:
                break
        link, reader = self._link, self._reader
        with self._lock:
            if self._up.is_set():
                return "up"
            if link is not None:
                link.closing = True
        where = self._where(self._port_path or self.url)
        if link is not None and not link.writable:
            why = (f"no valid {self.protocol} frames on {where} within {LISTEN_S:g} s after the reconnect, and "
                   f"nothing is written there: {self.url} is not a stable name, so it may now be another device "
                   "or terminal. Restart the board's stream (a streaming board is recognised), or give the "
                   "board's /dev/serial/by-id/... link or a udev symlink declared with --stable-port "
                   "(docs/install.md)")
        else:
            why = (f"no valid {self.protocol} frames on {where} within {LISTEN_S:g} s of sending the start "
                   "command: check that the board is powered, the protocol (--protocol), the baud rate, and "
                   f"that {self.url} is the board")
        if reader is not None:
            self._close_reader(reader)
        if link is not None:
            restore_tty(self._port_path or self.url, link.tty)
        self._refuse(why)
        return "refused"

    def _close_reader(self, reader: _Reader) -> None:
        reader.alive = False
        with contextlib.suppress(Exception):
            if hasattr(reader.serial, "cancel_read"):
                reader.serial.cancel_read()
        if reader is not threading.current_thread():
            reader.join(2.0)
        with contextlib.suppress(Exception):
            reader.serial.close()

    def _supervise(self) -> None:
        """Prove each opened port; reopen after a loss, waiting b0, 2 b0, 4 b0 ... up to the longest delay."""
        delay = self.backoff_s[0]
        opened = self._reader is not None and not self._lost.is_set()  # start() opened the port
        while True:
            if opened:
                outcome = self._prove()
                if outcome == "stopped":
                    return
                if outcome == "up":
                    delay = self.backoff_s[0]
                    self._lost.wait()
                else:
                    delay = min(delay * 2, self.backoff_s[1])
            else:
                self._lost.wait()
            if self._stopping.is_set() or not self.reconnect:
                return
            if self._stopping.wait(delay):
                return
            error = self._try_open()  # clears _lost on success
            opened = error is None
            if error is not None:
                delay = min(delay * 2, self.backoff_s[1])
                log.info("%s; retrying in %.1f s", error, delay)

    def _connection_made(self, link: _Link, transport: serial.threaded.ReaderThread) -> None:
        if link.writable:
            transport.write(self._spec.start_command)

    def _connection_up(self, link: _Link) -> bool:
        """The stream proved itself (reader thread): declare the link up; False if it was given up."""
        with self._lock:
            if link.closing:
                return False
            link.proven = True
            self._up.set()
        first = self._identity is None
        if first:
            self._identity = link.identity
        self._refusal = None
        if self._reported_down:  # a disconnect was reported: this is the way back
            self._reported_down = False
            known = [f"{k} {v}" for k, v in (("USB serial", link.identity.usb_serial),
                                              ("serial", link.identity.board_serial)) if v]
            checked = f"; identity {', '.join(known)}" if known else "; no identity reported"
            self._emit_event(DeviceEvent("reconnect", time.time(), None, None,
                                         f"opened {self._port_path}: {FRAMES_TO_CONNECT} consecutive valid "
                                         f"frames{checked}"), count="reconnects")
        return True

    def _connection_lost(self, link: _Link, exc: BaseException | None) -> None:
        with self._lock:
            p = link.parser
            t = self._parser_totals
            unused = len(link.held) + link.dropped
            link.held, link.dropped = bytearray(), 0
            t.bytes_received += p.bytes_received + unused
            t.bytes_skipped += p.bytes_skipped + unused
            t.frames_corrupt += p.crc_errors
            t.resyncs += p.resyncs
            self._counters.bytes_received = t.bytes_received
            self._counters.bytes_skipped = t.bytes_skipped + self._sequencer.frames_rejected * self._spec.frame_size
        if not self._stopping.is_set() and link.proven:
            why = f"{exc}" if exc is not None else "port closed"
            self._emit_event(DeviceEvent("disconnect", time.time(), self._sequencer.last_index + 1, None,
                                         f"{self._port_path}: {why}"), count="disconnects")
        elif not self._stopping.is_set() and not link.closing and not self._reported_down:
            self._emit_event(DeviceEvent("disconnect", time.time(), None, None,
                                         f"{self._port_path}: lost before valid frames arrived"),
                             count="disconnects")
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
