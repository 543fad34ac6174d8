"""A simulated board: a signal quantised as the board would, framed byte for byte, with faults.

:class:`Board` does no I/O: it renders frames for any range of sample indices, and knows the
ground truth (the quantised codes converted back to mV with the same conversion the driver uses).
:func:`encode_stream` renders a whole stream to bytes for tests. :class:`Simulator` streams a
board over a pseudo-terminal or TCP in real time (or ``speed`` times faster), obeying the board's
start/stop commands, and records what became of every frame (:data:`STATUS_NAMES`).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import numpy as np

from devices.ads1298 import LEAD_INPUTS, status_words
from devices.faults import FaultPlan, FaultSpec, parse_faults
from devices.framing import counts_to_mv, mv_to_counts
from devices.protocols import ProtocolSpec, check_lead_map, get_protocol
from devices.sources import DeviceSignal
from devices.transports import PtyPort, TcpPort

# What became of a frame: never due yet, sent intact, sent damaged (bit flip, truncation, partial
# write), dropped by a fault, due while the port was gone, due while the host had not started the
# stream, no frame because the source has a gap, or lost because the host stopped reading.
PENDING, CLEAN, DAMAGED, DROPPED, DISCONNECTED, STOPPED, NO_SIGNAL, OVERRUN = range(8)
STATUS_NAMES = ("pending", "clean", "damaged", "dropped", "disconnected", "stopped", "no_signal", "overrun")
RAIL = (1 << 23) - 1
#: The simulated board's serial number (its identify line carries it; see docs/protocol-ads1298.md).
DEFAULT_SERIAL = "SIM-0001"


@dataclass
class Rendered:
    """Frames [start, stop): ``pieces[i]`` are the bytes sent for frame start+i (garbage first)."""

    start: int
    pieces: list[bytes]
    status: np.ndarray  # int8, CLEAN / DAMAGED / DROPPED / NO_SIGNAL
    garbage: np.ndarray  # int, garbage bytes in each piece


class Board:
    """A board measuring ``signal``: quantisation, lead-off, faults and framing; no I/O."""

    def __init__(self, protocol: str | ProtocolSpec, signal: DeviceSignal, faults: FaultSpec | str | None = None,
                 *, gain: int | None = None, loop: bool = False, n_frames: int | None = None) -> None:
        """``loop``: stream forever; ``n_frames``: stream this many frames (the signal repeats as needed)."""
        self.spec = get_protocol(protocol) if isinstance(protocol, str) else protocol
        if signal.fs_hz != self.spec.fs_hz:
            raise ValueError(f"signal at {signal.fs_hz:g} Hz; the {self.spec.name} board samples at "
                             f"{self.spec.fs_hz:g} Hz")
        self.leads = check_lead_map(signal.leads, self.spec.channels)
        self.signal = signal
        self.faults = faults if isinstance(faults, FaultSpec) else parse_faults(faults)
        self.plan = FaultPlan(self.faults, self.spec.fs_hz, self.spec.frame_size)
        self.mv_per_count = self.spec.mv_per_count(gain)
        self.loop = loop
        self._n_frames = None if loop else (n_frames or signal.n_samples)
        self._codes = mv_to_counts(np.nan_to_num(signal.mv), self.mv_per_count)
        self._valid = ~np.isnan(signal.mv).any(axis=1)
        self._rail_channels = {e: [i for i, lead in enumerate(self.leads) if e in LEAD_INPUTS.get(lead, ())]
                               for e, *_ in self.faults.leadoff}

    @property
    def fs_hz(self) -> float:
        return self.spec.fs_hz

    @property
    def n_frames(self) -> int | None:
        """Frames in the stream (None: looping forever)."""
        return self._n_frames

    def codes(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(codes [n, 8] int32, status words [n], valid [n]) of samples [start, stop), lead-off applied."""
        src = np.arange(start, stop) % self.signal.n_samples
        codes = self._codes[src].copy()
        valid = self._valid[src]
        status = status_words((), self.leads, stop - start)
        for e, a, b in self.plan.electrodes_off(start, stop):
            lo, hi = max(a, start) - start, min(b, stop) - start
            status[lo:hi] |= status_words((e,), self.leads, 1)[0]
            for ch in self._rail_channels.get(e, []):
                codes[lo:hi, ch] = RAIL
        return codes, status, valid

    def truth_mv(self, start: int, stop: int) -> np.ndarray:
        """[n, 8] float32 mV the board digitised for samples [start, stop) (what the driver must deliver)."""
        return counts_to_mv(self.codes(start, stop)[0], self.mv_per_count)

    def render(self, start: int, stop: int) -> Rendered:
        """Frames for samples [start, stop), faults applied."""
        n = stop - start
        codes, status, valid = self.codes(start, stop)
        frames = self.spec.encode(np.arange(start, stop), codes, status)
        ff = self.plan.frame_faults(start, stop)
        st = np.full(n, CLEAN, np.int8)
        st[~valid] = NO_SIGNAL
        st[ff.drop & valid] = DROPPED
        garbage = dict(self.plan.garbage_before(start, stop))
        if (st == CLEAN).all() and not garbage and (ff.flip_byte < 0).all() and not ff.cut_len.any():
            raw = frames.tobytes()
            F = self.spec.frame_size
            return Rendered(start, [raw[i * F:(i + 1) * F] for i in range(n)], st, np.zeros(n, np.int64))
        pieces: list[bytes] = []
        gbytes = np.zeros(n, np.int64)
        for i in range(n):
            g = garbage.get(start + i, b"")
            gbytes[i] = len(g)
            if st[i] != CLEAN:
                pieces.append(g)
                continue
            row = frames[i]
            if ff.flip_byte[i] >= 0:
                row[ff.flip_byte[i]] ^= np.uint8(1 << int(ff.flip_bit[i]))
                st[i] = DAMAGED
            body = row.tobytes()
            if ff.cut_len[i]:
                body = body[: ff.cut_len[i]]
                st[i] = DAMAGED
            pieces.append(g + body)
        return Rendered(start, pieces, st, gbytes)


@dataclass
class EncodedStream:
    """A whole stream as bytes, with what was sent and the ground truth, for tests."""

    data: bytes
    first_index: int
    status: np.ndarray  # [n] int8 per frame (STATUS_NAMES)
    byte_end: np.ndarray  # [n] offset in data where the bytes of each frame (garbage first) end
    truth_mv: np.ndarray  # [n, 8] float32
    fs_hz: float
    leads: tuple[str, ...]

    def indices(self, code: int) -> np.ndarray:
        return self.first_index + np.flatnonzero(self.status == code)

    def host_time_at(self, byte_pos: int, t0: float = 0.0) -> float:
        """When a board sending in real time has sent the first ``byte_pos`` bytes (seconds after t0)."""
        k = int(np.searchsorted(self.byte_end, byte_pos, side="left"))
        return t0 + (self.first_index + min(k, len(self.byte_end) - 1) + 1) / self.fs_hz


def encode_stream(protocol: str, signal: DeviceSignal, faults: FaultSpec | str | None = None, *,
                  gain: int | None = None, start: int = 0, stop: int | None = None) -> EncodedStream:
    """Render samples [start, stop) as the board would send them; disconnect windows drop frames."""
    board = Board(protocol, signal, faults, gain=gain)
    stop = signal.n_samples if stop is None else stop
    r = board.render(start, stop)
    status = r.status.copy()
    pieces = list(r.pieces)
    for a, b in board.plan.disconnect_windows():
        for i in range(max(a, start), min(b, stop)):
            pieces[i - start] = b""
            status[i - start] = DISCONNECTED
    ends = np.cumsum([len(p) for p in pieces], dtype=np.int64)
    return EncodedStream(b"".join(pieces), start, status, ends, board.truth_mv(start, stop), board.fs_hz, board.leads)



class Simulator:
    """Streams a :class:`Board` over a pty or TCP port from its own thread (see module docstring)."""

    def __init__(self, board: Board, *, transport: str = "pty", tcp_port: int = 0, host: str = "127.0.0.1",
                 link: str | None = None, speed: float = 1.0, autostart: bool = False,
                 keep_status: bool = True, serial: str = DEFAULT_SERIAL) -> None:
        """``serial``: the board's identity, in its identify line where the protocol carries one."""
        if speed <= 0:
            raise ValueError(f"speed={speed}: must be positive (1 = real time)")
        self.board = board
        self.port = PtyPort(link) if transport == "pty" else TcpPort(tcp_port, host)
        self.speed = speed
        self.autostart = autostart
        self.serial = serial
        self.rate_hz = board.fs_hz * speed * (1.0 + board.faults.drift_ppm * 1e-6)
        self.keep_status = keep_status and board.n_frames is not None
        self.status = np.zeros(board.n_frames or 0, np.int8) if self.keep_status else np.zeros(0, np.int8)
        self.totals = {name: 0 for name in STATUS_NAMES[1:]}
        self.totals.update(garbage_bytes=0, bytes_sent=0, disconnects=0, commands=0)
        self.write_times: list[tuple[int, float]] = []  # (frames sent so far, time.perf_counter()) per write
        self.record_write_times = False
        self._stop = threading.Event()
        self.finished = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def address(self) -> str:
        return self.port.address

    def start(self) -> str:
        """Open the port, start streaming from a thread; returns the address for the host."""
        self.port.open()
        self._thread = threading.Thread(target=self._run, name="devices-simulator", daemon=True)
        self._thread.start()
        return self.address

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def wait(self, timeout_s: float | None = None) -> bool:
        """Wait until the stream ended (not looping); True if it did."""
        return self.finished.wait(timeout_s)

    def report(self) -> dict[str, int]:
        with self._lock:
            return dict(self.totals)

    # ------------------------------------------------------------------------------------------
    def _mark(self, start: int, stop: int, codes: np.ndarray | int) -> None:
        if stop <= start:
            return
        with self._lock:
            if self.keep_status:
                self.status[start:stop] = codes
            arr = np.broadcast_to(np.asarray(codes, np.int8), (stop - start,))
            counts = np.bincount(arr, minlength=len(STATUS_NAMES))
            for code in range(1, len(STATUS_NAMES)):
                self.totals[STATUS_NAMES[code]] += int(counts[code])

    def _run(self) -> None:
        board, port = self.board, self.port
        n_total = board.n_frames
        windows = board.plan.disconnect_windows()
        rng = np.random.default_rng([board.faults.seed, 7])
        t0: float | None = time.monotonic() if self.autostart else None
        streaming = self.autostart
        k = 0  # next frame index
        cache: Rendered | None = None
        mid_frame = False  # after a replug the stream resumes with the tail of a frame
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                due = k if t0 is None else int((now - t0) * self.rate_hz) + 1
                if n_total is not None:
                    due = min(due, n_total)
                timeout = 0.05 if t0 is None else max(0.0, min(0.05, t0 + due / self.rate_hz - now))
                for byte in port.poll(timeout if due <= k else 0.0):
                    self.totals["commands"] += 1
                    if byte == board.spec.start_command[0]:
                        if t0 is None:
                            t0 = time.monotonic()
                        streaming = True
                    elif byte == board.spec.stop_command[0]:
                        streaming = False
                    elif byte == board.spec.identify_command[0] and not streaming:
                        self.totals["bytes_sent"] += port.write(board.spec.identify_line(self.serial))
                if isinstance(port, TcpPort) and not port.connected():
                    streaming = False  # a new client must send the start command
                while k < due:
                    win = next(((a, b) for a, b in windows if b > k), None)
                    if win is not None and win[0] <= k:  # inside a disconnect window
                        if port.is_open:
                            port.drain()  # what was sent before the unplug reaches the host
                            port.vanish()
                            self.totals["disconnects"] += 1
                        end = min(win[1], due)
                        self._mark(k, end, DISCONNECTED)
                        k = end
                        if k >= win[1]:
                            port.reappear()
                            streaming = False
                            mid_frame = True
                        continue
                    stop = min(due, win[0]) if win is not None else due
                    if not streaming:
                        self._mark(k, stop, STOPPED)
                        k = stop
                        continue
                    if cache is None or not (cache.start <= k < cache.start + len(cache.pieces)):
                        end = k + 1024 if n_total is None else min(k + 1024, n_total)
                        cache = board.render(k, end)
                    stop = min(stop, cache.start + len(cache.pieces))
                    a, b = k - cache.start, stop - cache.start
                    pieces = cache.pieces[a:b]
                    resume_tail = b""
                    if mid_frame:
                        full = board.render(k - 1, k).pieces[0] if k > 0 else b""
                        resume_tail = full[int(rng.integers(1, len(full))):] if len(full) > 1 else b""
                        mid_frame = False
                    data = resume_tail + b"".join(pieces)
                    written = port.write(data) if data else 0
                    if resume_tail and written:
                        self._remark(k - 1, DAMAGED)  # its tail went out
                    self._account(k, cache.status[a:b], pieces, len(resume_tail), written)
                    self.totals["garbage_bytes"] += int(cache.garbage[a:b].sum())
                    self.totals["bytes_sent"] += written
                    if self.record_write_times and written:
                        self.write_times.append((stop, time.perf_counter()))
                    k = stop
                if n_total is not None and k >= n_total:
                    break
        finally:
            port.drain()
            port.close()
            self.finished.set()

    def _remark(self, i: int, code: int) -> None:
        with self._lock:
            if self.keep_status:
                old = int(self.status[i])
                self.status[i] = code
                if old:
                    self.totals[STATUS_NAMES[old]] -= 1
                self.totals[STATUS_NAMES[code]] += 1

    def _account(self, k: int, status: np.ndarray, pieces: list[bytes], prefix: int, written: int) -> None:
        """Mark frames sent; a frame not fully written (host stopped reading) is damaged or overrun."""
        st = status.copy()
        end = prefix
        for i, piece in enumerate(pieces):
            start, end = end, end + len(piece)
            if end > written and st[i] in (CLEAN, DAMAGED):
                st[i] = OVERRUN if start >= written else DAMAGED
        self._mark(k, k + len(pieces), st)
