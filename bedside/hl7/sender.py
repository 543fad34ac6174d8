"""The sender: delivers one bed's HL7 outbox to the central station over MLLP, in order, once accepted.

A thread with its own SQLite connection to the bed's log. It sends the oldest waiting message, waits
for its ACK and deletes the row only on AA (MSA-2 naming that message's MSH-10); on AE, AR, a refused
connection, a timeout or garbage it keeps the row, counts the attempt and retries the SAME message
after an exponential backoff (``backoff_s`` doubling up to ``max_backoff_s``), so messages arrive in
outbox order per bed whatever restarts on either side. A crash between the central's AA and the
delete sends that message again with the same MSH-10: the central drops the duplicate.

With ``SenderSettings.tls`` it connects with TLS 1.2+: it presents the bed's certificate and verifies
the central's against the given CA only, and its host name; a central it cannot verify is never sent
anything (the failed handshake counts as a failed attempt: the message stays, retried with backoff).

:meth:`Sender.condition` is an engine condition source (``Engine.add_condition_source``) for the
technical alarm ``central_unreachable``: present while no message has been accepted for
``unreachable_after_s`` with messages waiting, or while the backlog is at or over the outbox's
warning level (before its bound drops observations).
"""

from __future__ import annotations

import logging
import os
import socket
import sqlite3
import ssl
import threading
import time
from dataclasses import dataclass

from bedside.hl7.messages import Hl7Error, read_ack
from bedside.hl7.mllp import MllpDecoder, MllpError, frame
from bedside.hl7.schema import STATE_TABLE, TABLE
from bedside.hl7.settings import Hl7TlsSettings, OutboxSettings

log = logging.getLogger(__name__)

ALARM = "central_unreachable"


@dataclass(frozen=True)
class SenderSettings:
    host: str
    port: int
    backoff_s: float = 0.5  # first retry delay after a failure, doubled each failure ...
    max_backoff_s: float = 30.0  # ... up to this
    timeout_s: float = 10.0  # connect, and wait for each ACK
    unreachable_after_s: float = 30.0  # central_unreachable after this long without an accepted message
    poll_s: float = 0.1  # how often an empty outbox is looked at again
    tls: Hl7TlsSettings | None = None  # None: plain TCP

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise ValueError(f"port {self.port}: must be 1-65535")
        if not 0 < self.backoff_s <= self.max_backoff_s:
            raise ValueError(f"backoff_s={self.backoff_s}, max_backoff_s={self.max_backoff_s}: need 0 < backoff <= max")


def client_ssl_context(tls: Hl7TlsSettings) -> ssl.SSLContext:
    """TLS 1.2+ client context: presents the bed's certificate, verifies the central's against ``tls.ca``
    (and its host name: the name in ``--hl7 HOST:PORT`` must be in the central's certificate)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED, check_hostname; trusts only tls.ca
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_verify_locations(cafile=str(tls.ca))
        ctx.load_cert_chain(str(tls.cert), str(tls.key))
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"TLS files refused ({tls.cert}, {tls.key}, {tls.ca}): {exc}. Give PEM files: this bed's "
                         "certificate and its key, and the CA that signed the central's certificate") from exc
    return ctx


class Sender:
    """Delivers the outbox rows of ``bed_id`` in ``db_path`` (see the module docstring)."""

    def __init__(self, db_path: str | os.PathLike[str], bed_id: str, settings: SenderSettings,
                 outbox: OutboxSettings = OutboxSettings()):
        self.db_path, self.bed_id, self.settings, self.outbox = os.fspath(db_path), bed_id, settings, outbox
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None
        self._decoder = MllpDecoder()
        self._lock = threading.Lock()
        self._ssl = client_ssl_context(settings.tls) if settings.tls is not None else None
        self.failures = 0  # consecutive failed attempts
        self.stuck_since: float | None = None  # monotonic time of the first failure since the last AA
        self.backlog = 0  # messages waiting, as last counted
        self.delivered = 0  # accepted (AA) by this sender
        self.attempts = 0
        self.last_error = ""

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> Sender:
        self._thread = threading.Thread(target=self._run, name=f"hl7-sender-{self.bed_id}", daemon=True)
        self._thread.start()
        return self

    def stop(self, drain_s: float = 0.0) -> bool:
        """Stop sending (after up to ``drain_s`` s waiting for the outbox to empty); True if it was empty."""
        deadline = time.monotonic() + drain_s
        while drain_s > 0 and time.monotonic() < deadline and self._thread is not None and self._thread.is_alive():
            if self._waiting() == 0:
                break
            time.sleep(self.settings.poll_s)
        self._stop.set()
        self._close_socket()
        if self._thread is not None:
            self._thread.join(self.settings.timeout_s + 1)
        waiting = self._waiting()
        if waiting:
            log.warning("HL7: %d message(s) of bed %s still wait for %s:%d in the outbox of %s; they are sent "
                        "at the next start", waiting, self.bed_id, self.settings.host, self.settings.port, self.db_path)
        return waiting == 0

    def _waiting(self) -> int:
        try:
            conn = sqlite3.connect(self.db_path, timeout=10)
            try:
                return int(conn.execute(f"select count(*) from [{TABLE}] where bed_id = ?", [self.bed_id]).fetchone()[0])
            finally:
                conn.close()
        except sqlite3.Error:
            return -1

    # -- the engine's condition source ---------------------------------------------------------------

    def condition(self) -> dict[str, tuple[bool, str]]:
        """{"central_unreachable": (present, detail)}; quick (reads attributes only)."""
        with self._lock:
            stuck, backlog, error = self.stuck_since, self.backlog, self.last_error
        target = f"{self.settings.host}:{self.settings.port}"
        if backlog >= self.outbox.warn_messages:
            return {ALARM: (True, f"{backlog} HL7 messages waiting for {target} (bound {self.outbox.max_messages})")}
        if stuck is not None and backlog > 0 and time.monotonic() - stuck >= self.settings.unreachable_after_s:
            return {ALARM: (True, f"{target} {error or 'not accepting'} for {time.monotonic() - stuck:.0f} s; "
                                  f"{backlog} waiting")}
        return {ALARM: (False, "")}

    # -- the thread ----------------------------------------------------------------------------------

    def _run(self) -> None:
        conn = sqlite3.connect(self.db_path, timeout=10, isolation_level=None)
        conn.execute("PRAGMA busy_timeout = 10000")
        # A delete lost to a power cut only sends that message again (the central drops the duplicate):
        # no fsync per delivered message (WAL: NORMAL syncs at checkpoints; the engine's commits stay FULL).
        conn.execute("PRAGMA synchronous = NORMAL")
        try:
            while not self._stop.is_set():
                try:
                    row = conn.execute(f"select id, control_id, message from [{TABLE}] where bed_id = ? order by id "
                                       "limit 1", [self.bed_id]).fetchone()
                    count = int(conn.execute(f"select count(*) from [{TABLE}] where bed_id = ?",
                                             [self.bed_id]).fetchone()[0])
                except sqlite3.Error as exc:
                    log.warning("HL7 sender: cannot read the outbox: %s", exc)
                    self._stop.wait(1.0)
                    continue
                with self._lock:
                    self.backlog = count
                if row is None:
                    self._stop.wait(self.settings.poll_s)
                    continue
                self._deliver(conn, *row)
        finally:
            self._close_socket()
            conn.close()

    def _deliver(self, conn: sqlite3.Connection, row_id: int, control_id: str, message: str) -> None:
        try:
            code, reason = self._exchange(control_id, message)
        except (OSError, MllpError, Hl7Error) as exc:
            self._close_socket()
            self._failed(conn, row_id, f"{type(exc).__name__}: {exc}" if not isinstance(exc, OSError)
                         else (exc.strerror or str(exc) or type(exc).__name__))
            return
        if code != "AA":
            self._failed(conn, row_id, f"ACK {code}{': ' + reason if reason else ''}")
            return
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(f"delete from [{TABLE}] where id = ?", [row_id])
            conn.execute(f"insert into [{STATE_TABLE}] (bed_id) values (?) on conflict(bed_id) do nothing", [self.bed_id])
            conn.execute(f"update [{STATE_TABLE}] set delivered = delivered + 1 where bed_id = ?", [self.bed_id])
            conn.execute("COMMIT")
        except sqlite3.Error as exc:  # sent and accepted; sent again later, the central drops the duplicate
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            log.warning("HL7 sender: accepted message %d not removed from the outbox (%s)", row_id, exc)
            self._stop.wait(1.0)
            return
        with self._lock:
            self.delivered += 1
            self.failures, self.stuck_since, self.last_error = 0, None, ""
            self.backlog = max(self.backlog - 1, 0)

    def _exchange(self, control_id: str, message: str) -> tuple[str, str]:
        """Send one message and read its ACK: (code, reason)."""
        sock = self._sock
        if sock is None:
            sock = socket.create_connection((self.settings.host, self.settings.port), self.settings.timeout_s)
            sock.settimeout(self.settings.timeout_s)
            if self._ssl is not None:  # the handshake verifies the central; a failure is an OSError: retried
                try:
                    sock = self._ssl.wrap_socket(sock, server_hostname=self.settings.host)
                except BaseException:
                    sock.close()
                    raise
            self._sock, self._decoder = sock, MllpDecoder()
        self.attempts += 1
        sock.sendall(frame(message))
        deadline = time.monotonic() + self.settings.timeout_s
        while True:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no ACK within {self.settings.timeout_s:g} s")
            data = sock.recv(65536)
            if not data:
                raise ConnectionResetError("central closed the connection before its ACK")
            for reply in self._decoder.feed(data):
                acked, code, reason = read_ack(reply)
                if acked == control_id:
                    return code, reason
                log.warning("HL7 sender: ACK for %r while waiting for %r: ignored", acked, control_id)

    def _failed(self, conn: sqlite3.Connection, row_id: int, error: str) -> None:
        with self._lock:
            self.failures += 1
            if self.stuck_since is None:
                self.stuck_since = time.monotonic()
            self.last_error = error
            failures = self.failures
        if failures in (1, 10) or failures % 100 == 0:
            log.warning("HL7 sender: %s:%d: %s (%d failed attempts; retrying)", self.settings.host,
                        self.settings.port, error, failures)
        try:
            conn.execute(f"update [{TABLE}] set attempts = attempts + 1, last_error = ? where id = ?", [error[:200], row_id])
        except sqlite3.Error:
            pass  # the count is informative only
        delay = min(self.settings.max_backoff_s, self.settings.backoff_s * 2 ** min(failures - 1, 30))
        self._stop.wait(delay)

    def _close_socket(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)  # wakes a recv() blocked in the sender thread
            except OSError:
                pass
            try:
                sock.close()
            except OSError:
                pass
