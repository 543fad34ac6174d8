"""``bedside``: replay a record, monitor a device, review the alarm log, verify a model bundle.

A thin layer over the library (bedside.replay, bedside.monitor, bedside.store): options are parsed
here once and passed down as plain values; every user error is a ClickException with the fix.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import re
import signal
import sys
import threading
import time
from datetime import datetime
from typing import Any

import click

from bedside import __version__
from bedside.cli_trust import trust_options, trust_settings, unsigned_warning
from bedside.cli_types import MAX_SQLITE_INT, FiniteFloat
from bedside.errors import BedsideError
from bedside.hl7.settings import hl7_callback, hl7_tls_options
from bedside.telemetry import disable_telemetry

ENV_HELP = "Environment variables: BEDSIDE_MODEL, BEDSIDE_DB, BEDSIDE_BED, BEDSIDE_ALARMS."


#: ``bedside verify``'s line in ``bedside --help``, so that listing it imports nothing (bedside.verify pulls
#: in numpy, scipy and onnxruntime); tests/test_runtime_imports.py checks it matches the command's own.
VERIFY_SHORT_HELP = "Verify a model bundle: file, checksum, signature, runtime, schema and golden output."


class _LazyVerify(click.Command):
    """Stands for ``verify`` in the command list; bedside.verify is imported only when it runs or shows help."""

    def __init__(self) -> None:
        super().__init__("verify", short_help=VERIFY_SHORT_HELP, help=VERIFY_SHORT_HELP)

    @staticmethod
    def load() -> click.Command:
        try:
            from bedside.verify import verify_command
        except ImportError as exc:
            reason = str(exc)  # `exc` is unbound once the except block ends

            @click.command("verify", help="Verify a model bundle (not installed).")
            def missing() -> None:
                raise click.ClickException(f"bedside verify is not installed ({reason})")
            return missing
        return verify_command

    def make_context(self, info_name: str | None, args: list[str], parent: click.Context | None = None,
                     **extra: Any) -> click.Context:
        return self.load().make_context(info_name, args, parent=parent, **extra)


class BedsideGroup(click.Group):
    """Adds ``verify`` from bedside.verify, imported only when it is run (not when it is listed)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), "verify", "central"})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name == "central":  # bedside.central.command imports only click; the server etc. load when it runs
            from bedside.central.command import central_command
            return central_command
        return _LazyVerify() if name == "verify" else super().get_command(ctx, name)


@click.group(cls=BedsideGroup, epilog=ENV_HELP)
@click.version_option(__version__, prog_name="bedside")
@click.option("-v", "--verbose", count=True, help="More log output on stderr (-v info, -vv debug).")
def main(verbose: int) -> None:
    """CroMoTEX bedside ECG early warning: edema, pleural effusion and cardiomegaly risk, heart rate."""
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _fail(exc: Exception) -> click.ClickException:
    return click.ClickException(str(exc))


def _ui_options(f: Any) -> Any:
    """--user and --leads: who acknowledges alarms on the screen, and which leads it draws."""
    f = click.option("--gain", "ui_gain", type=click.Choice(["auto", "5", "10", "20"]), default="auto",
                     show_default=True, help="Trace gain in --ui: auto, or fixed mm/mV (10 as on paper; "
                     "draws a 1 mV calibration pulse and a 1 s grid). The g key switches it.")(f)
    f = click.option("--leads", "ui_leads", default="II,V1,V5", show_default=True, metavar="II,V1,V5",
                     help="Leads drawn by --ui (canonical names, comma separated).")(f)
    f = click.option("--user", "ui_user", envvar="BEDSIDE_USER", default=None,
                     help="Who acknowledges alarms in --ui [default: $BEDSIDE_USER or the login name].")(f)
    return f


def _parse_leads(text: str) -> tuple[str, ...]:
    from bedside.leads import canonical_name

    leads = tuple(canonical_name(s) or s.strip() for s in text.split(",") if s.strip())
    bad = [name for name in leads if canonical_name(name) is None]
    if bad or not leads:
        raise click.BadParameter(f"{', '.join(bad) or 'no lead'}: give canonical lead names such as II,V1,V5",
                                 param_hint="--leads")
    return leads


def _parse_lead_map(text: str) -> tuple[str, ...]:
    """Canonical lead on each device channel; the 12 leads need I, II and V1-V6 among them."""
    from bedside.leads import INDEPENDENT_LEADS, canonical_name

    names = tuple(s.strip() for s in text.split(","))
    canon = {canonical_name(name) for name in names}
    missing = [lead for lead in INDEPENDENT_LEADS if lead not in canon]
    if missing:
        raise click.BadParameter(f"{text!r} lacks {', '.join(missing)}: the 12 leads are computed from I, II and "
                                 f"V1-V6, so name each channel, e.g. {','.join(INDEPENDENT_LEADS)}",
                                 param_hint="--lead-map")
    return names


def _run_ui(build: Any, opts: Any, audio: bool, bed_id: str, user: str | None = None,
            gain: str = "auto",
            leads: tuple[str, ...] = ("II", "V1", "V5")) -> None:
    """Hand the terminal UI a factory that builds the engine (in the UI's engine thread) and exit with its code."""
    try:
        from bedside.ui.app import run_ui
    except ImportError as exc:
        raise click.ClickException(f"the terminal UI is not installed ({exc}); run without --ui") from exc

    def factory() -> Any:
        engine = build(opts)
        _attach_audio(engine, audio)
        return engine
    sys.exit(run_ui(factory, bed_id=bed_id, leads=leads, user=user, audio=audio,
                    gain_mm_per_mv=None if gain == "auto" else float(gain)))


def _attach_audio(engine: Any, enabled: bool) -> Any:
    if not enabled:
        return None
    from bedside.audio import Annunciator

    annunciator = Annunciator(engine.config.audio)
    engine.subscribe(annunciator)
    annunciator.start()
    return annunciator


#: ``--hl7`` of ``replay`` and ``monitor``.
_hl7_option = click.option(
    "--hl7", "hl7", envvar="BEDSIDE_HL7", default=None, metavar="HOST:PORT", callback=hl7_callback,
    help="Send HL7 v2.6 (IHE PCD-01 observations, PCD-04 alarms) to the central station through the "
         "log's outbox; docs/hl7.md [env BEDSIDE_HL7].")


@main.command()
@click.argument("record", type=click.Path(path_type=str))
@click.option("--model", envvar="BEDSIDE_MODEL", type=click.Path(dir_okay=False), metavar="BUNDLE",
              help="Model bundle (.onnx) from `trainer export` [env BEDSIDE_MODEL].")
@click.option("--fast", is_flag=True, help="As fast as the machine allows (the default without --ui).")
@click.option("--speed", type=FiniteFloat(min=0, max=1000, min_open=True), metavar="X",
              help="Paced at X times real time (the default with --ui is 1).")
@click.option("--db", default="bedside.db", show_default=True, envvar="BEDSIDE_DB", help="Alarm log (SQLite).")
@click.option("--hop", "hop_s", type=FiniteFloat(min=0.1, max=3600), metavar="S",
              help="Seconds between analysis windows [default: the bundle's, 5].")
@click.option("--bed", "bed_id", default="replay", show_default=True, envvar="BEDSIDE_BED",
              help="Bed ID logged with the session (no patient identifiers).")
@click.option("--encounter", "encounter_id", default=None, help="Encounter ID logged with the session.")
@click.option("--alarms", envvar="BEDSIDE_ALARMS", type=click.Path(exists=True, dir_okay=False),
              help="Alarm settings TOML [default: the built-in bedside/alarms.toml].")
@click.option("--new-session", is_flag=True, help="Do not resume an interrupted replay of this record.")
@_hl7_option
@click.option("--audio/--no-audio", default=False, show_default=True, help="Sound alarms.")
@click.option("-q", "--quiet", is_flag=True, help="Only the summary, not each transition.")
@click.option("--ui", is_flag=True, help="Show the terminal monitor (bedside.ui).")
@_ui_options
@trust_options
@hl7_tls_options
def replay(record: str, model: str | None, fast: bool, speed: float | None, db: str, hop_s: float | None,
           bed_id: str, encounter_id: str | None, alarms: str | None, new_session: bool, audio: bool,
           quiet: bool, ui: bool, ui_user: str | None, ui_leads: str, ui_gain: str, trust_dir: Any, allow_unsigned: bool,
           hl7: Any = None) -> None:
    """Run the engine on a WFDB RECORD (path without extension) and log to --db.

    Prints each alarm transition as it is committed, then a summary: windows scored and not scored
    (and why), the transitions, and where they were logged.
    """
    from rich.console import Console

    from bedside.console import TransitionPrinter, lost_writes_message, print_summary
    from bedside.replay import ReplayOptions, build_replay_engine

    if fast and speed is not None:
        raise click.UsageError("give --fast or --speed X, not both")
    if not model:
        raise click.UsageError("no model bundle: pass --model BUNDLE.onnx (from `trainer export`) "
                               "or set BEDSIDE_MODEL")
    if ui and not fast and speed is None:
        speed = 1.0
    disable_telemetry()
    opts = ReplayOptions(record=record, model=model, db=db, speed=speed, hop_s=hop_s, bed_id=bed_id,
                         encounter_id=encounter_id, alarms=alarms, resume=not new_session,
                         trust=trust_settings(trust_dir, allow_unsigned), hl7=hl7)
    if ui:
        _run_ui(build_replay_engine, opts, audio, bed_id, ui_user, gain=ui_gain, leads=_parse_leads(ui_leads))
    try:
        engine = build_replay_engine(opts)
    except BedsideError as exc:
        raise _fail(exc) from exc
    err = Console(stderr=True)
    console = Console()
    unsigned = unsigned_warning(engine.bundle)
    if unsigned:
        click.echo(unsigned, err=True)
    if not quiet:
        engine.subscribe(TransitionPrinter())
    annunciator = _attach_audio(engine, audio)
    record_s = engine.source.record.duration_s
    try:
        with _Progress(err, record_s, engine):
            summary = engine.run()
    except BedsideError as exc:
        raise _fail(exc) from exc
    finally:
        engine.close()
        if annunciator is not None:
            annunciator.stop()
    print_summary(summary, console, f"Replay of {engine.source.description}: {record_s:.0f} s at "
                                    f"{engine.source.fs_hz:g} Hz, model {engine.bundle.version}, hop {engine.hop_s:g} s",
                  engine.bundle.unvalidated_labels)
    if unsigned:
        console.print(unsigned, markup=False, soft_wrap=True)
    lost = lost_writes_message(summary)
    if lost:
        raise click.ClickException(lost)


class _Progress:
    """A rich progress bar over signal time on stderr (only on a terminal)."""

    def __init__(self, console: Any, total_s: float, engine: Any):
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        self.progress = Progress(TextColumn("replay"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                                 TimeRemainingColumn(), console=console, transient=True,
                                 disable=not console.is_terminal)
        self.task = self.progress.add_task("replay", total=total_s)
        self.engine = engine

    def __call__(self, event: Any) -> None:
        t = getattr(event, "t_s", None)
        if t is not None and type(event).__name__ == "WindowResult":
            self.progress.update(self.task, completed=t)

    def __enter__(self) -> "_Progress":
        self.progress.start()
        self.unsubscribe = self.engine.subscribe(self)
        return self

    def __exit__(self, *exc: object) -> None:
        self.unsubscribe()
        self.progress.stop()


@main.command()
@click.option("--port", envvar="BEDSIDE_PORT", required=True,
              help="Device: /dev/serial/by-id/..., a pty path, socket://host:port, loop:// [env BEDSIDE_PORT].")
@click.option("--stable-port", is_flag=True, envvar="BEDSIDE_STABLE_PORT",
              help="--port is a udev symlink that only this board's tty can have: after a reconnect the monitor "
                   "may send the board's handshake there before its frames arrive (by-id links are stable "
                   "anyway; docs/install.md) [env BEDSIDE_STABLE_PORT].")
@click.option("--protocol", envvar="BEDSIDE_PROTOCOL", required=True,
              help="Wire format: cyton or ads1298 [env BEDSIDE_PROTOCOL].")
@click.option("--model", envvar="BEDSIDE_MODEL", type=click.Path(dir_okay=False), metavar="BUNDLE",
              help="Model bundle; if refused, monitoring goes on with a technical alarm [env BEDSIDE_MODEL].")
@click.option("--db", envvar="BEDSIDE_DB", default=None,
              help="Alarm log [default: $STATE_DIRECTORY/bedside.db under systemd, else bedside.db].")
@click.option("--bed", "bed_id", envvar="BEDSIDE_BED", default="bed-1", show_default=True, help="Bed ID.")
@click.option("--encounter", "encounter_id", default=None, help="Encounter ID logged with the session.")
@click.option("--baudrate", type=click.IntRange(300, 20_000_000), default=None, help="Serial speed [default: the protocol's].")
@click.option("--lead-map", default=None, metavar="I,II,V1,...",
              help="Canonical lead on each channel CH1..CHn [default: the protocol's].")
@click.option("--alarms", envvar="BEDSIDE_ALARMS", type=click.Path(exists=True, dir_okay=False),
              help="Alarm settings TOML [default: the built-in bedside/alarms.toml].")
@click.option("--hop", "hop_s", type=FiniteFloat(min=0.1, max=3600), help="Seconds between windows.")
@_hl7_option
@click.option("--trt-cache", "trt_cache_dir", envvar="CACHE_DIRECTORY", default=None,
              help="TensorRT engine cache [default: $CACHE_DIRECTORY under systemd].")
@click.option("--duration", type=FiniteFloat(min=0, max=10 * 365 * 86400, min_open=True), default=None, metavar="S",
              help="Stop after S seconds (tests, benchmarks).")
@click.option("--audio/--no-audio", default=True, show_default=True, help="Sound alarms.")
@click.option("-q", "--quiet", is_flag=True, help="Do not print each transition.")
@click.option("--ui", is_flag=True, help="Show the terminal monitor (bedside.ui).")
@_ui_options
@trust_options
@hl7_tls_options
def monitor(port: str, protocol: str, model: str | None, db: str | None, bed_id: str, encounter_id: str | None,
            baudrate: int | None, lead_map: str | None, alarms: str | None, hop_s: float | None,
            trt_cache_dir: str | None, duration: float | None, audio: bool, quiet: bool, ui: bool,
            ui_user: str | None, ui_leads: str, ui_gain: str, trust_dir: Any, allow_unsigned: bool,
            stable_port: bool = False, hl7: Any = None) -> None:
    """Run the engine live on a serial ECG device, headless (what bedside.service runs)."""
    from rich.console import Console

    from bedside.console import TransitionPrinter, lost_writes_message, print_summary
    from bedside.monitor import MonitorOptions, build_monitor_engine, default_db_path

    from devices.protocols import PROTOCOL_NAMES

    if not port.strip():
        raise click.UsageError("--port is empty: give the device path (/dev/serial/by-id/...), a pty or socket://HOST:PORT")
    if protocol not in PROTOCOL_NAMES:
        raise click.UsageError(f"--protocol {protocol!r} unknown; choose one of {', '.join(PROTOCOL_NAMES)}")
    if db is not None and not db.strip():
        raise click.UsageError("--db is empty: give the alarm log's file name (for example bedside.db), or leave "
                               "--db out for the default log")
    leads = _parse_lead_map(lead_map) if lead_map is not None else None
    disable_telemetry()
    opts = MonitorOptions(port=port, protocol=protocol, model=model, db=db or default_db_path(), bed_id=bed_id,
                          encounter_id=encounter_id, baudrate=baudrate, lead_map=leads, alarms=alarms,
                          hop_s=hop_s, trt_cache_dir=(trt_cache_dir or "").split(":")[0] or None,
                          trust=trust_settings(trust_dir, allow_unsigned), stable_port=stable_port, hl7=hl7)
    if ui:
        _run_ui(build_monitor_engine, opts, audio, bed_id, ui_user, gain=ui_gain, leads=_parse_leads(ui_leads))
    try:
        engine = build_monitor_engine(opts)
    except (BedsideError, ValueError) as exc:
        raise _fail(exc) from exc
    unsigned = unsigned_warning(engine.bundle)
    if unsigned:
        click.echo(unsigned, err=True)
    if not quiet:
        engine.subscribe(TransitionPrinter())
    annunciator = _attach_audio(engine, audio)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: engine.stop())
    timer = threading.Timer(duration, engine.stop) if duration else None
    if timer is not None:
        timer.daemon = True
        timer.start()
    try:
        summary = engine.run()
    except Exception as exc:  # a driver or port error: name it, exit non-zero (systemd restarts us)
        raise click.ClickException(f"monitor stopped: {type(exc).__name__}: {exc}") from exc
    finally:
        engine.close()
        if annunciator is not None:
            annunciator.stop()
        if timer is not None:
            timer.cancel()
    print_summary(summary, Console(), f"Monitor on {port} ({protocol}), bed {bed_id}",
                  engine.bundle.unvalidated_labels if engine.bundle is not None else ())
    if unsigned:
        Console().print(unsigned, markup=False, soft_wrap=True)
    lost = lost_writes_message(summary)
    if lost:
        raise click.ClickException(lost)


#: Latest time --since accepts as UNIX seconds (year 9999, the last datetime can show).
MAX_UNIX_S = 253402300799.0

_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhd])$")


def parse_since(text: str, now: float | None = None) -> float:
    """UNIX time from '2h' / '30m' / '1d' / '90s' (ago), an ISO 8601 date-time (local if no zone), or seconds."""
    now = time.time() if now is None else now
    m = _RELATIVE.match(text.strip())
    if m:
        return max(0.0, now - float(m.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)])
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        if math.isfinite(seconds) and 0 <= seconds <= MAX_UNIX_S:
            return seconds
        raise click.BadParameter(f"{text!r}: UNIX seconds must be a finite number from 0 to {MAX_UNIX_S:g}",
                                 param_hint="--since")
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        raise click.BadParameter(f"{text!r}: give a duration ago (90s, 30m, 2h, 1d), an ISO date-time "
                                 "(2025-01-31T08:00, local time unless it has a zone) or UNIX seconds",
                                 param_hint="--since") from None


@main.command()
@click.option("--db", envvar="BEDSIDE_DB", default="bedside.db", show_default=True, help="Alarm log (SQLite).")
@click.option("--since", default=None, help="Only transitions since: 2h, 30m, 1d, an ISO date-time or UNIX seconds.")
@click.option("--session", "session_id", type=click.IntRange(1, MAX_SQLITE_INT), default=None, help="Only this session.")
@click.option("--bed", "bed_id", default=None, help="Only this bed.")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json", "fhir"]), default="table", show_default=True,
              help="fhir: a FHIR R4 Bundle of the alarms and the analysed windows (docs/central.md).")
def alerts(db: str, since: str | None, session_id: int | None, bed_id: str | None, fmt: str) -> None:
    """Review and export the alarm transitions of a log."""
    from bedside.log_query import query_transitions

    if fmt == "fhir":
        from bedside.fhir import log_to_fhir

        try:
            click.echo(log_to_fhir(db, parse_since(since) if since else None, session_id, bed_id, now=time.time()))
        except (BedsideError, ImportError, ValueError) as exc:
            raise _fail(exc) from exc
        return
    try:
        rows = query_transitions(db, parse_since(since) if since else None, session_id, bed_id)
    except BedsideError as exc:
        raise _fail(exc) from exc
    if fmt == "json":
        click.echo(json.dumps(rows, indent=1))
    elif fmt == "csv":
        columns = list(rows[0]) if rows else ["utc", "bed_id", "session_id", "seq", "t_s", "alarm", "kind", "priority",
                                              "state", "previous", "cause", "score", "threshold", "who", "message"]
        writer = csv.DictWriter(sys.stdout, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    else:
        from rich.console import Console
        from rich.table import Table

        from bedside.events import Priority

        table = Table(title=f"Alarm transitions in {db} ({len(rows)})", show_edge=False)
        for col in ("time (UTC)", "bed", "session#", "kind", "prio", "alarm", "state", "message"):
            table.add_column(col, overflow="fold")
        for r in rows:
            kind = "PHYS" if r["kind"] == "physiological" else "TECH"
            who = f" [by {r['who']}]" if r["who"] else ""
            table.add_row(r["utc"][:19].replace("T", " "), r["bed_id"], f"{r['session_id']}#{r['seq']}", kind,
                          Priority(r["priority"]).marker, r["alarm"], r["state"], r["message"] + who)
        Console().print(table)


if __name__ == "__main__":
    main()
