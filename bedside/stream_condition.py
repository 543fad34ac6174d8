"""Streaming conditioning: each incoming sample resampled and baseline-filtered once, windows cut from the stream.

The engine analyses 10 s windows every 5 s, so the batch :func:`bedside.preprocess.condition` conditions
every sample twice. :class:`StreamConditioner` conditions the stream once, as it arrives, and assembles
a window's conditioned samples from it, **bit-identical to** ``condition(x_window, fs_hz, recipe)``
(the function the trainer used, and still the single definition of the recipe):

- the window's *interior* is read from the stream. Away from its edges a batch window is the same
  computation as the stream: resample_poly's output ``j`` of a window starting at input ``s`` sits at
  input ``s + j * down / up``, so it is output ``m0 + j`` of the stream when ``s * up / down`` is a whole
  number ``m0`` (the stream's output grid is anchored at the first sample pushed: ``origin``);
- the window's *edges* carry batch edge effects that the stream does not have: the resampler's zero
  padding tapers the first and last ``a = ceil(half_len / down)`` outputs (0.1 s), and the median filters
  clamp (``median_mode``) within ``R = sum(k // 2)`` of each end (0.4 s). With the default recipe that is
  50 of the 1000 samples at each end (0.5 s). Those are recomputed as batch does: the tapered outputs from
  the ~100 raw samples that reach them, then the medians over the window's first and last ``a + 2R``
  resampled outputs (the rest of which are the stream's).

The model was trained on batch windows, edge effects included, so the model sees exactly what it was
trained on; only the 90 % interior is shared between overlapping windows. (Redefining ``condition()`` to
condition with a margin would remove the edge effects, but it would change what every trained model and
trainer cache was made with: a new recipe name, a re-prepared cache and retrained models.)

Gaps: a non-finite sample (NaN = missing, inf = out of range) is never fed to the filters and never
zero-filled. The stream restarts at the first sample after it that is on the output grid (at most
``down - 1`` samples later); its first ``a + R`` outputs are its warm-up. A window never covers a gap
(the engine refuses such windows), and its edges are the batch computation, so a gap-free window's
interior always lies after the warm-up: :meth:`StreamConditioner.window` returns ``None`` only when it
cannot give the batch result (start off the output grid, samples not held, a gap inside, arithmetic
overflow): the caller then runs ``condition()``.

Engine use (see :class:`StreamConditioner`)::

    if StreamConditioner.supports(fs_hz, hop_n, recipe):               # once the rate is known
        stream = StreamConditioner(fs_hz, recipe, capacity=ring.capacity, origin=origin)
    stream.push(first_index, block_mv)    # every block written to the ring, at the same index (NaN runs too)
    conditioned = stream.window(start)    # [12, window_samples] mV, or None: condition(x_mv, fs_hz, recipe)

Cost (scripts/bench_stages.py, BENCHMARKS.md): each sample is resampled and median-filtered once, plus
the two 0.5 s edges per window; at 500 Hz that is ~0.9x the cached batch ``condition()``, at 1000 Hz ~0.85x.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bedside.preprocess import (DEFAULT_RECIPE, Recipe, input_samples_for_window, median_kernel, remove_baseline,
                                resample, resample_half_len, resample_ratio)
from bedside.ring import SampleRing

#: Largest ``down`` of the resampling ratio streamed; rates whose ratio needs more (e.g. 249.89 Hz to
#: 100 Hz is 10000/24989) have a grid no hop lands on and a filter of 10 * down taps: batch only.
MAX_STREAM_DOWN = 1000


@dataclass(frozen=True)
class StreamGeometry:
    """Where a batch window and the stream agree, in samples, derived from the recipe (one place for each fact).

    ``up``/``down``: the resampling ratio; ``half_len``: the resampler's FIR half length (taps at the
    upsampled rate); ``reach``: outputs on each side that one output of the median cascade depends on
    (``R``); ``need``: input samples per window; ``width``: output samples per window; ``clean``: the
    [first, stop) resampled outputs of a batch window untouched by its zero padding (= the stream's);
    ``interior``: the [first, stop) conditioned outputs of a batch window that equal the stream's.
    """

    fs_hz: float
    up: int
    down: int
    half_len: int
    reach: int
    need: int
    width: int
    clean: tuple[int, int]
    interior: tuple[int, int]

    @classmethod
    def of(cls, fs_hz: float, recipe: Recipe = DEFAULT_RECIPE) -> "StreamGeometry":
        up, down = resample_ratio(fs_hz, recipe.fs_hz)
        half_len = resample_half_len(up, down) if up != down else 0  # resample() copies when up == down
        reach = sum(median_kernel(s, recipe.fs_hz) // 2 for s in recipe.baseline_filters_s)
        need, width = input_samples_for_window(fs_hz, recipe), recipe.window_samples
        first = -(-half_len // down)  # ceil: outputs before it reach before the window's first sample
        stop = min(((need - 1) * up - half_len) // down + 1, width)  # outputs from it reach past the last
        return cls(float(fs_hz), up, down, half_len, reach, need, width, (first, stop),
                   (first + reach, max(first + reach, stop - reach)))

    def inputs_for(self, y_first: int, y_stop: int) -> tuple[int, int]:
        """Input span [first, stop) of a window (window-relative) whose resampling gives exactly outputs
        [y_first, y_stop) of the window's batch resampling; ``first`` sits on an output sample."""
        q = self.up * (max(0, y_first - self.clean[0]) // self.up)  # the span's own taper ends by y_first
        first = q // self.up * self.down
        stop = min(self.need, ((y_stop - 1) * self.down + self.half_len) // self.up + 1)
        return first, stop

    def output_of(self, first: int) -> int:
        """Output index of input ``first`` (window-relative, on the output grid)."""
        return first * self.up // self.down


def condition_span(x_mv: np.ndarray, lo: int, hi: int, geometry: StreamGeometry,
                   recipe: Recipe = DEFAULT_RECIPE) -> np.ndarray:
    """Outputs [lo, hi) of ``condition(x_mv, ...)`` for one raw window ``x_mv`` [leads, need], computed
    from only the input samples that reach them (bit-identical: the same resample and median calls)."""
    g = geometry
    y_lo, y_hi = max(0, lo - g.reach), min(g.width, hi + g.reach)
    first, stop = g.inputs_for(y_lo, y_hi)
    q = g.output_of(first)
    y = resample(x_mv[:, first:stop], g.fs_hz, recipe.fs_hz)[:, y_lo - q:y_hi - q]
    # a span edge that is not the window's edge clamps the medians only within `reach` of it: outside [lo, hi)
    c = remove_baseline(y, recipe.fs_hz, recipe.baseline_filters_s, recipe.median_mode)
    return c[:, lo - y_lo:hi - y_lo]


def resample_tapers(x_mv: np.ndarray, geometry: StreamGeometry, fs_out_hz: float) -> tuple[np.ndarray, np.ndarray]:
    """The outputs [0, clean[0]) and [clean[1], width) of the batch resampling of one raw window
    [leads, need]: the ones its zero padding tapers, from the input samples that reach them (one call)."""
    g = geometry
    (a, b), leads = g.clean, x_mv.shape[0]
    _, head_stop = g.inputs_for(0, a) if a else (0, 0)
    tail_first, _ = g.inputs_for(b, g.width) if b < g.width else (g.need, g.need)
    n = max(head_stop, g.need - tail_first)
    tail_first = (g.need - n) // g.down * g.down  # on the grid
    n = g.need - tail_first  # both spans n long (the head's extra samples are real ones: exact still)
    if n == 0:
        return x_mv[:, :0].astype(np.float32), x_mv[:, :0].astype(np.float32)
    y = resample(np.concatenate([x_mv[:, :n], x_mv[:, tail_first:]]), g.fs_hz, fs_out_hz)
    q = g.output_of(tail_first)
    return y[:leads, :a], y[leads:, b - q:g.width - q]


class StreamConditioner:
    """Conditions a 12-lead stream once per sample; cuts batch-identical conditioned windows from it.

    ``fs_hz``: the source rate (Hz); ``recipe``: the recipe the analyser conditions with (``condition()``'s);
    ``capacity``: input samples held (give the engine ring's capacity: a window the engine can still read,
    this can still condition; at least one window + 60 s); ``origin``: the input index the output grid is
    anchored at (default: the first index pushed). Window starts must be ``origin + k * down``
    (:meth:`supports` says whether a hop keeps them there).

    - :meth:`push` ``(first_index, block_mv)``: a [leads, n] block at its absolute sample index, NaN for
      missing samples; a jump forward is a gap; samples already pushed are ignored (first copy kept).
      Cheap: the block is stored; conditioning runs when a window asks for it (or the backlog reaches a
      quarter of ``capacity``), so small live blocks cost no per-call filter overhead;
    - :meth:`window` ``(start_index)``: ``condition()`` of input samples ``[start, start + need)`` as
      [leads, window_samples] float32 mV, or ``None`` when the batch path must be used.

    Not thread-safe: push and window from one thread (the engine's). Memory: the input ring plus two
    rings at the recipe's rate (1.4x the engine ring's bytes at 500 Hz).
    """

    def __init__(self, fs_hz: float, recipe: Recipe = DEFAULT_RECIPE, capacity: int | None = None,
                 origin: int | None = None):
        self.fs_hz, self.recipe = float(fs_hz), recipe
        self.geometry = g = StreamGeometry.of(fs_hz, recipe)
        if g.down > MAX_STREAM_DOWN:
            raise ValueError(f"fs_hz={fs_hz:g}: resampling ratio {g.up}/{g.down} to {recipe.fs_hz:g} Hz is too fine "
                             f"to stream (down > {MAX_STREAM_DOWN}); use condition() per window")
        self.capacity = max(int(capacity or 0), g.need + int(60 * fs_hz))
        self.origin = origin
        self.n_leads = len(recipe.leads)
        self.raw: SampleRing | None = None  # input samples (NaN: missing)
        self.resampled: SampleRing | None = None  # the stream resampled, by output index from origin
        self.out: SampleRing | None = None  # the stream conditioned, by output index from origin
        self.restarts = 0  # stream restarts (gaps, non-finite samples)
        self._seg_start = 0  # first input sample of the current gap-free stream (on the output grid)
        self._seg_end = 0  # one past its last input sample
        self._broken = True  # the next sample starts a new stream (the first one, or after a gap)
        self._y_next = 0  # next resampled output to compute
        self._c_next = 0  # next conditioned output to compute
        self._queue: list[tuple[int, np.ndarray]] = []  # pushed blocks not yet stored
        self._queued = 0  # samples in the queue

    @staticmethod
    def supports(fs_hz: float, hop_n: int, recipe: Recipe = DEFAULT_RECIPE) -> bool:
        """True when windows every ``hop_n`` input samples land on the stream's output grid."""
        _, down = resample_ratio(fs_hz, recipe.fs_hz)
        return down <= MAX_STREAM_DOWN and hop_n % down == 0

    # -- input --------------------------------------------------------------------------------------
    def push(self, first_index: int, block_mv: np.ndarray) -> None:
        """Take samples ``[first_index, first_index + n)`` of a [leads, n] block in mV (NaN: missing).

        The block is copied and queued; queued blocks are stored and conditioned together when a window
        is asked for or the queue reaches a quarter of ``capacity`` (a 40 ms live block costs a list append).
        """
        block = np.array(block_mv, dtype=np.float32)  # a copy: the caller may reuse its buffer
        if block.ndim != 2 or block.shape[0] != self.n_leads:
            raise ValueError(f"expected a [{self.n_leads}, n] block in mV, got shape {block.shape}")
        if self.origin is None:
            self.origin = first_index
        self._queue.append((first_index, block))
        self._queued += block.shape[1]
        if self._queued > self.capacity // 4:
            self._commit()

    def _commit(self) -> None:
        """Store and feed the queued blocks, contiguous ones joined into one piece."""
        queue, self._queue, self._queued = self._queue, [], 0
        k = 0
        while k < len(queue):
            first, blocks, stop = queue[k][0], [queue[k][1]], queue[k][0] + queue[k][1].shape[1]
            k += 1
            while k < len(queue) and queue[k][0] == stop:
                blocks.append(queue[k][1])
                stop += queue[k][1].shape[1]
                k += 1
            self._store(first, blocks[0] if len(blocks) == 1 else np.concatenate(blocks, axis=1))

    def _store(self, first_index: int, block: np.ndarray) -> None:
        if self.raw is None:
            self.raw = SampleRing(self.n_leads, self.capacity, start_index=first_index)
            g = self.geometry
            n_out = self.capacity * g.up // g.down + g.width
            self.resampled = SampleRing(self.n_leads, n_out, start_index=self._out_index(first_index))
            self.out = SampleRing(self.n_leads, n_out, start_index=self._out_index(first_index))
        skip = max(0, self.raw.end - first_index)  # repeats: the ring keeps the first copy, so do we
        first_index, block = first_index + skip, block[:, skip:]
        step = max(1, self.capacity // 4)  # a block larger than the ring goes in pieces
        for k in range(0, block.shape[1], step):
            self._push_piece(first_index + k, block[:, k:k + step])

    def _push_piece(self, first_index: int, block: np.ndarray) -> None:
        assert self.raw is not None
        if first_index > self.raw.end:
            self._broken = True  # a jump forward: samples never received
        self.raw.append(first_index, block)
        ok = np.isfinite(block).all(axis=0)
        if ok.all():
            self._feed(first_index, first_index + block.shape[1])
        else:
            edges = np.diff(np.concatenate(([0], ok.astype(np.int8), [0])))
            for a, b in zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)):
                self._broken |= bool(a > 0)  # a run after non-finite samples starts a new stream
                self._feed(first_index + int(a), first_index + int(b))
            self._broken |= not ok[-1]
        if self._seg_end - self._x_next() > self.capacity // 4:
            self._advance()  # keep the input it still needs well inside the ring

    def _out_index(self, index: int) -> int:
        """Output sample (from origin) at or after input ``index``."""
        g = self.geometry
        return -(-(index - self.origin) * g.up // g.down)

    def _x_next(self) -> int:
        """First input sample the next resampling reads (on the grid; its own taper ends by _y_next)."""
        g = self.geometry
        return self.origin + g.up * ((self._y_next - g.clean[0]) // g.up) // g.up * g.down

    def _feed(self, first: int, stop: int) -> None:
        """Finite input samples [first, stop), already in the raw ring, join the stream (conditioned later)."""
        g = self.geometry
        if self._broken or self._seg_end != first:  # (re)start on the first grid sample of this run
            if self._seg_end > self._seg_start:
                self._advance()  # finish the stream before the gap
                self.restarts += 1
            m_seg = self._out_index(first)
            m_seg += (-m_seg) % g.up  # an output index that sits on an input sample
            self._seg_start = self.origin + m_seg // g.up * g.down
            self._y_next = m_seg + g.clean[0]  # the first output whose resampler support is all real samples
            self._c_next = self._y_next + g.reach  # the first whose medians see only stream outputs
            self._broken = False
        self._seg_end = stop

    def _advance(self) -> None:
        """Resample and baseline-filter every output whose inputs have all arrived (each sample once)."""
        g = self.geometry
        assert self.raw is not None and self.resampled is not None and self.out is not None
        y_stop = ((self._seg_end - 1 - self.origin) * g.up - g.half_len) // g.down + 1  # support before seg_end
        if self._seg_end <= self._seg_start or y_stop <= self._y_next:
            return
        x_first = self._x_next()
        y = resample(self.raw.read(x_first, self._seg_end), self.fs_hz, self.recipe.fs_hz)
        q = self._out_index(x_first)
        self.resampled.append(self._y_next, y[:, self._y_next - q:y_stop - q])
        self._y_next = y_stop
        c_stop = y_stop - g.reach  # the last `reach` outputs wait for the medians' look-ahead
        if c_stop > self._c_next:
            span = self.resampled.read(self._c_next - g.reach, y_stop)
            c = remove_baseline(span, self.recipe.fs_hz, self.recipe.baseline_filters_s, self.recipe.median_mode)
            self.out.append(self._c_next, c[:, g.reach:c.shape[1] - g.reach])
            self._c_next = c_stop

    # -- output -------------------------------------------------------------------------------------
    def window(self, start_index: int) -> np.ndarray | None:
        """``condition()`` of input samples ``[start_index, start_index + need)``: [leads, window_samples]
        float32 mV, bit-identical to the batch function, or ``None`` when it cannot be cut from the
        stream (start off the grid, samples no longer held or not yet pushed, a gap inside, overflow):
        use ``condition()`` then."""
        g = self.geometry
        if self._queue:
            self._commit()
        if self.raw is None or self.out is None or self.resampled is None or (start_index - self.origin) % g.down:
            return None
        (a, b), (lo, hi), leads = g.clean, g.interior, self.n_leads
        if hi <= lo:
            return None  # a window too short to have an interior
        m0 = (start_index - self.origin) * g.up // g.down
        if self._c_next < m0 + hi:
            self._advance()
        n_y = max(lo, g.width - hi) + g.reach  # resampled outputs the medians of each edge read
        try:
            x = self.raw.read(start_index, start_index + g.need)
            mid = self.out.read(m0 + lo, m0 + hi)
            y_head = self.resampled.read(m0 + a, m0 + n_y)
            y_tail = self.resampled.read(m0 + g.width - n_y, m0 + b)
        except IndexError:
            return None
        if not (np.isfinite(mid).all() and np.isfinite(x).all() and np.isfinite(y_head).all()
                and np.isfinite(y_tail).all()):
            return None  # a gap inside (refused by the caller anyway), not yet conditioned, or overflow
        head_taper, tail_taper = resample_tapers(x, g, self.recipe.fs_hz)
        y = np.concatenate([np.concatenate([head_taper, y_head], axis=1),
                            np.concatenate([y_tail, tail_taper], axis=1)])
        c = remove_baseline(y, self.recipe.fs_hz, self.recipe.baseline_filters_s, self.recipe.median_mode)
        out = np.empty((leads, g.width), np.float32)
        out[:, :lo] = c[:leads, :lo]
        out[:, lo:hi] = mid
        out[:, hi:] = c[leads:, hi - (g.width - n_y):]
        return out
