"""The reader thread of a port: pyserial's ReaderThread reading whole bursts, any read error a disconnect."""

from __future__ import annotations

import fcntl
import struct
import termios
import time

import serial
import serial.threaded

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


def _bytes_waiting(port: serial.SerialBase) -> int:
    """Bytes that can be read now without blocking. pyserial's socket:// reports 0 or 1 here, and
    its read() discards what it gathered when the peer closes, so sockets are asked directly."""
    if not isinstance(port, serial.Serial) and hasattr(port, "fileno") and not hasattr(port, "queue"):
        return struct.unpack("i", fcntl.ioctl(port.fileno(), termios.FIONREAD, b"\0\0\0\0"))[0]
    return port.in_waiting


class BurstReader(serial.threaded.ReaderThread):
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
