"""Frames to sample blocks: unwrap the device counter, find gaps, track lead-off, place events.

The :class:`Sequencer` is pure (host time is an argument), so it is tested with plain frames.
Sample indices are the device's own: the first frame's counter is its index; afterwards every
index is the previous one plus the counter step, counter wraps included.

Gaps: with a 32-bit sequence number (ADS1298) a gap's length is exact. A sequence number that
goes backwards means the device restarted: the gap is then estimated from host time.

Cyton's 1-byte counter wraps every 256 samples (1.02 s at 250 Hz), so a counter step of d means
d - 1 + 256 k samples were lost for an unknown k >= 0. k is estimated from the host clock: the time
between the last sample before the gap and the first after it (each estimated from its arrival
time and its place in its read), times the measured sample rate (frames per host second over the
last 10 s, so a fast simulator or a drifting clock are measured, not assumed). When 128 samples
or more elapsed (half a wrap), the counter alone cannot decide and the event's detail says that
the wrap count was estimated from host time, with the residual. A packet after a counter jump
must continue into its successor, else it is rejected (a corrupted counter byte, or a packet
made of garbage, would otherwise shift every later index by up to 255 samples; the price is that
a lone real packet between two losses is rejected too, reported as part of the gap, never
invented). To decide, a packet after a counter jump is held until the next packet arrives (one
sample period).

The host clock can count wraps only if the host reads the port within half a wrap (0.5 s at
250 Hz) of the bytes arriving: after a longer stall, with the packets buffered rather than lost,
the backlog can be taken for lost wraps. The gap event's detail then shows a large residual
(host-clock samples minus the samples assumed lost). The driver reads a whole backlog at once to
keep the estimate sound; a board on a real UART loses bytes, rather than delaying them, when its
reader stalls that long.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import replace

import numpy as np

from devices.framing import Parsed, counts_to_mv
from devices.types import ELECTRODES, DeviceEvent, SampleBlock


class RateEstimator:
    """Device samples per host second over a sliding window; the nominal rate until measured."""

    def __init__(self, nominal_hz: float, window_s: float = 10.0, min_span_s: float = 0.25) -> None:
        self.nominal_hz = nominal_hz
        self.window_s = window_s
        self.min_span_s = min_span_s
        self._points: deque[tuple[float, int]] = deque()

    def update(self, host_time: float, index: int) -> None:
        self._points.append((host_time, index))
        while len(self._points) > 2 and host_time - self._points[0][0] > self.window_s:
            self._points.popleft()

    @property
    def rate_hz(self) -> float:
        if len(self._points) < 2:
            return self.nominal_hz
        (t0, i0), (t1, i1) = self._points[0], self._points[-1]
        if t1 - t0 < self.min_span_s or i1 - i0 < 25:
            return self.nominal_hz
        return min(max((i1 - i0) / (t1 - t0), 0.5 * self.nominal_hz), 1000.0 * self.nominal_hz)


class Sequencer:
    """Turns parsed frames into :class:`SampleBlock` and :class:`DeviceEvent` items, in order."""

    def __init__(self, *, fs_hz: float, leads: tuple[str, ...], counter_modulus: int, mv_per_count: float,
                 frame_size: int, lead_off_masks: dict[str, int | None] | None = None,
                 check_neighbours: bool = False) -> None:
        self.fs_hz = fs_hz
        self.leads = leads
        self.modulus = counter_modulus
        self.mv_per_count = mv_per_count
        self.frame_size = frame_size
        self.masks = lead_off_masks  # None: the protocol carries no lead-off bits
        self.used_mask = 0 if lead_off_masks is None else sum(m for m in lead_off_masks.values() if m)
        self.check_neighbours = check_neighbours
        self.rate = RateEstimator(fs_hz)
        self._last_counter: int | None = None
        self._last_index = -1
        self._last_time = 0.0
        self._held: tuple | None = None  # (counter, counts row, status word, arrival time)
        self._held_events: list[DeviceEvent] = []
        self._prev_read_time = float("-inf")
        self._lo_code: int | None = None
        self._lo_dict: dict[str, bool | None] = ({e: None for e in ELECTRODES} if lead_off_masks is None
                                                 else self._states(0))
        self.frames_received = 0
        self.frames_lost = 0
        self.frames_rejected = 0

    @property
    def last_index(self) -> int:
        """Device index of the last delivered sample (-1 before the first)."""
        return self._last_index

    @property
    def lead_off(self) -> dict[str, bool | None]:
        return dict(self._lo_dict)

    def _states(self, code: int) -> dict[str, bool | None]:
        assert self.masks is not None
        return {e: (None if m is None else bool(code & m)) for e, m in self.masks.items()}

    # ------------------------------------------------------------------------------------------
    def push(self, parsed: Parsed, host_time: float, final: bool = False) -> list[SampleBlock | DeviceEvent]:
        """Sequence one read's frames (``final``: the stream ended, decide any held frame)."""
        previous, self._prev_read_time = self._prev_read_time, host_time
        fast = self._push_continuation(parsed, host_time, previous)
        if fast is not None:
            return fast
        fb = parsed.frames
        counters, counts, status = fb.counters, fb.counts, fb.status
        times = self._arrival_times(fb, host_time, previous)
        shift = 0
        if self._held is not None:
            hc, hrow, hst, ht = self._held
            self._held = None
            counters = np.concatenate([[hc], counters])
            counts = np.concatenate([hrow[None, :], counts])
            if status is not None or hst is not None:
                status = np.concatenate([[hst if hst is not None else 0],
                                         status if status is not None else np.zeros(len(fb), np.int64)])
            times = np.concatenate([[ht], times])
            shift = 1
        n = len(counters)
        events: dict[int, list[DeviceEvent]] = {}
        if shift and self._held_events:
            events[1] = self._held_events
        self._held_events = []
        for inc in parsed.incidents:
            events.setdefault(inc.before + shift, []).append(
                DeviceEvent(inc.kind, host_time, None, inc.length, inc.detail))
        index = np.full(n, -1, np.int64)
        cut = n  # frames from here on are held back
        M = self.modulus
        if n and self._last_counter is not None and np.all(
                np.diff(counters, prepend=self._last_counter) % M == 1) and not self._may_have_wrapped(times[0]):
            index[:] = self._last_index + 1 + np.arange(n)
            self._last_counter, self._last_index, self._last_time = int(counters[-1]), int(index[-1]), float(times[-1])
        else:
            cut = self._sequence_slow(counters, times, index, events, host_time, final)
        if cut < n:
            self._held = (int(counters[cut]), counts[cut].copy(), None if status is None else int(status[cut]),
                          float(times[cut]))
            # events after the held frame wait with it, so that the order stays the stream order
            self._held_events = [ev for k in sorted(events) if k > cut for ev in events.pop(k)]
        before = self.frames_received
        items = self._assemble(index[:cut], counts[:cut], None if status is None else status[:cut],
                               events, host_time, n_total=cut)
        if self.frames_received > before:  # only reads that carried samples measure the rate
            self.rate.update(self._last_time, self._last_index)
        return items

    def _arrival_times(self, fb, host_time: float, previous: float) -> np.ndarray:
        """When each frame's last byte came, estimated: frames of one read back to back, ending at
        its host time (frames the parser held from the previous read: ending at that read's time)."""
        n, k = len(fb), fb.carried
        rate = self.rate.rate_hz
        times = host_time - (n - 1 - np.arange(n)) / rate
        if k and previous > float("-inf"):
            times[:k] = min(previous, host_time) - (k - 1 - np.arange(k)) / rate
        return times

    def _push_continuation(self, parsed: Parsed, host_time: float, previous: float
                           ) -> list[SampleBlock | DeviceEvent] | None:
        """The common case, cheaply: frames that continue the last one, no event, no lead-off change."""
        fb = parsed.frames
        n = len(fb)
        if not n or self._held is not None or parsed.incidents or self._last_counter is None:
            return None
        M = self.modulus
        c = fb.counters
        if n <= 16:
            cl = c.tolist()
            if (cl[0] - self._last_counter) % M != 1 or any((b - a) % M != 1 for a, b in zip(cl, cl[1:])):
                return None
        elif (int(c[0]) - self._last_counter) % M != 1 or not np.all(np.diff(c) % M == 1):
            return None
        if M < 1 << 32 and self._may_have_wrapped(self._arrival_times(fb, host_time, previous)[0]):
            return None
        if fb.status is not None and self.masks is not None:
            codes = fb.status & self.used_mask
            if not (codes == self._lo_code).all():
                return None
        first = self._last_index + 1
        self._last_counter, self._last_index = int(c[-1]), first + n - 1
        self._last_time = host_time if fb.carried < n else min(previous, host_time)
        self.frames_received += n
        self.rate.update(self._last_time, self._last_index)
        return [self._block(first, fb.counts, host_time, dict(self._lo_dict))]

    def _sequence_slow(self, counters: np.ndarray, times: np.ndarray, index: np.ndarray,
                       events: dict[int, list[DeviceEvent]], host_time: float, final: bool) -> int:
        """Sequencing of a batch with a discontinuity, frame by frame at each discontinuity and a
        whole run at a time between them; returns the first held frame (n: none held)."""
        M, n = self.modulus, len(counters)
        breaks = np.flatnonzero(np.diff(counters) % M != 1) + 1  # frames not continuing their predecessor
        j = 0
        while j < n:
            c, t = int(counters[j]), float(times[j])
            first = self._last_counter is None
            delta = 1 if first else (c - self._last_counter) % M
            if not first and delta == 1 and not self._may_have_wrapped(t):
                lost, detail = 0, ""
            else:
                if self.check_neighbours:  # a packet after a jump must continue into its successor
                    if j + 1 < n:
                        if (int(counters[j + 1]) - c) % M != 1:
                            self._reject(j, c, events, host_time,
                                         "its counter continues neither from the previous packet nor into the next")
                            j += 1
                            continue
                    elif not final:
                        return j
                if first:
                    lost, detail = 0, ""
                else:
                    lost, detail = self._gap_length(c, delta, t)
                    if lost < 0:
                        self._reject(j, c, events, host_time, detail)
                        j += 1
                        continue
            if lost:
                self.frames_lost += lost
                events.setdefault(j, []).append(
                    DeviceEvent("gap", host_time, self._last_index + 1, lost, detail))
            idx = self._last_index + 1 + lost if self._last_counter is not None else c
            # frame j and the run of frames continuing it (times within a read are 1/rate apart)
            k = int(breaks[np.searchsorted(breaks, j, side="right")]) if breaks.size and breaks[-1] > j else n
            index[j:k] = idx + np.arange(k - j)
            self._last_counter, self._last_index = int(counters[k - 1]), idx + k - 1 - j
            self._last_time = float(times[k - 1])
            j = k
        return n

    def _may_have_wrapped(self, t: float) -> bool:
        """A short counter lost whole wraps if half a wrap or more elapsed (host clock) since the last frame."""
        if self.modulus >= 1 << 32 or self._last_counter is None:
            return False
        return (t - self._last_time) * self.rate.rate_hz >= self.modulus / 2

    def _gap_length(self, c: int, delta: int, t: float) -> tuple[int, str]:
        """Samples lost before a frame with counter c, counter step delta (mod M); -1: a duplicate."""
        M = self.modulus
        rate = self.rate.rate_hz
        elapsed = max(t - self._last_time, 0.0) * rate
        last = self._last_counter
        if M >= 1 << 32:
            if delta == 0:
                return -1, f"sequence number {c} repeated: duplicate frame discarded"
            if delta < M // 2:
                return delta - 1, f"sequence {last} -> {c}"
            lost = max(int(round(elapsed)) - 1, 0)
            return lost, (f"sequence went back from {last} to {c} (device restarted?): gap length "
                          f"estimated from host time ({elapsed:.0f} samples at {rate:.1f} Hz)")
        if delta == 0 and elapsed < M / 2:
            return -1, f"counter {c} repeated within {elapsed:.0f} samples: duplicate packet discarded"
        wraps = max(math.floor((elapsed - delta) / M + 0.5), 1 if delta == 0 else 0)
        lost = delta - 1 + wraps * M
        detail = f"counter {last} -> {c} (+{delta} mod {M})"
        if elapsed >= M / 2 or wraps:
            detail += (f"; counter wrap ambiguous: host clock says {elapsed:.0f} samples elapsed "
                       f"(at {rate:.1f} Hz), assumed {wraps} lost wrap(s), residual "
                       f"{elapsed - (lost + 1):+.0f} samples")
        return lost, detail

    def _reject(self, j: int, c: int, events: dict[int, list[DeviceEvent]], host_time: float, why: str) -> None:
        self.frames_rejected += 1
        events.setdefault(j, []).append(DeviceEvent(
            "garbage", host_time, self._last_index + 1, self.frame_size, f"packet with counter {c} rejected: {why}"))

    # ------------------------------------------------------------------------------------------
    def _assemble(self, index: np.ndarray, counts: np.ndarray, status: np.ndarray | None,
                  events: dict[int, list[DeviceEvent]], host_time: float, n_total: int
                  ) -> list[SampleBlock | DeviceEvent]:
        """Blocks of contiguous accepted frames, split at every event; events in stream order."""
        ok = index >= 0
        n_ok = int(ok.sum())
        self.frames_received += n_ok
        lo_code_per = None
        if status is not None and self.masks is not None and n_ok:
            lo_code_per = np.where(ok, status & self.used_mask, -1)
            ok_at = np.flatnonzero(ok)
            codes = lo_code_per[ok_at]
            prev = np.concatenate([[-2 if self._lo_code is None else self._lo_code], codes[:-1]])
            for j, cj in zip(ok_at[codes != prev].tolist(), codes[codes != prev].tolist()):
                new = self._states(cj)
                for e in ELECTRODES:
                    was = self._lo_dict[e] if self._lo_code is not None else False
                    if new[e] is not None and new[e] != was:
                        events.setdefault(j, []).append(DeviceEvent(
                            "lead_off" if new[e] else "lead_on", host_time, int(index[j]), None, e))
                self._lo_code, self._lo_dict = cj, new
        # block boundaries: events, rejected frames, index jumps, lead-off changes
        items: list[SampleBlock | DeviceEvent] = []
        if not events and n_ok == n_total and (n_total < 2 or np.all(np.diff(index) == 1)) and (
                lo_code_per is None or np.all(lo_code_per == lo_code_per[0])):
            if n_total:
                items.append(self._block(index[0], counts, host_time, self._current_states(lo_code_per, 0)))
            return items
        cut = ~ok[1:] | ~ok[:-1] | (index[1:] != index[:-1] + 1)
        if lo_code_per is not None:
            cut |= lo_code_per[1:] != lo_code_per[:-1]
        bounds = sorted({0, n_total} | {k for k in events if 0 < k < n_total} | set((np.flatnonzero(cut) + 1).tolist()))
        for a, b in zip(bounds[:-1], bounds[1:]):
            at = int(index[a]) if ok[a] else None  # parse events happened just before this sample
            items.extend(ev if ev.sample_index is not None or at is None else replace(ev, sample_index=at)
                         for ev in events.get(a, []))
            sel = np.flatnonzero(ok[a:b]) + a
            if sel.size:
                items.append(self._block(index[sel[0]], counts[sel], host_time,
                                         self._current_states(lo_code_per, int(sel[0]))))
        items.extend(ev for k in sorted(events) if k >= n_total for ev in events[k])
        return items

    def _current_states(self, code: np.ndarray | None, j: int) -> dict[str, bool | None]:
        if code is None or self.masks is None:
            return dict(self._lo_dict)
        return self._states(int(code[j]))

    def _block(self, first: int, counts: np.ndarray, host_time: float,
               lead_off: dict[str, bool | None]) -> SampleBlock:
        mv = counts_to_mv(counts.T, self.mv_per_count)  # [channels, n], C order
        mv.flags.writeable = False
        return SampleBlock(int(first), self.fs_hz, self.leads, mv, host_time, lead_off)
