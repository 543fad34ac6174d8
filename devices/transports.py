"""The simulator's side of a port: a pseudo-terminal (with an optional by-id style link) or a TCP server.

Both are non-blocking and polled by the simulator's single thread: ``poll`` waits for host bytes
(commands) up to a timeout, ``write`` sends what it can within a bounded wait (a board whose host
stops reading loses data: the rest is reported as an overrun), ``vanish``/``reappear`` model an
unplugged and replugged board.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import pty
import select
import socket
import struct
import termios
import time
import tty

WRITE_WAIT_S = 1.0  # how long a write waits for a host that does not read before giving up


class PtyPort:
    """A pseudo-terminal pair; the host opens ``path`` (or ``link``, a symlink kept pointing at it)."""

    def __init__(self, link: str | None = None) -> None:
        self.link = link
        self.master: int | None = None
        self.slave: int | None = None
        self.path: str | None = None

    @property
    def address(self) -> str:
        return self.link or self.path or ""

    @property
    def is_open(self) -> bool:
        return self.master is not None

    def open(self) -> None:
        master, slave = pty.openpty()
        tty.setraw(slave)  # no echo, no newline translation before the host configures the port
        os.set_blocking(master, False)
        self.master, self.slave, self.path = master, slave, os.ttyname(slave)
        if self.link:
            tmp = f"{self.link}.tmp{os.getpid()}"
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            os.symlink(self.path, tmp)
            os.replace(tmp, self.link)  # the link moves atomically, as udev's by-id links do

    def drain(self, timeout_s: float = 1.0) -> bool:
        """Wait until the host has read every byte written (True) or the timeout passed (False)."""
        deadline = time.monotonic() + timeout_s
        quiet = 0  # bytes pass through the tty layer's flip buffer first: require a few empty looks
        while self.slave is not None and quiet < 3:
            time.sleep(0.005)
            waiting = struct.unpack("i", fcntl.ioctl(self.slave, termios.FIONREAD, b"\0\0\0\0"))[0]
            quiet = quiet + 1 if waiting == 0 else 0
            if time.monotonic() > deadline:
                return False
        return True

    def vanish(self) -> None:
        """Unplug: the link disappears, the tty node disappears, the host's reads fail."""
        if self.link and os.path.islink(self.link) and os.readlink(self.link) == self.path:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.link)
        for fd in (self.master, self.slave):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.master = self.slave = None

    reappear = open
    close = vanish

    def connected(self) -> bool:
        return self.master is not None

    def poll(self, timeout: float) -> bytes:
        if self.master is None:
            time.sleep(max(timeout, 0.0))
            return b""
        ready, _, _ = select.select([self.master], [], [], max(timeout, 0.0))
        if not ready:
            return b""
        try:
            return os.read(self.master, 4096)
        except OSError:
            return b""

    def write(self, data: bytes) -> int:
        """Bytes written (fewer than len(data) when the host stopped reading)."""
        return _write_nonblocking(lambda b: os.write(self.master, b), self.master, data) if self.master else 0


class TcpPort:
    """A TCP server with one client at a time; the host opens ``socket://host:port``."""

    def __init__(self, port: int = 0, host: str = "127.0.0.1") -> None:
        self.host, self.port = host, port
        self.listener: socket.socket | None = None
        self.client: socket.socket | None = None

    @property
    def address(self) -> str:
        return f"socket://{self.host}:{self.port}"

    def open(self) -> None:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((self.host, self.port))
        s.listen(1)
        s.setblocking(False)
        self.listener, self.port = s, s.getsockname()[1]

    def vanish(self) -> None:
        for s in (self.client, self.listener):
            if s is not None:
                with contextlib.suppress(OSError):
                    s.close()
        self.client = self.listener = None

    reappear = open
    close = vanish

    @property
    def is_open(self) -> bool:
        return self.listener is not None

    def drain(self, timeout_s: float = 1.0) -> bool:
        """Half-close and wait for the host to close too, so that no byte sent is lost (closing a
        socket with unread input would reset the connection and discard what is in flight)."""
        if self.client is None:
            return True
        deadline = time.monotonic() + timeout_s
        with contextlib.suppress(OSError):
            self.client.shutdown(socket.SHUT_WR)
            while (left := deadline - time.monotonic()) > 0:
                ready, _, _ = select.select([self.client], [], [], left)
                if ready and not self.client.recv(4096):
                    return True
        return False

    def connected(self) -> bool:
        return self.client is not None

    def drop_client(self) -> None:
        if self.client is not None:
            with contextlib.suppress(OSError):
                self.client.close()
            self.client = None

    def poll(self, timeout: float) -> bytes:
        if self.listener is None:
            time.sleep(max(timeout, 0.0))
            return b""
        watch = [self.client] if self.client is not None else [self.listener]
        ready, _, _ = select.select(watch, [], [], max(timeout, 0.0))
        if not ready:
            return b""
        if self.client is None:
            with contextlib.suppress(BlockingIOError):
                client, _ = self.listener.accept()
                client.setblocking(False)
                client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self.client = client
            return b""
        try:
            data = self.client.recv(4096)
        except (BlockingIOError, InterruptedError):
            return b""
        except OSError:
            data = b""
        if not data:
            self.drop_client()  # the host closed its end
        return data

    def write(self, data: bytes) -> int:
        if self.client is None:
            return 0
        try:
            return _write_nonblocking(self.client.send, self.client.fileno(), data)
        except OSError:
            self.drop_client()
            return 0


def _write_nonblocking(send, fd: int, data: bytes) -> int:
    done = 0
    deadline = time.monotonic() + WRITE_WAIT_S
    while done < len(data):
        try:
            done += send(data[done:])
        except (BlockingIOError, InterruptedError):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            select.select([], [fd], [], left)
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK):
                continue
            raise
    return done
