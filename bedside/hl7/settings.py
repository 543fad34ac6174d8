"""Settings of the bed's HL7 link (``--hl7 HOST:PORT``), parsed once at the command line.

Light on purpose (no HL7 library): ``bedside --help`` imports it.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

#: A replay waits up to this long at its end for the central to accept what is still waiting (s).
REPLAY_DRAIN_S = 30.0


@dataclass(frozen=True)
class OutboxSettings:
    """How much may wait for the central station."""

    max_messages: int = 20_000  # per bed; about 27 h of observations at a 5 s hop (about 2.5 kB each)
    warn_fraction: float = 0.5  # central_unreachable once the backlog reaches this share of the bound

    def __post_init__(self) -> None:
        if self.max_messages < 10:
            raise ValueError(f"max_messages={self.max_messages}: must be at least 10")
        if not 0 < self.warn_fraction < 1:
            raise ValueError(f"warn_fraction={self.warn_fraction}: must lie between 0 and 1 (exclusive)")

    @property
    def warn_messages(self) -> int:
        return max(1, int(self.max_messages * self.warn_fraction))


@dataclass(frozen=True)
class Hl7TlsSettings:
    """TLS to the central (``bedside central --tls-*``): the bed's client certificate and key (PEM; the
    certificate's subject CN must be the bed id) and the CA (PEM) that signed the central's certificate."""

    cert: Path
    key: Path
    ca: Path


@dataclass(frozen=True)
class Hl7Settings:
    """Where the bed's HL7 messages go and how hard it tries."""

    host: str
    port: int
    outbox: OutboxSettings = field(default_factory=OutboxSettings)
    backoff_s: float = 0.5  # first retry delay, doubled after each failure ...
    max_backoff_s: float = 30.0  # ... up to this
    timeout_s: float = 10.0  # connect, and wait for each ACK
    drain_s: float = 0.0  # on close, wait up to this long for the outbox to empty (a replay: REPLAY_DRAIN_S)
    tls: Hl7TlsSettings | None = None  # None: plain TCP


def parse_target(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6addr]:PORT`` for IPv6) -> (host, port); ValueError saying what to write."""
    m = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:(\d{1,5})|([^:\s\[\]]+):(\d{1,5})", text.strip())
    if not m:
        raise ValueError(f"{text!r}: expected HOST:PORT of the central station, e.g. central.ward:2575")
    host, port = (m.group(1), m.group(2)) if m.group(1) else (m.group(3), m.group(4))
    if not 0 < int(port) < 65536:
        raise ValueError(f"{text!r}: port {port} must be 1-65535")
    return host, int(port)


def hl7_callback(ctx: Any, param: Any, value: str | None) -> Hl7Settings | None:
    """click callback for ``--hl7``: Hl7Settings (a replay drains for REPLAY_DRAIN_S at its end), or None."""
    import click

    if value is None or not value.strip():
        return None
    try:
        host, port = parse_target(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc
    drain = REPLAY_DRAIN_S if ctx is not None and ctx.info_name == "replay" else 0.0
    return Hl7Settings(host=host, port=port, drain_s=drain)


def with_tls(hl7: Hl7Settings | None, cert: str | None, key: str | None, ca: str | None) -> Hl7Settings | None:
    """``hl7`` with TLS from ``--hl7-tls-cert/--hl7-tls-key/--hl7-tls-ca`` (all three, or none); the files are
    loaded once here so that a wrong one is refused at the command line. click.UsageError/BadParameter."""
    import click

    given = {"--hl7-tls-cert": cert, "--hl7-tls-key": key, "--hl7-tls-ca": ca}
    if not any(given.values()):
        return hl7
    if hl7 is None:
        raise click.UsageError(f"{', '.join(k for k, v in given.items() if v)} without --hl7 HOST:PORT: give the "
                               "central station's address too")
    missing = [k for k, v in given.items() if not v]
    if missing:
        raise click.UsageError(f"TLS to the central needs all three of --hl7-tls-cert, --hl7-tls-key, --hl7-tls-ca; "
                               f"missing {', '.join(missing)}")
    tls = Hl7TlsSettings(Path(cert), Path(key), Path(ca))  # type: ignore[arg-type]
    from bedside.hl7.sender import client_ssl_context

    try:
        client_ssl_context(tls)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--hl7-tls-*") from exc
    return replace(hl7, tls=tls)


def hl7_tls_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Decorator for a bed command with ``--hl7``: adds ``--hl7-tls-cert/--hl7-tls-key/--hl7-tls-ca`` and folds
    them into its ``hl7`` argument (:func:`with_tls`)."""
    import click

    @functools.wraps(command)
    def wrapper(*args: Any, hl7_tls_cert: str | None = None, hl7_tls_key: str | None = None,
                hl7_tls_ca: str | None = None, **kwargs: Any) -> Any:
        kwargs["hl7"] = with_tls(kwargs.get("hl7"), hl7_tls_cert, hl7_tls_key, hl7_tls_ca)
        return command(*args, **kwargs)

    path = click.Path(exists=True, dir_okay=False)
    for name, env, text in reversed((
            ("--hl7-tls-cert", "BEDSIDE_HL7_TLS_CERT", "This bed's TLS client certificate (PEM; CN = the bed id)"),
            ("--hl7-tls-key", "BEDSIDE_HL7_TLS_KEY", "Its private key (PEM)"),
            ("--hl7-tls-ca", "BEDSIDE_HL7_TLS_CA", "CA (PEM) that signed the central's certificate; the central is "
                                                   "verified against it and its host name"))):
        wrapper = click.option(name, envvar=env, type=path, default=None, help=f"{text} [env {env}].")(wrapper)
    return wrapper
