"""The central station's receiver: an asyncio MLLP server for many beds (IHE PCD-01 / PCD-04 over HL7 v2).

Per message: parse (``bedside.hl7.messages.parse``: python-hl7 + our checks, about 1.3 ms, in the event loop;
with ``CentralSettings.strict`` hl7apy's v2.6 validation first, 20-35 ms), check the bed (known, and the
one this connection is bound to), store it in central.db, and only then answer ``AA``. A control id seen
before is answered ``AA`` again and stored once. A malformed message, or one from an unknown bed, is answered ``AR`` with
the reason and logged in ``rejects``. A database failure is answered ``AE`` (the bed keeps the message
and sends it again).

Throughput: messages from all connections go on one queue; one writer stores whatever has queued up in
one transaction (group commit, one fsync per batch) on a single database thread, then releases all
their ACKs. The event loop never waits for the disk.

Beds are known from an allow-list (``CentralSettings.beds``, the CLI's ``--bed``/``--beds FILE``),
persisted in central.db. First-contact registration (``register_on_contact``) is off by default. With
TLS (``TlsSettings``) every bed must present a client certificate signed by ``client_ca``, and its
subject CN must equal the bed id in each message (MSH-3 / PV1-3).

A bed from which nothing was stored for ``silent_s`` seconds (connected or not, and a known bed that
never connected since the central started) raises the central's own technical alarm ``bed_silent``;
its next message clears it. A gap in a bed's MSH-13 sequence (messages it sent that never arrived:
dropped at its outbox's bound, or lost) raises ``messages_missing`` for the rest of that bed's session
(counted in ``beds.missing_messages`` and :attr:`Counters.missing`, logged).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bedside.central.store import CentralStore, CentralStoreError, Received
from bedside.hl7 import messages, mllp
from bedside.hl7.model import Envelope

log = logging.getLogger(__name__)

#: The IANA-registered port of HL7 over MLLP.
DEFAULT_PORT = 2575


@dataclass(frozen=True)
class TlsSettings:
    """Server certificate and key (PEM), and the CA (PEM) whose signature a bed's client certificate needs."""

    cert: Path
    key: Path
    client_ca: Path


@dataclass(frozen=True)
class CentralSettings:
    """Everything `bedside central` configures; parsed once by the CLI."""

    db: str
    host: str = "127.0.0.1"  # loopback unless told otherwise: HL7 carries patient data
    port: int = DEFAULT_PORT  # 0: any free port (tests)
    beds: frozenset[str] = field(default_factory=frozenset)  # allow-list
    register_on_contact: bool = False  # accept (and remember) a bed that is not on the list
    silent_s: float = 30.0  # seconds without a message before ``bed_silent``
    tls: TlsSettings | None = None
    batch_max: int = 512  # messages per transaction at most
    strict: bool = False  # validate each message with hl7apy against the v2.6 structures too (~30 ms CPU each)


def load_bed_list(path: str | Path) -> list[str]:
    """Bed ids from a text file: one per line, ``#`` starts a comment, blank lines ignored."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"{p}: cannot read the bed list: {exc}") from exc
    beds = [line.split("#", 1)[0].strip() for line in text.splitlines()]
    beds = [b for b in beds if b]
    bad = [b for b in beds if any(c.isspace() or c in "|^~\\&" for c in b)]
    if bad:
        raise ValueError(f"{p}: bed ids {', '.join(map(repr, bad[:3]))} contain spaces or HL7 delimiters (|^~\\&)")
    if not beds:
        raise ValueError(f"{p}: no bed ids (write one per line, e.g. bed-1)")
    return beds


def server_ssl_context(tls: TlsSettings) -> ssl.SSLContext:
    """TLS 1.2+ server context that requires a client certificate signed by ``tls.client_ca``."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(str(tls.cert), str(tls.key))
        ctx.load_verify_locations(cafile=str(tls.client_ca))
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"TLS files refused ({tls.cert}, {tls.key}, {tls.client_ca}): {exc}. Give PEM files: "
                         "the central's certificate and key, and the CA that signed the beds' certificates") from exc
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def certificate_cn(peercert: dict[str, Any] | None) -> str | None:
    """The subject commonName of a verified peer certificate (``ssl.SSLSocket.getpeercert()``)."""
    for rdn in (peercert or {}).get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return None


def _ack(text: str, code: str, reason: str = "") -> str:
    """An ACK for ``text``; for bytes that are not even an MSH segment, an ACK naming no control id."""
    return messages.ack(text if text.startswith("MSH|") else "", code, reason)


@dataclass
class Counters:
    """What the server did since it started (for logs, the benchmark and tests)."""

    connections: int = 0
    stored: int = 0
    duplicates: int = 0
    rejected: int = 0
    errors: int = 0
    batches: int = 0
    missing: int = 0  # messages missing from the beds' MSH-13 sequences (gaps)


class CentralServer:
    """``await start()`` binds and returns (host, port); ``await stop()`` closes; the database is central.db."""

    def __init__(self, settings: CentralSettings, *, clock: Any = time.time):
        self.settings = settings
        self.clock = clock
        self.counters = Counters()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="central-db")
        self.store: CentralStore | None = None
        self._queue: asyncio.Queue[tuple[Received, asyncio.Future[bool]]] | None = None
        self._server: asyncio.base_events.Server | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._last_seen: dict[str, float] = {}
        self._links: dict[str, int] = {}  # bed -> open connections that carried its messages
        self._known: set[str] = set()
        self._writers: set[asyncio.StreamWriter] = set()  # open connections (closed by stop())

    async def _db(self, fn: Any, *args: Any) -> Any:
        """Run a store call on the one database thread."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    async def start(self) -> tuple[str, int]:
        s = self.settings
        now = self.clock()
        ctx = server_ssl_context(s.tls) if s.tls is not None else None
        self.store = await self._db(CentralStore, s.db)
        await self._db(self.store.register_beds, sorted(s.beds), "allow-list", now)
        await self._db(self.store.mark_all_disconnected, now)
        self._known = await self._db(self.store.known_beds)
        seen = await self._db(self.store.last_seen)
        self._last_seen = {bed: (t if t is not None else now) for bed, t in seen.items()}
        self._queue = asyncio.Queue()
        self._server = await asyncio.start_server(self._handle, s.host, s.port, ssl=ctx, limit=mllp_limit())
        self._tasks = [asyncio.create_task(self._writer(), name="central-writer"),
                       asyncio.create_task(self._watch_silence(), name="central-silence")]
        host, port = self._server.sockets[0].getsockname()[:2]
        log.info("central listening on %s:%s (%s), %d known beds", host, port, "TLS" if ctx else "plain TCP",
                 len(self._known))
        return host, port

    async def serve_forever(self) -> None:
        assert self._server is not None, "start() first"
        await self._server.serve_forever()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for w in list(self._writers):  # the beds keep what was not acknowledged and send it again
            w.close()
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.store is not None:
            await self._db(self.store.close)
        self._pool.shutdown(wait=True)

    # -- storing -------------------------------------------------------------------------------------

    async def _writer(self) -> None:
        """Group commit: store everything queued in one transaction, then release the waiting ACKs."""
        assert self._queue is not None and self.store is not None
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self.settings.batch_max and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                results = await self._db(self.store.commit, [item for item, _ in batch])
            except CentralStoreError as exc:
                log.error("%s", exc)
                self.counters.errors += len(batch)
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            self.counters.batches += 1
            for gap in self.store.gaps:
                self.counters.missing += gap.count
                log.warning("bed %s: %d message(s) missing before this one (MSH-13 %d-%d; %d in this session): "
                            "messages_missing raised", gap.bed_id, gap.count, gap.first, gap.last, gap.session_missing)
            for (item, fut), new in zip(batch, results):
                self._last_seen[item.envelope.report.bed_id] = item.received_wall
                if new:
                    self.counters.stored += 1
                else:
                    self.counters.duplicates += 1
                if not fut.done():
                    fut.set_result(new)

    async def _watch_silence(self) -> None:
        """Raise ``bed_silent`` for each known bed with nothing stored for ``silent_s`` seconds."""
        assert self.store is not None
        period = min(1.0, self.settings.silent_s / 4)
        while True:
            await asyncio.sleep(period)
            now = self.clock()
            for bed in sorted(self._known):
                last = self._last_seen.setdefault(bed, now)
                if now - last >= self.settings.silent_s:
                    if await self._db(self.store.raise_silent, bed, now - last, now):
                        log.warning("bed %s silent for %.0f s", bed, now - last)

    # -- one connection ------------------------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = ":".join(str(p) for p in (writer.get_extra_info("peername") or ("?",))[:2])
        cert_bed = certificate_cn(writer.get_extra_info("peercert")) if self.settings.tls else None
        bound: str | None = None
        self.counters.connections += 1
        self._writers.add(writer)
        try:
            while True:
                try:
                    text = await mllp.read_message(reader)
                except (mllp.MllpError, asyncio.IncompleteReadError, ConnectionError, ssl.SSLError) as exc:
                    if not isinstance(exc, (asyncio.IncompleteReadError, ConnectionError)):
                        await self._reject(peer, f"MLLP framing: {exc}", "", None, None)
                    break
                if text is None:
                    break
                reply, bed = await self._one(text, peer, cert_bed, bound)
                if bed is not None and bound is None:
                    bound = bed
                    self._links[bed] = self._links.get(bed, 0) + 1
                    await self._db(self.store.set_link, bed, "connected", peer, self.clock())
                await mllp.write_message(writer, reply)
        except (ConnectionError, ssl.SSLError, asyncio.CancelledError):
            pass
        except RuntimeError:  # the database thread was shut down by stop() while this bed was sending
            pass
        finally:
            self._writers.discard(writer)
            if bound is not None:
                self._links[bound] -= 1
                if self._links[bound] == 0 and self.store is not None:
                    try:
                        await self._db(self.store.set_link, bound, "disconnected", peer, self.clock())
                    except RuntimeError:  # the database thread is already shut down (stop())
                        pass
            writer.close()

    async def _one(self, text: str, peer: str, cert_bed: str | None, bound: str | None) -> tuple[str, str | None]:
        """(ACK, the bed this message binds the connection to) for one received message."""
        try:  # in the event loop: about 1.3 ms a message (strict: 20-35 ms, hl7apy)
            env: Envelope = messages.parse(text, strict=self.settings.strict)
        except messages.Hl7Error as exc:
            return await self._reject(peer, f"malformed message: {exc}", text, None, None), None
        except Exception:  # a bug in reading, not the bed's fault: AE keeps the message in its outbox
            log.exception("reading a message from %s failed; answered AE (the bed sends it again)", peer)
            self.counters.errors += 1
            return _ack(text, "AE", "central could not read the message (internal error); send again"), None
        bed = env.report.bed_id
        reason = self._refusal(bed, cert_bed, bound)
        if reason == "register":
            await self._db(self.store.register_beds, [bed], "first-contact", self.clock())
            self._known.add(bed)
            log.warning("bed %s registered on first contact from %s", bed, peer)
        elif reason:
            return await self._reject(peer, reason, text, bed, env.control_id), None
        fut: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        await self._queue.put((Received(env, peer, self.clock()), fut))
        try:
            await fut
        except CentralStoreError:
            return _ack(text, "AE", "central database write failed; send again"), bed
        return _ack(text, "AA"), bed

    def _refusal(self, bed: str, cert_bed: str | None, bound: str | None) -> str:
        """Why a message from ``bed`` is refused ("" when accepted, "register" to register it first)."""
        if self.settings.tls is not None and cert_bed != bed:
            return f"certificate is for bed {cert_bed!r} but the message is from bed {bed!r}"
        if bound is not None and bed != bound:
            return f"this connection carries bed {bound!r}; open another connection for bed {bed!r}"
        if bed not in self._known:
            if self.settings.register_on_contact:
                return "register"
            return f"unknown bed {bed!r}: add it to the central's --beds list"
        return ""

    async def _reject(self, peer: str, reason: str, text: str, bed: str | None, control_id: str | None) -> str:
        self.counters.rejected += 1
        log.warning("rejected a message from %s: %s", peer, reason)
        await self._db(self.store.reject, peer, reason, text, bed, control_id, self.clock())
        return _ack(text, "AR", reason)


def mllp_limit() -> int:
    """StreamReader buffer limit: room for the largest message MLLP accepts."""
    return max(2**16, getattr(mllp, "MAX_MESSAGE_BYTES", 2**20) + 16)


async def run_central(settings: CentralSettings, stop: asyncio.Event | None = None,
                      ready: Any = None) -> Counters:
    """Serve until ``stop`` is set (or forever); ``ready(host, port)`` is called once bound."""
    server = CentralServer(settings)
    host, port = await server.start()
    if ready is not None:
        ready(host, port)
    try:
        if stop is None:
            await server.serve_forever()
        else:
            await stop.wait()
    finally:
        await server.stop()
    return server.counters
