"""Sequencer: exact gaps, Cyton counter wraps from host time, corrupted counters, lead-off, order."""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from devices import ads1298
from devices.framing import counts_to_mv
from devices.protocols import get_protocol
from devices.sequencer import RateEstimator
from devices.types import DeviceEvent, SampleBlock

LEADS = ("I", "II", "V1", "V2", "V3", "V4", "V5", "V6")


def stream(name: str, keep: np.ndarray, *, status: np.ndarray | None = None, corrupt_counter: tuple[int, ...] = (),
           read_every_s: float = 0.012, seed: int = 0, counter_offset: np.ndarray | None = None):
    """Send frames ``keep`` at the board's real-time pace, read every ``read_every_s`` (host clock)."""
    spec = get_protocol(name)
    n = keep.size
    rng = np.random.default_rng(seed)
    counts = rng.integers(-(1 << 23), 1 << 23, (n, 8)).astype(np.int32)
    seq = np.arange(n) if counter_offset is None else np.arange(n) + counter_offset
    frames = spec.encode(seq, counts, status)
    for i in corrupt_counter:
        frames[i, 1 if name == "cyton" else 7] ^= 0x20
    parser, seqr = spec.make_parser(), spec.make_sequencer(LEADS)
    kept = np.flatnonzero(keep)
    read_of = np.floor(kept / spec.fs_hz / read_every_s).astype(int)
    items = []
    for r in np.unique(read_of):
        data = frames[kept[read_of == r]].tobytes()
        items += seqr.push(parser.feed(data), 1000.0 + (r + 1) * read_every_s)
    items += seqr.push(parser.flush(), 1000.0 + (read_of.max() + 2) * read_every_s, final=True)
    truth = counts_to_mv(counts, spec.mv_per_count())
    return items, truth, seqr


def delivered(items) -> tuple[np.ndarray, np.ndarray]:
    blocks = [b for b in items if isinstance(b, SampleBlock)]
    return (np.concatenate([np.arange(b.first_index, b.stop_index) for b in blocks]),
            np.concatenate([b.samples_mv.T for b in blocks]))


def gaps(items) -> list[tuple[int, int]]:
    return [(e.sample_index, e.length) for e in items if isinstance(e, DeviceEvent) and e.kind == "gap"]


def test_ads1298_gaps_are_exact_and_end_blocks() -> None:
    keep = np.ones(3000, bool)
    keep[[10, 11, 500]] = False
    keep[1000:2300] = False
    items, truth, seqr = stream("ads1298", keep)
    idx, mv = delivered(items)
    assert np.array_equal(idx, np.flatnonzero(keep))
    assert np.array_equal(mv, truth[idx])
    assert gaps(items) == [(10, 2), (500, 1), (1000, 1300)]
    assert seqr.frames_lost == 1303 and seqr.frames_received == keep.sum()
    for b in (x for x in items if isinstance(x, SampleBlock)):  # no block spans a gap
        assert not any(b.first_index <= g < b.stop_index for g, _ in gaps(items))
        assert not b.samples_mv.flags.writeable and b.samples_mv.dtype == np.float32


@pytest.mark.parametrize("lost", [3, 127, 255, 256, 257, 600, 1024])
def test_cyton_counter_wraps_are_estimated_from_host_time(lost: int) -> None:
    keep = np.ones(1500 + lost, bool)
    keep[700:700 + lost] = False
    items, truth, _ = stream("cyton", keep)
    idx, mv = delivered(items)
    assert np.array_equal(idx, np.flatnonzero(keep)) and np.array_equal(mv, truth[idx])
    (gap,) = [e for e in items if isinstance(e, DeviceEvent) and e.kind == "gap"]
    assert (gap.sample_index, gap.length) == (700, lost)
    assert ("wrap ambiguous" in gap.detail) == (lost + 1 >= 128)


def test_cyton_corrupted_counter_is_rejected_not_taken_as_a_jump() -> None:
    keep = np.ones(800, bool)
    items, truth, seqr = stream("cyton", keep, corrupt_counter=(300,))
    idx, mv = delivered(items)
    assert np.array_equal(idx, np.delete(np.arange(800), 300)) and np.array_equal(mv, truth[idx])
    assert gaps(items) == [(300, 1)]
    rejected = [e for e in items if isinstance(e, DeviceEvent) and e.kind == "garbage"]
    assert len(rejected) == 1 and "rejected" in rejected[0].detail and seqr.frames_rejected == 1


def test_cyton_lone_packet_between_losses_is_dropped_never_misplaced() -> None:
    keep = np.ones(900, bool)
    keep[100:110] = False
    keep[111:150] = False  # frame 110 alone between two losses
    items, truth, _ = stream("cyton", keep)
    idx, mv = delivered(items)
    assert set(idx) <= set(np.flatnonzero(keep)) and np.array_equal(mv, truth[idx])
    assert 110 not in idx and gaps(items) == [(100, 50)]


def test_cyton_packet_after_a_jump_at_the_end_of_a_read_is_held_then_delivered() -> None:
    spec = get_protocol("cyton")
    frames = spec.encode(np.array([0, 1, 2, 5, 6]), np.zeros((5, 8), np.int32))
    parser, seqr = spec.make_parser(), spec.make_sequencer(LEADS)
    first = seqr.push(parser.feed(frames[:4].tobytes()), 10.0)
    assert [b.stop_index for b in first if isinstance(b, SampleBlock)] == [3]  # frame 5 waits for its successor
    second = seqr.push(parser.feed(frames[4:].tobytes()), 10.004)
    assert gaps(second) == [(3, 2)]
    assert [(b.first_index, b.n_samples) for b in second if isinstance(b, SampleBlock)] == [(5, 2)]
    # at the end of the stream a held packet is decided without its successor
    third = seqr.push(parser.feed(spec.encode(np.array([9]), np.zeros((1, 8), np.int32)).tobytes()), 10.008)
    assert not [b for b in third if isinstance(b, SampleBlock)]
    last = seqr.push(parser.flush(), 10.1, final=True)
    assert [(b.first_index, b.n_samples) for b in last if isinstance(b, SampleBlock)] == [(9, 1)]


def test_ads1298_device_restart_gap_comes_from_host_time() -> None:
    spec = get_protocol("ads1298")
    parser, seqr = spec.make_parser(), spec.make_sequencer(LEADS)
    z = np.zeros((1000, 8), np.int32)
    t = 100.0
    for k in range(0, 1000, 5):  # 2 s at 500 Hz, read every 10 ms
        t += 0.01
        seqr.push(parser.feed(spec.encode(np.arange(k, k + 5) + 70_000, z[:5]).tobytes()), t)
    t += 3.0  # the board restarted 3 s later with its sequence at 0
    items = seqr.push(parser.feed(spec.encode(np.arange(0, 5), z[:5]).tobytes()), t)
    (gap,) = gaps(items)
    assert gap[0] == 71_000 and gap[1] == pytest.approx(1500, abs=10)
    assert "restarted" in items[0].detail
    assert [b.first_index for b in items if isinstance(b, SampleBlock)] == [71_000 + gap[1]]


def test_lead_off_events_and_block_states() -> None:
    status = ads1298.status_words([], LEADS, 2000)
    status[400:900] = ads1298.status_words(["V3"], LEADS)[0]
    status[600:700] = ads1298.status_words(["V3", "RA"], LEADS)[0]
    items, _, _ = stream("ads1298", np.ones(2000, bool), status=status)
    events = [(e.kind, e.detail, e.sample_index) for e in items if isinstance(e, DeviceEvent)]
    assert events == [("lead_off", "V3", 400), ("lead_off", "RA", 600), ("lead_on", "RA", 700), ("lead_on", "V3", 900)]
    for b in (x for x in items if isinstance(x, SampleBlock)):
        want_v3 = 400 <= b.first_index < 900
        assert b.lead_off["V3"] is want_v3 and b.lead_off["LA"] is False
        assert b.lead_off["RA"] is (600 <= b.first_index < 700)
    for b in (x for x in items if isinstance(x, SampleBlock)):  # a change ends a block
        assert not any(b.first_index < i < b.stop_index for i in (400, 600, 700, 900))


def test_cyton_reports_lead_off_as_unknown() -> None:
    items, _, _ = stream("cyton", np.ones(100, bool))
    blocks = [b for b in items if isinstance(b, SampleBlock)]
    assert blocks and all(set(b.lead_off.values()) == {None} for b in blocks)


def test_events_arrive_between_the_blocks_they_separate() -> None:
    spec = get_protocol("ads1298")
    frames = spec.encode(np.arange(6), np.zeros((6, 8), np.int32))
    data = frames[:3].tobytes() + b"noise" + frames[3:].tobytes()
    parser, seqr = spec.make_parser(), spec.make_sequencer(LEADS)
    items = seqr.push(parser.feed(data), 5.0)
    kinds = [("block", x.first_index, x.n_samples) if isinstance(x, SampleBlock) else (x.kind, x.length)
             for x in items]
    assert kinds == [("block", 0, 3), ("garbage", 5), ("resync", 5), ("block", 3, 3)]
    assert items[1].sample_index == items[2].sample_index == 3  # just before sample 3


@settings(max_examples=int(os.environ.get("DEVICES_HYPOTHESIS_EXAMPLES", "100")) // 3, deadline=None)
# a packet the parser held back (0xA0 inside it, end of a read) must keep its own arrival time
@example(losses=[(79, 8), (87, 120)], name="cyton", read_every_s=0.03125)
@given(st.lists(st.tuples(st.integers(0, 4000), st.integers(1, 120)), max_size=8),
       st.sampled_from(["ads1298", "cyton"]), st.floats(0.001, 0.05))
def test_any_loss_pattern_is_accounted_exactly(losses: list[tuple[int, int]], name: str, read_every_s: float) -> None:
    """Delivered samples plus reported gaps tile the span exactly; every delivered sample is right."""
    keep = np.ones(4200, bool)
    for start, length in losses:
        keep[start:start + length] = False
    keep[0] = keep[-1] = True
    items, truth, seqr = stream(name, keep, read_every_s=read_every_s)
    idx, mv = delivered(items)
    assert np.array_equal(mv, truth[idx]) and np.all(np.diff(idx) > 0)
    gap_idx = np.concatenate([np.arange(i, i + n) for i, n in gaps(items)] or [np.zeros(0, int)])
    assert np.array_equal(np.sort(np.concatenate([idx, gap_idx])), np.arange(idx[0], 4200))
    if name == "ads1298":
        assert np.array_equal(idx, np.flatnonzero(keep))
    else:  # a lone packet (the first one counts as after a loss) may be rejected, never misplaced
        lone = [i for i in np.flatnonzero(keep) if (i == 0 or not keep[i - 1]) and i < 4199 and not keep[i + 1]]
        assert set(np.flatnonzero(keep)) - set(idx) <= set(lone)


def test_rate_estimator_measures_the_device_rate() -> None:
    est = RateEstimator(250.0)
    assert est.rate_hz == 250.0
    for k in range(100):
        est.update(k * 0.01, k * 25)  # 2500 samples per second (a simulator at 10x)
    assert est.rate_hz == pytest.approx(2500.0)
