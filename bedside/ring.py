"""The engine's ring buffer: the latest samples of every lead, addressed by absolute sample index.

A source writes blocks at their sample index (the device's sample clock in live use, the record's
sample number in replay). Samples that never arrived are NaN: a jump forward in the index leaves a
NaN run (a gap), which the signal core refuses to score, and which is never zero-filled. Electrode
contact reported with the blocks is kept alongside, so a window can ask whether any electrode was
off while it was recorded.
"""

from __future__ import annotations

from collections import deque

import numpy as np


class SampleRing:
    """The last ``capacity`` samples of ``n_leads`` leads, [n_leads, capacity] float32 mV."""

    def __init__(self, n_leads: int, capacity: int, start_index: int = 0):
        if capacity <= 0:
            raise ValueError(f"capacity={capacity} must be positive")
        self.capacity = capacity
        self.buf = np.full((n_leads, capacity), np.nan, dtype=np.float32)
        self.first = start_index  # the first index ever written (samples before it do not exist)
        self.end = start_index  # one past the newest sample
        self.gap_samples = 0  # samples never received (left NaN), in total
        self.overlap_samples = 0  # samples received twice (the older copy kept), in total

    @property
    def start(self) -> int:
        """Oldest index still held."""
        return max(self.first, self.end - self.capacity)

    def _write(self, index: int, data: np.ndarray) -> None:
        n = data.shape[1]
        pos = index % self.capacity
        head = min(n, self.capacity - pos)
        self.buf[:, pos:pos + head] = data[:, :head]
        if head < n:
            self.buf[:, : n - head] = data[:, head:]

    def append(self, first_index: int, data: np.ndarray) -> int:
        """Write samples [first_index, first_index + n); return how many missing samples became NaN."""
        n = data.shape[1]
        if first_index < self.end:  # a repeat of samples already held: keep the first copy
            skip = min(n, self.end - first_index)
            self.overlap_samples += skip
            first_index, data, n = first_index + skip, data[:, skip:], n - skip
            if n == 0:
                return 0
        gap = first_index - self.end
        if gap > 0:
            self.gap_samples += gap
            if gap >= self.capacity:
                self.buf[:] = np.nan
            else:
                self._write(self.end, np.full((self.buf.shape[0], gap), np.nan, dtype=np.float32))
        if n > self.capacity:  # only the newest capacity samples can be held
            first_index, data, n = first_index + n - self.capacity, data[:, -self.capacity:], self.capacity
        self._write(first_index, data)
        self.end = first_index + n
        return max(gap, 0)

    def read(self, start: int, stop: int) -> np.ndarray:
        """A copy of samples [start, stop), [n_leads, stop - start]; raises when not all held."""
        if not self.start <= start <= stop <= self.end:
            raise IndexError(f"samples [{start}, {stop}) are not all held (ring holds [{self.start}, {self.end}))")
        n = stop - start
        pos = start % self.capacity
        head = min(n, self.capacity - pos)
        if head == n:
            return self.buf[:, pos:pos + n].copy()
        return np.concatenate([self.buf[:, pos:], self.buf[:, : n - head]], axis=1)


class ContactLog:
    """Electrode contact reported with sample blocks: runs of [first, stop) with the same report."""

    def __init__(self, keep: int):
        self.keep = keep  # samples of history to keep
        self.runs: deque[list] = deque()  # [first, stop, report]

    def add(self, first: int, stop: int, report: dict[str, bool | None]) -> None:
        if not report:
            return
        if self.runs and self.runs[-1][1] == first and self.runs[-1][2] == report:
            self.runs[-1][1] = stop
        else:
            self.runs.append([first, stop, dict(report)])
        while self.runs and self.runs[0][1] < stop - self.keep:
            self.runs.popleft()

    def query(self, start: int, stop: int, received: int | None = None) -> dict[str, bool | None]:
        """Per electrode over [start, stop): True if ever off, False if reported on throughout (for the
        ``received`` samples that arrived, all of them by default), else None."""
        out: dict[str, bool | None] = {}
        covered: dict[str, int] = {}
        for first, end, report in self.runs:
            if end <= start or first >= stop:
                continue
            for electrode, off in report.items():
                if off:
                    out[electrode] = True
                elif out.get(electrode) is not True:
                    if off is False:
                        covered[electrode] = covered.get(electrode, 0) + min(end, stop) - max(first, start)
                    out.setdefault(electrode, None)
        for electrode, n in covered.items():
            if out.get(electrode) is None and n >= (stop - start if received is None else received):
                out[electrode] = False
        return out


class GapLog:
    """Runs of samples never received, [first, stop) by sample index (a jump in the source's index:
    a link outage, lost frames), so that a window's report gives a gap's whole length, not only the
    part inside the window."""

    def __init__(self, keep_runs: int = 1000):
        self.runs: deque[tuple[int, int]] = deque(maxlen=keep_runs)

    def add(self, first: int, stop: int) -> None:
        if stop > first:
            self.runs.append((first, stop))

    def lost(self, start: int, stop: int) -> int:
        """Samples in the runs that overlap [start, stop), each counted whole."""
        return sum(b - a for a, b in self.runs if a < stop and b > start)
