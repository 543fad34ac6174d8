"""``devices``: the simulator and the port probe (click). A thin layer over the library."""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from collections import Counter

import click

from bedside.errors import BedsideError
from devices.errors import DeviceError
from devices.faults import SPEC_LINES, parse_faults
from devices.protocols import PROTOCOL_NAMES, check_lead_map, get_protocol


def _lead_map(text: str | None) -> tuple[str, ...] | None:
    if not text:
        return None
    try:
        return check_lead_map([t.strip() for t in text.split(",")])
    except DeviceError as exc:
        raise click.BadParameter(str(exc), param_hint="--lead-map") from None


#: Longest synthetic ECG generated; longer streams repeat it.
SYNTHETIC_PERIOD_S = 300.0


@click.group()
def main() -> None:
    """Serial ECG acquisition: simulate a board, probe a port."""


@main.command(epilog="\b\n" + SPEC_LINES)
@click.option("--protocol", type=click.Choice(PROTOCOL_NAMES), required=True, help="board protocol to speak")
@click.option("--record", type=click.Path(dir_okay=False), help="WFDB record (path without extension)")
@click.option("--synthetic", is_flag=True, help="stream a synthetic 12-lead ECG instead of a record")
@click.option("--pty", "use_pty", is_flag=True, help="serve on a new pseudo-terminal (its path is printed)")
@click.option("--tcp", "tcp_port", type=click.IntRange(0, 65535), help="serve on TCP PORT (0: any free port)")
@click.option("--speed", type=click.FloatRange(min=0.0, min_open=True), default=1.0, show_default=True,
              help="playback speed, 1 = real time")
@click.option("--faults", default="", help="faults to inject (see below)")
@click.option("--loop", is_flag=True, help="repeat the source forever (sample indices keep counting)")
@click.option("--link", type=click.Path(dir_okay=False), help="keep a symlink here to the current pty, "
              "as udev keeps /dev/serial/by-id links (it moves when a disconnect fault reopens the pty)")
@click.option("--start", "start_s", type=click.FloatRange(min=0.0), default=0.0, help="record offset, seconds")
@click.option("--duration", "duration_s", type=click.FloatRange(min=0.0, min_open=True),
              help="seconds of the source to stream (synthetic: default 60; beyond 300 s its first 300 s repeat)")
@click.option("--seed", type=int, default=0, show_default=True, help="seed of the synthetic ECG")
@click.option("--gain", type=int, help="PGA gain the board is set to (default: the board's default)")
@click.option("--lead-map", help="leads on CH1..CH8, comma-separated (default I,II,V1,V2,V3,V4,V5,V6)")
@click.option("--autostart", is_flag=True, help="stream at once instead of waiting for the start command 'b'")
@click.option("--host", default="127.0.0.1", show_default=True, help="TCP address to listen on")
@click.option("--serial", "serial_no", default=None,
              help="the board's serial number, in its answer to 'v' (ads1298; docs/protocol-ads1298.md) "
                   "[default: devices.simulator.DEFAULT_SERIAL]")
def simulate(protocol: str, record: str | None, synthetic: bool, use_pty: bool, tcp_port: int | None,
             speed: float, faults: str, loop: bool, link: str | None, start_s: float, duration_s: float | None,
             seed: int, gain: int | None, lead_map: str | None, autostart: bool, host: str, serial_no: str) -> None:
    """Stream a record or a synthetic ECG as a board would, byte for byte.

    The first stdout line is the address to open (the pty path, the --link path, or
    socket://HOST:PORT); a JSON summary of what became of every frame follows when the stream
    ends (end of source, Ctrl-C or SIGTERM). Like the real board, streaming starts when the
    host sends 'b' and pauses on 's'.
    """
    from devices.simulator import DEFAULT_SERIAL, Board, Simulator
    from devices.sources import record_signal, synthetic_signal

    if bool(record) == synthetic:
        raise click.UsageError("give exactly one source: --record RECORD or --synthetic")
    if use_pty == (tcp_port is not None):
        raise click.UsageError("give exactly one port: --pty or --tcp PORT")
    if link and not use_pty:
        raise click.UsageError("--link applies to --pty only")
    spec = get_protocol(protocol)
    leads = _lead_map(lead_map) or spec.default_leads
    try:
        fault_spec = parse_faults(faults)
        n_frames = None
        if record:
            sig = record_signal(record, spec.fs_hz, leads, start_s, duration_s)
        else:  # a long synthetic stream repeats its first SYNTHETIC_PERIOD_S (memory stays small)
            seconds = duration_s or 60.0
            sig = synthetic_signal(spec.fs_hz, leads, min(seconds, SYNTHETIC_PERIOD_S), seed=seed)
            n_frames = int(round(seconds * spec.fs_hz))
        board = Board(spec, sig, fault_spec, gain=gain, loop=loop, n_frames=n_frames)
    except (BedsideError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    sim = Simulator(board, transport="pty" if use_pty else "tcp", tcp_port=tcp_port or 0, host=host,
                    link=link, speed=speed, autostart=autostart, keep_status=False, serial=serial_no or DEFAULT_SERIAL)
    try:
        address = sim.start()
    except OSError as exc:
        raise click.ClickException(f"cannot open the {'pty' if use_pty else f'TCP port {tcp_port}'}: {exc}") from None
    click.echo(address)
    sys.stdout.flush()
    done = threading.Event()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: done.set())
    try:
        while not done.is_set() and not sim.wait(0.2):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        sim.stop()
    summary = {"source": sig.name, "protocol": protocol, "frames_due": sum(
        v for k, v in sim.report().items() if k not in ("garbage_bytes", "bytes_sent", "disconnects", "commands"))}
    summary.update(sim.report())
    click.echo(json.dumps(summary))


@main.command()
@click.argument("url")
@click.option("--protocol", type=click.Choice(PROTOCOL_NAMES), help="skip identification")
@click.option("--baudrate", type=int, help="baud rate (default: each protocol's own while identifying)")
@click.option("--seconds", type=click.FloatRange(min=0.0), help="stop after this long (default: until Ctrl-C)")
@click.option("--listen", type=click.FloatRange(min=0.1), default=1.5, show_default=True,
              help="seconds of bytes used to identify the protocol")
@click.option("--no-start", is_flag=True, help="do not send the start command 'b' while identifying")
@click.option("--lead-map", help="leads on CH1..CH8, comma-separated")
def probe(url: str, protocol: str | None, baudrate: int | None, seconds: float | None, listen: float,
          no_start: bool, lead_map: str | None) -> None:
    """Open URL, identify the protocol from its bytes, print live rates and error counts.

    URL is a device path (/dev/serial/by-id/...), loop://, socket://HOST:PORT or spy://...
    """
    from devices.driver import Driver
    from devices.probe import identify

    try:
        if protocol is None:
            ident = identify(url, baudrate, listen, send_start=not no_start)
            if ident.protocol is None:
                raise DeviceError(
                    f"no known protocol in {ident.bytes_read} bytes from {url} (consecutive frames found: "
                    f"{ident.scores}). Check the port, the baud rate (--baudrate), that the board is powered "
                    "and streaming, or name the protocol with --protocol")
            protocol = ident.protocol
            click.echo(f"{url}: {get_protocol(protocol).board} ({protocol}), found {ident.scores[protocol]} "
                       f"consecutive frames in {ident.bytes_read} bytes at {ident.baudrate} baud")
        spec = get_protocol(protocol)
        events: Counter[str] = Counter()
        lead_off: dict[str, bool | None] = {}

        def on_block(block) -> None:
            lead_off.update(block.lead_off)

        drv = Driver(url, protocol, on_block=on_block, on_event=lambda e: events.update([e.kind]),
                     baudrate=baudrate, lead_map=_lead_map(lead_map), reconnect=True)
        drv.start()
    except BedsideError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo("time_s  frames/s  device_Hz  drift_ppm  kB/s  received  lost  corrupt  resyncs  skipped_B  "
               "disconnects  leads_off")
    t0 = time.monotonic()
    prev = drv.counters
    try:
        while seconds is None or time.monotonic() - t0 < seconds:
            time.sleep(min(1.0, seconds - (time.monotonic() - t0)) if seconds is not None else 1.0)
            now, c = time.monotonic() - t0, drv.counters
            dt = 1.0
            rate = drv.measured_rate_hz
            off = ",".join(e for e, v in lead_off.items() if v) or ("-" if spec.carries_lead_off else "n/a")
            kbs = (c.bytes_received - prev.bytes_received) / dt / 1e3
            click.echo(f"{now:6.1f}  {(c.frames_received - prev.frames_received) / dt:8.1f}  {rate:9.2f}  "
                       f"{(rate / spec.fs_hz - 1) * 1e6:9.0f}  {kbs:4.1f}  "
                       f"{c.frames_received:8d}  {c.frames_lost:4d}  {c.frames_corrupt:7d}  {c.resyncs:7d}  "
                       f"{c.bytes_skipped:9d}  {c.disconnects:11d}  {off}")
            prev = c
    except KeyboardInterrupt:
        pass
    finally:
        drv.stop()
    c = drv.counters
    click.echo(json.dumps({"protocol": protocol, **c.as_dict(), "events": dict(events)}))


if __name__ == "__main__":
    main()
