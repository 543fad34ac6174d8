"""Is the port still our board? Port names, board identities, the identify handshake, frame proof.

A plain kernel name (``/dev/pts/N``, ``/dev/ttyUSBN``, ``/dev/ttyACMN``) is handed to the next
device or terminal that appears once our board is gone, so after a reconnect the driver must not
trust it: it writes nothing there and only listens (a board still streaming proves itself with
:data:`FRAMES_TO_CONNECT` consecutive valid frames). A *stable* name can only ever point at this
board: udev's ``/dev/serial/by-id/...`` links (their names hold the board's USB serial number) and
``/dev/serial/by-path/...``, or a udev symlink the user declares stable (``bedside monitor
--stable-port``; docs/install.md has a rule). On a stable name the driver may send the
protocol's identify handshake and start command before the stream has proved itself.

Identity: the USB serial number of the tty (sysfs, read without touching the port) and, for
protocols whose identify answer carries one (ADS1298: ``serial XXXX`` in the ``v`` line, see
docs/protocol-ads1298.md), the board's own serial. The first connection's identity is kept; a
later port that reports another one is refused.
"""

from __future__ import annotations

import contextlib
import os
import re
import termios
import time
from dataclasses import dataclass

import serial

from devices.protocols import ProtocolSpec

#: Consecutive valid frames (sequence counter +1 each) that declare a connection up. Eight frames
#: are 16 ms of an ADS1298 (CRC-32 each) or 32 ms of a Cyton (no CRC: header, stop byte and counter
#: must all line up eight times, which no text or line noise does by chance).
FRAMES_TO_CONNECT = 8
#: How long an opened port may take to prove itself with frames before it is closed unused (s).
LISTEN_S = 2.0
#: Identify handshake: quiet time that ends the stream after the stop command, longest wait for
#: quiet, and longest wait for the identify line (seconds).
QUIET_S = 0.05
QUIET_MAX_S = 1.0
IDENTIFY_TIMEOUT_S = 0.5

#: Names the kernel gives to whatever appears next: not proof of which board is behind them.
PLAIN_PORT = re.compile(r"^/dev/(pts/\d+|ttyUSB\d+|ttyACM\d+)$")
#: udev's persistent names: they can only point at the board they were made for.
STABLE_PREFIXES = ("/dev/serial/by-id/", "/dev/serial/by-path/")
_SERIAL_IN_BANNER = re.compile(rb"\bserial[ =]([A-Za-z0-9._:-]{1,64})")


def is_url(url: str) -> bool:
    """``socket://``, ``loop://``, ``rfc2217://`` ...: an address configured for this board, not a tty name."""
    return "://" in url


def is_stable(url: str, declared: bool = False) -> bool:
    """May the driver write to ``url`` before the stream has proved itself (handshake, start)?"""
    return declared or is_url(url) or url.startswith(STABLE_PREFIXES)


def plain_port_warning(url: str) -> str | None:
    """The warning for a port given by a plain kernel name (None for a stable name or a URL)."""
    if not PLAIN_PORT.match(url):
        return None
    return (f"{url} is a plain kernel name that the system hands to the next device or terminal once "
            "this board is gone; after a reconnect the monitor only listens there and never writes. Use "
            "the board's /dev/serial/by-id/... link (ls -l /dev/serial/by-id/) or a udev symlink given "
            "with --stable-port (docs/install.md)")


@dataclass(frozen=True)
class Identity:
    """What a port says about the board behind it; None where it says nothing."""

    usb_serial: str | None = None  # the USB device's serial number (sysfs), from the tty alone
    board_serial: str | None = None  # the board's own serial, from its identify line
    asked: bool = False  # the identify handshake was sent (board_serial None then: no serial in the answer)

    def mismatch(self, expected: Identity) -> str | None:
        """'serial X, expected Y' when a serial the first connection had differs now (or is missing
        although it could be read: a USB serial always, the board's when it was asked), else None."""
        if expected.usb_serial is not None and self.usb_serial != expected.usb_serial:
            return f"USB serial {self.usb_serial or 'none'}, expected {expected.usb_serial}"
        if expected.board_serial is not None and self.asked and self.board_serial != expected.board_serial:
            return f"serial {self.board_serial or 'none'}, expected {expected.board_serial}"
        return None


def usb_serial(path: str) -> str | None:
    """The USB serial number of a tty device node, from sysfs (pyserial's list_ports); None if not USB."""
    if is_url(path) or not path.startswith("/dev/"):
        return None
    try:
        from serial.tools.list_ports_linux import SysFS

        return SysFS(path).serial_number or None
    except (OSError, ValueError, ImportError):
        return None


def banner_serial(text: bytes) -> str | None:
    """The ``serial XXXX`` of an identify line, or None."""
    m = _SERIAL_IN_BANNER.search(text)
    return m.group(1).decode("ascii") if m else None


def identify(port: serial.SerialBase, spec: ProtocolSpec) -> tuple[str | None, bytes]:
    """The identify handshake on an open port: stop, wait for quiet, ``v``, read one line.

    Returns (the board's serial or None, every byte read meanwhile). Only for protocols whose
    identify line carries a serial (:attr:`ProtocolSpec.serial_in_banner`) and only on a port the
    driver may write to; the caller restores the port's timeout.
    """
    got = bytearray()
    port.timeout = QUIET_S
    port.write(spec.stop_command)
    deadline = time.monotonic() + QUIET_MAX_S
    while time.monotonic() < deadline:
        chunk = port.read(65536)
        got += chunk
        if not chunk:
            break
    port.write(spec.identify_command)
    start = len(got)
    deadline = time.monotonic() + IDENTIFY_TIMEOUT_S
    port.timeout = 0.02
    while time.monotonic() < deadline and b"\n" not in got[start:]:
        got += port.read(256)
    return banner_serial(bytes(got[start:])), bytes(got)


class Proof:
    """Frames seen on an unproven connection: a private parser, and the run of consecutive frames."""

    def __init__(self, spec: ProtocolSpec, needed: int = FRAMES_TO_CONNECT) -> None:
        self.parser = spec.make_parser()
        self.modulus = spec.counter_modulus
        self.needed = needed
        self.run = 0  # consecutive frames (counter +1 each) ending at the last one seen
        self._last: int | None = None

    def feed(self, data: bytes) -> bool:
        """True once ``needed`` consecutive valid frames have arrived (garbage between them restarts the count)."""
        parsed = self.parser.feed(data)
        if parsed.incidents:
            self.run, self._last = 0, None
        for counter in parsed.frames.counters.tolist():
            step_ok = self._last is not None and (counter - self._last) % self.modulus == 1
            self.run = self.run + 1 if step_ok else 1
            self._last = counter
            if self.run >= self.needed:
                return True
        return False


def tty_settings(path: str) -> list | None:
    """A tty's termios settings before the driver configures it (None: not a tty, or unreadable)."""
    if is_url(path):
        return None
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        try:
            return termios.tcgetattr(fd) if os.isatty(fd) else None
        except termios.error:
            return None
        finally:
            os.close(fd)
    return None


def restore_tty(path: str, settings: list | None) -> None:
    """Put back a refused tty's settings (raw mode would break the terminal of whoever owns it now)."""
    if settings is None:
        return
    with contextlib.suppress(OSError, termios.error):
        fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        try:
            termios.tcsetattr(fd, termios.TCSANOW, settings)
        finally:
            os.close(fd)
