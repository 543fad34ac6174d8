"""systemd service notification (sd_notify) with the socket module: READY, WATCHDOG, STATUS, STOPPING.

The protocol is one datagram of ``KEY=value`` lines to the AF_UNIX socket named by ``$NOTIFY_SOCKET``
(a leading ``@`` means the abstract namespace). ``WatchdogSec=`` in the unit sets ``$WATCHDOG_USEC``
(and ``$WATCHDOG_PID``); the engine calls :meth:`Notifier.ping` from its processing loop, which sends
``WATCHDOG=1`` at most every half interval, so a hung loop stops the pings and systemd restarts the
service. Outside systemd (no ``$NOTIFY_SOCKET``) every call does nothing.
"""

from __future__ import annotations

import logging
import os
import socket
import time

log = logging.getLogger(__name__)


class Notifier:
    """sd_notify over ``$NOTIFY_SOCKET``; a no-op when the variable is unset."""

    def __init__(self, address: str | None, watchdog_usec: int | None = None, clock=time.monotonic):
        self.address = address
        self.interval_s = watchdog_usec / 1e6 / 2 if watchdog_usec else None
        self.clock = clock
        self._last_ping: float | None = None
        self._sock: socket.socket | None = None
        self.failures = 0

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> "Notifier":
        env = os.environ if environ is None else environ
        usec = env.get("WATCHDOG_USEC")
        pid = env.get("WATCHDOG_PID")
        watchdog = int(usec) if usec and usec.isdigit() and (not pid or pid == str(os.getpid())) else None
        return cls(env.get("NOTIFY_SOCKET") or None, watchdog)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def notify(self, *lines: str) -> bool:
        """Send one datagram of ``lines``; False (and logged) when it cannot be sent."""
        if self.address is None:
            return False
        target = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        try:
            if self._sock is None:  # non-blocking: a stalled reader must never stall the processing loop
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK)
            self._sock.sendto("\n".join(lines).encode(), target)
            return True
        except OSError as exc:
            self.failures += 1
            if self.failures in (1, 10, 100):
                log.warning("sd_notify to %s failed (%d times): %s", self.address, self.failures, exc)
            return False

    def ready(self, status: str = "") -> bool:
        return self.notify("READY=1", *([f"STATUS={status}"] if status else []))

    def status(self, text: str) -> bool:
        return self.notify(f"STATUS={text}")

    def stopping(self) -> bool:
        return self.notify("STOPPING=1")

    def ping(self) -> bool:
        """WATCHDOG=1, at most every half ``WatchdogSec``; call it from the processing loop."""
        if self.address is None or self.interval_s is None:
            return False
        now = self.clock()
        if self._last_ping is not None and now - self._last_ping < self.interval_s:
            return False
        self._last_ping = now
        return self.notify("WATCHDOG=1")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
