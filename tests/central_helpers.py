"""Helpers of the central tests: reports, an MLLP client, a central server running in a thread."""

from __future__ import annotations

import asyncio
import sqlite3
import ssl
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bedside.central.server import CentralServer, CentralSettings
from bedside.hl7 import messages, mllp
from bedside.hl7.model import AlarmReport, Envelope, ObservationReport
from tests.engine_helpers import wait_until

T0 = 1_760_000_000.0
LABELS = ("edema", "pleural_effusion", "cardiomegaly")
THRESHOLDS = {"edema": 0.55, "pleural_effusion": 0.5, "cardiomegaly": 0.6}


def alarm(bed: str, seq: int, *, alarm_name: str = "edema", state: str = "active", previous: str | None = None,
          priority: str = "high", kind: str = "physiological", session: int = 1, text: str = "") -> AlarmReport:
    return AlarmReport(bed_id=bed, session_id=session, seq=seq, alarm=alarm_name, kind=kind, priority=priority,
                       state=state, previous=previous, cause="condition",
                       text=text or f"{alarm_name} {state}", t_s=5.0 * seq, wall_time=T0 + seq, score=0.7,
                       threshold=0.55)


def observation(bed: str, index: int, *, hr: float | None = 72.0, risks: dict[str, float] | None = None,
                session: int = 1, scored: bool = True) -> ObservationReport:
    risks = risks if risks is not None else {"edema": 0.2, "pleural_effusion": 0.1, "cardiomegaly": 0.3}
    return ObservationReport(bed_id=bed, session_id=session, window_index=index, t_s=5.0 * index,
                             wall_time=T0 + index, scored=scored, reason="" if scored else "lead_off", hr_bpm=hr,
                             sqi_min=0.9, risks=risks, thresholds=dict(THRESHOLDS),
                             validated={k: True for k in LABELS})


_counter = iter(range(1, 10**9))
_bed_seq: dict[str, int] = {}


def rows(db: Any, sql: str, *args: Any) -> list[tuple]:
    """The rows of one query on the SQLite file ``db`` (a fresh connection, closed after)."""
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


def envelope(report: Any, control_id: str | None = None) -> Envelope:
    """A report with a fresh control id and the next MSH-13 of its bed (1, 2, ... per bed: no gaps)."""
    n = next(_counter)
    seq = _bed_seq[report.bed_id] = _bed_seq.get(report.bed_id, 0) + 1
    return Envelope(control_id=control_id or f"c{n:08d}", bed_seq=seq, report=report)


def make_pki(folder: Path, names: tuple[str, ...] = ("localhost", "bed-1", "bed-2"), ca_name: str = "ward CA",
             prefix: str = "") -> Path:
    """A CA (``{prefix}ca.pem``/``.key``) and a certificate signed by it for each name (CN = the name;
    "localhost" also as DNS name), PEM files ``{prefix}{name}.pem``/``.key`` in ``folder``."""
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    def cert(name: str, issuer_key: Any, issuer: Any, key: Any, ca: bool = False) -> Any:
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = dt.datetime.now(dt.timezone.utc)
        b = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer or subject)
             .public_key(key.public_key()).serial_number(x509.random_serial_number())
             .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
             .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if name == "localhost":
            b = b.add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        return b.sign(issuer_key, hashes.SHA256())

    def write(name: str, key: Any, c: Any) -> None:
        (folder / f"{prefix}{name}.key").write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        (folder / f"{prefix}{name}.pem").write_bytes(c.public_bytes(serialization.Encoding.PEM))

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = cert(ca_name, ca_key, None, ca_key, ca=True)
    write("ca", ca_key, ca)
    for name in names:
        key = ec.generate_private_key(ec.SECP256R1())
        write(name, key, cert(name, ca_key, ca.subject, key))
    return folder


async def exchange(host: str, port: int, texts: list[str], ssl_ctx: ssl.SSLContext | None = None,
                   raw: bytes | None = None) -> list[tuple[str, str, str]]:
    """Send each message and read its ACK on one connection; (control id, code, reason) per ACK."""
    reader, writer = await asyncio.open_connection(host, port, ssl=ssl_ctx,
                                                   server_hostname="localhost" if ssl_ctx else None)
    out = []
    try:
        if raw is not None:
            writer.write(raw)
            await writer.drain()
        for text in texts:
            await mllp.write_message(writer, text)
            reply = await asyncio.wait_for(mllp.read_message(reader), 30)
            if reply is None:
                break
            out.append(messages.read_ack(reply))
    finally:
        writer.close()
    return out


def send(host: str, port: int, envs: list[Envelope | str], **kw: Any) -> list[tuple[str, str, str]]:
    texts = [e if isinstance(e, str) else messages.build(e) for e in envs]
    return asyncio.run(exchange(host, port, texts, **kw))


@dataclass
class ServerThread:
    """A CentralServer on its own event loop in a thread (the test talks to it over TCP)."""

    settings: CentralSettings
    address: tuple[str, int] = ("", 0)
    server: CentralServer | None = None
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None
    _ready: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None

    def __enter__(self) -> "ServerThread":
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        assert self._ready.wait(20), "central did not start"
        if self.error:
            raise self.error
        return self

    def _run(self) -> None:
        self._loop = asyncio.new_event_loop()
        try:
            self.server = CentralServer(self.settings)
            self.address = self._loop.run_until_complete(self.server.start())
        except BaseException as exc:  # noqa: BLE001 - reported to the test
            self.error = exc
            self._ready.set()
            return
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(self.server.stop())
        self._loop.close()

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self.error is None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(20)

    def wait_for(self, predicate: Any, timeout_s: float = 10.0) -> bool:
        return wait_until(predicate, timeout_s)


def ward_scene(db_path: Any, n_beds: int = 10) -> float:
    """A central.db with ``n_beds`` beds in fixed, varied states; returns the frozen 'now' to draw it at."""
    from bedside.central.store import CentralStore, Received

    store = CentralStore(db_path)
    beds = [f"bed-{i:02d}" for i in range(1, n_beds + 1)]
    store.register_beds(beds, "allow-list", T0)
    batch = []
    for i, bed in enumerate(beds):
        if i == 9:
            continue  # never linked
        risks = {"edema": 0.1 + 0.07 * i, "pleural_effusion": 0.05 * i, "cardiomegaly": 0.3 + 0.02 * i}
        batch.append(envelope(observation(bed, 1, hr=60.0 + 3 * i, risks=risks)))
    batch += [envelope(alarm("bed-03", 1)),  # high, active
              envelope(alarm("bed-05", 1, alarm_name="lead_off", kind="technical", priority="medium")),
              envelope(alarm("bed-07", 1, alarm_name="hr_high", priority="medium")),
              envelope(alarm("bed-07", 2, alarm_name="hr_high", priority="medium", state="ACKNOWLEDGED",
                             previous="active")),
              envelope(alarm("bed-08", 1, alarm_name="cardiomegaly")),
              envelope(alarm("bed-08", 2, alarm_name="poor_signal", kind="technical", priority="low")),
              envelope(alarm("bed-02", 1, alarm_name="poor_signal", kind="technical", priority="low"))]
    store.commit([Received(e, "127.0.0.1:5000", T0 + 20) for e in batch])
    for bed in beds[:8]:
        store.set_link(bed, "connected", "127.0.0.1:5000", T0 + 1)
    store.set_link("bed-09", "disconnected", "127.0.0.1:5009", T0 + 2)
    store.raise_silent("bed-09", 42.0, T0 + 30)
    store.raise_silent("bed-10", 42.0, T0 + 30)
    store.close()
    return T0 + 33.0
