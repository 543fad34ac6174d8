"""``bedside central``: the central station's command (imported only when it runs; see bedside/cli.py).

Options are parsed here once into :class:`~bedside.central.server.CentralSettings`; the server, the
terminal overview and the browser overview get plain values.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from bedside.cli_types import FiniteFloat

log = logging.getLogger(__name__)


def parse_host_port(text: str, option: str, default_port: int | None = None) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:2575`` for IPv6; ``HOST`` alone when there is a default port)."""
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = text, "" if default_port is None else str(default_port)
    host = host.strip("[]")
    if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise click.BadParameter(f"{text!r}: give HOST:PORT, for example 127.0.0.1:2575 (port 0: any free port)",
                                 param_hint=option)
    return host, int(port)


@click.command("central", short_help="Central station: every bed's HL7 alarms in one database and one screen.")
@click.option("--listen", default="127.0.0.1:2575", show_default=True, metavar="HOST:PORT",
              help="Where beds connect (MLLP). 0.0.0.0 only on a ward network, and then with --tls-*.")
@click.option("--db", envvar="BEDSIDE_CENTRAL_DB", default="central.db", show_default=True,
              help="The central's own database (SQLite) [env BEDSIDE_CENTRAL_DB].")
@click.option("--bed", "beds", multiple=True, metavar="ID", help="A bed allowed to report (repeat it).")
@click.option("--beds", "beds_file", type=click.Path(exists=True, dir_okay=False), metavar="FILE",
              help="Beds allowed to report: one id per line, # comments.")
@click.option("--register-beds", is_flag=True,
              help="Accept and remember a bed that is not on the list (first-contact registration; off by default).")
@click.option("--silent", "silent_s", type=FiniteFloat(min=0.5, max=86400), default=30.0, show_default=True,
              metavar="S", help="Seconds without a message from a bed before its `bed_silent` alarm.")
@click.option("--tls-cert", type=click.Path(exists=True, dir_okay=False), help="The central's TLS certificate (PEM).")
@click.option("--tls-key", type=click.Path(exists=True, dir_okay=False), help="Its private key (PEM).")
@click.option("--tls-client-ca", type=click.Path(exists=True, dir_okay=False),
              help="CA (PEM) that signed the beds' client certificates; each certificate's CN must be its bed id.")
@click.option("--strict", is_flag=True,
              help="Also validate every message against the HL7 v2.6 structures (hl7apy): about 30 ms of CPU a "
                   "message, so about 30 messages/s; for diagnosing a bed's messages.")
@click.option("--ui", is_flag=True, help="Show the overview in this terminal.")
@click.option("--web", default=None, metavar="HOST:PORT", help="Serve the overview to browsers (textual-serve).")
@click.option("--duration", type=FiniteFloat(min=0, max=10 * 365 * 86400, min_open=True), default=None,
              metavar="S", help="Stop after S seconds (tests, benchmarks).")
def central_command(listen: str, db: str, beds: tuple[str, ...], beds_file: str | None, register_beds: bool,
                    silent_s: float, tls_cert: str | None, tls_key: str | None, tls_client_ca: str | None,
                    strict: bool, ui: bool,
                    web: str | None, duration: float | None) -> None:
    """Central station: receive every bed's HL7 alarms and observations (MLLP), keep them in --db, show the ward.

    A message is acknowledged (AA) only once it is committed to --db; a repeat (same MSH-10) is
    acknowledged again and stored once; a malformed message or one from a bed not on the list is
    rejected (AR) with the reason. Prints `listening on HOST:PORT` when ready.
    """
    from bedside.central.server import CentralSettings, TlsSettings, load_bed_list

    host, port = parse_host_port(listen, "--listen")
    tls_parts = (tls_cert, tls_key, tls_client_ca)
    if any(tls_parts) and not all(tls_parts):
        raise click.UsageError("TLS needs all three: --tls-cert, --tls-key and --tls-client-ca")
    if ui and web:
        raise click.UsageError("give --ui (this terminal) or --web HOST:PORT (browsers), not both")
    allowed = set(beds)
    if beds_file:
        try:
            allowed.update(load_bed_list(beds_file))
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--beds") from exc
    if not allowed and not register_beds:
        click.echo("warning: no beds allowed (--bed ID, --beds FILE); every message is rejected until beds are "
                   "listed, unless --register-beds", err=True)
    tls = TlsSettings(Path(tls_cert), Path(tls_key), Path(tls_client_ca)) if all(tls_parts) else None
    settings = CentralSettings(db=db, host=host, port=port, beds=frozenset(allowed),
                               register_on_contact=register_beds, silent_s=silent_s, tls=tls,
                               strict=strict)
    web_address = parse_host_port(web, "--web") if web else None
    if ui or web_address:
        _serve_in_thread_and(settings, ui, web_address, duration)
    else:
        _serve(settings, duration)


def _ready(host: str, port: int) -> None:
    click.echo(f"listening on {host}:{port}")
    sys.stdout.flush()


def _serve(settings: object, duration: float | None) -> None:
    """Headless: serve until SIGTERM/SIGINT (or --duration)."""
    import asyncio
    import signal

    from bedside.central.server import run_central

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        if duration:
            loop.call_later(duration, stop.set)
        counters = await run_central(settings, stop, _ready)
        click.echo(f"stopped: {counters}", err=True)

    from bedside.errors import BedsideError

    try:
        asyncio.run(main())
    except (OSError, ValueError, BedsideError) as exc:
        raise click.ClickException(f"central cannot start: {exc}") from exc


def _serve_in_thread_and(settings: object, ui: bool, web: tuple[str, int] | None, duration: float | None) -> None:
    """The MLLP server in a thread; this thread runs the terminal overview or the web server."""
    import asyncio
    import threading

    from bedside.central.server import run_central

    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    started = threading.Event()
    failure: list[BaseException] = []

    def serve() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(run_central(settings, stop, lambda h, p: (_ready(h, p), started.set())))
        except BaseException as exc:  # noqa: BLE001 - reported below
            failure.append(exc)
            started.set()

    thread = threading.Thread(target=serve, name="central-server", daemon=True)
    thread.start()
    started.wait(30)
    if failure:
        raise click.ClickException(f"central cannot start: {failure[0]}")
    if duration:
        threading.Timer(duration, lambda: _interrupt_main()).start()
    try:
        if ui:
            from bedside.central.overview import run_overview

            code = run_overview(settings.db)
        else:
            from bedside.central.web import serve_overview

            code = serve_overview(settings.db, *web)
    except KeyboardInterrupt:
        code = 0
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)
    sys.exit(code)


def _interrupt_main() -> None:
    import _thread

    _thread.interrupt_main()
