"""Checking a driver against a simulator: collect what was delivered, compare it with what was sent.

Used by the end-to-end tests and the benchmark's fault-injection table. The comparison is exact:
every delivered sample must equal the simulator's ground truth (quantised codes converted back to
mV), no sample may come from a frame that was never sent, and the reported gaps must account for
every missing index between the first and the last delivered sample.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from devices.simulator import CLEAN, DAMAGED, DISCONNECTED, DROPPED, NO_SIGNAL, OVERRUN, STATUS_NAMES, STOPPED
from devices.types import DeviceEvent, SampleBlock


class Received:
    """Thread-safe collector for a driver's ``on_block`` / ``on_event`` callbacks."""

    def __init__(self) -> None:
        self.blocks: list[SampleBlock] = []
        self.events: list[DeviceEvent] = []
        self.order: list[SampleBlock | DeviceEvent] = []
        self._cond = threading.Condition()

    def on_block(self, block: SampleBlock) -> None:
        with self._cond:
            self.blocks.append(block)
            self.order.append(block)
            self._cond.notify_all()

    def on_event(self, event: DeviceEvent) -> None:
        with self._cond:
            self.events.append(event)
            self.order.append(event)
            self._cond.notify_all()

    def wait_for(self, predicate: Callable[[Received], bool], timeout_s: float) -> bool:
        """Wait until ``predicate(self)`` holds; False on timeout."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while not predicate(self):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
            return True

    def kinds(self, kind: str) -> list[DeviceEvent]:
        with self._cond:
            return [e for e in self.events if e.kind == kind]

    def indices(self) -> np.ndarray:
        with self._cond:
            parts = [np.arange(b.first_index, b.stop_index) for b in self.blocks]
        return np.concatenate(parts) if parts else np.zeros(0, np.int64)

    def samples(self) -> np.ndarray:
        """[n, channels] float32 mV of every delivered sample, in delivery order."""
        with self._cond:
            parts = [b.samples_mv.T for b in self.blocks]
        return np.concatenate(parts) if parts else np.zeros((0, 8), np.float32)


@dataclass
class Comparison:
    """What became of every frame, from the simulator's and the driver's side."""

    sent: dict[str, int]  # simulator: frames per status (clean, damaged, dropped, ...)
    received: int
    reported_lost: int  # sum of gap lengths
    mismatched: dict[str, int]  # delivered samples that differ from the truth, by frame status
    invented: np.ndarray  # delivered indices whose frame was never sent
    clean_missing: np.ndarray  # cleanly sent frames (within the delivered span) not delivered
    unaccounted: np.ndarray  # indices in the delivered span neither delivered nor inside a reported gap
    double_counted: np.ndarray  # indices both delivered and inside a reported gap
    problems: list[str] = field(default_factory=list)

    def row(self) -> dict[str, int]:
        return {"sent_clean": self.sent.get("clean", 0), "sent_damaged": self.sent.get("damaged", 0),
                "dropped": self.sent.get("dropped", 0),
                "not_sent": sum(self.sent.get(k, 0) for k in ("disconnected", "stopped", "no_signal", "overrun")),
                "received": self.received, "reported_lost": self.reported_lost,
                "mismatched": sum(self.mismatched.values()), "clean_missing": int(self.clean_missing.size)}


def compare(status: np.ndarray, truth_mv: np.ndarray, received: Received) -> Comparison:
    """Compare delivered samples and gaps with the simulator's per-frame status and truth."""
    idx = received.indices()
    mv = received.samples()
    problems: list[str] = []
    if idx.size and np.any(np.diff(idx) <= 0):
        problems.append("delivered indices are not strictly increasing")
    inside = idx[(idx >= 0) & (idx < status.size)]
    if inside.size != idx.size:
        problems.append(f"{idx.size - inside.size} delivered indices outside the stream")
    st = status[inside]
    never_sent = np.isin(st, [DROPPED, DISCONNECTED, STOPPED, NO_SIGNAL, OVERRUN, 0])
    invented = inside[never_sent]
    differs = np.zeros(inside.size, bool)
    if inside.size:
        differs = np.any(mv[: inside.size] != truth_mv[inside], axis=1)
    mismatched = {STATUS_NAMES[code]: int(np.sum(differs & (st == code))) for code in np.unique(st[differs])}
    gaps = [e for e in received.events if e.kind == "gap"]
    in_gap = np.zeros(0, np.int64)
    if gaps:
        in_gap = np.concatenate([np.arange(e.sample_index, e.sample_index + e.length) for e in gaps])
    span = np.arange(idx.min(), idx.max() + 1) if idx.size else np.zeros(0, np.int64)
    unaccounted = np.setdiff1d(span, np.union1d(idx, in_gap))
    double = np.intersect1d(idx, in_gap)
    clean = np.flatnonzero(status == CLEAN)
    lo, hi = (int(idx.min()), int(idx.max())) if idx.size else (0, -1)
    clean_missing = np.setdiff1d(clean[(clean >= lo) & (clean <= hi)], idx)
    sent = {STATUS_NAMES[c]: int(np.sum(status == c)) for c in range(1, len(STATUS_NAMES))}
    return Comparison(sent, int(idx.size), int(sum(e.length for e in gaps)), mismatched, invented, clean_missing,
                      unaccounted, double, problems)


__all__ = ["Received", "Comparison", "compare", "CLEAN", "DAMAGED"]
