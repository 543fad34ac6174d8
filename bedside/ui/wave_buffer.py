"""A thread-safe ring buffer of the last seconds of the 12 canonical leads, for display only.

The engine's thread writes ``Samples`` blocks into it as they are published (a cheap copy); the UI's
frame timer reads the span it draws. Indices are sample numbers since the session's first sample
(``Samples.first_index``), so a block that arrives after a jump in indices leaves the skipped samples
as NaN: a gap is shown as a gap, never bridged or zero-filled.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Sequence

import numpy as np

from bedside.events import Samples


class WaveBuffer:
    """The last ``seconds`` of [12, n] samples; NaN where nothing (or a gap) was received."""

    def __init__(self, seconds: float = 30.0, n_leads: int = 12, clock: Callable[[], float] = time.time) -> None:
        if seconds <= 0:
            raise ValueError(f"WaveBuffer seconds must be > 0, got {seconds}")
        self.seconds = float(seconds)
        self.n_leads = n_leads
        self.clock = clock
        self.last_write_wall: float | None = None  # clock() at the newest block (s)
        self._lock = threading.Lock()
        self._fs_hz: float | None = None
        self._data: np.ndarray | None = None  # [n_leads, capacity] float32
        self._end = 0  # one past the newest sample index written
        self.blocks = 0  # blocks written (counted, for the soak benchmark)
        self.resets = 0  # times the sampling rate changed and the buffer started over

    @property
    def fs_hz(self) -> float | None:
        return self._fs_hz

    @property
    def end_index(self) -> int:
        """One past the newest sample index received (0 before any)."""
        return self._end

    @property
    def capacity(self) -> int:
        return 0 if self._data is None else self._data.shape[1]

    def write(self, block: Samples) -> None:
        """Store one block (called from the engine's thread)."""
        data = np.asarray(block.data_mv, dtype=np.float32)
        if data.ndim != 2 or data.shape[0] != self.n_leads:
            raise ValueError(f"Samples.data_mv must be [{self.n_leads}, n], got {data.shape}")
        with self._lock:
            if self._fs_hz != block.fs_hz or self._data is None:
                if self._data is not None:
                    self.resets += 1
                self._fs_hz = float(block.fs_hz)
                cap = max(1, math.ceil(self.seconds * block.fs_hz))
                self._data = np.full((self.n_leads, cap), np.nan, dtype=np.float32)
                self._end = block.first_index
            buf = self._data
            cap = buf.shape[1]
            start, n = int(block.first_index), data.shape[1]
            if start + n <= self._end - cap:  # older than anything shown: nothing to draw
                return
            if start > self._end:  # samples never received: blank them (at most one buffer's worth)
                self._blank(max(self._end, start - cap), start)
            if n > cap:  # only the newest capacity samples fit
                data, start, n = data[:, n - cap:], start + n - cap, cap
            pos = np.arange(start, start + n) % cap
            buf[:, pos] = data
            self._end = max(self._end, start + n)
            self.blocks += 1
            self.last_write_wall = self.clock()

    def _blank(self, start: int, stop: int) -> None:
        assert self._data is not None
        cap = self._data.shape[1]
        if stop > start:
            self._data[:, np.arange(start, stop) % cap] = np.nan

    def read(self, rows: Sequence[int], start: int, stop: int) -> np.ndarray:
        """Samples ``start..stop`` (indices) of the given lead rows, [len(rows), stop-start] float32.

        Indices not held (before the buffer's span, after the newest sample, or never received) are NaN.
        """
        n = max(0, stop - start)
        out = np.full((len(rows), n), np.nan, dtype=np.float32)
        with self._lock:
            if self._data is None or n == 0:
                return out
            cap = self._data.shape[1]
            lo = max(start, self._end - cap, 0)
            hi = min(stop, self._end)
            if hi > lo:
                pos = np.arange(lo, hi) % cap
                out[:, lo - start:hi - start] = self._data[np.asarray(rows)[:, None], pos[None, :]]
        return out
