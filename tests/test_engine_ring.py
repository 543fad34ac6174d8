"""The ring buffer (absolute sample indices, NaN for what never arrived) and the electrode-contact log."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bedside.ring import ContactLog, SampleRing


def block(first: int, n: int, leads: int = 2) -> np.ndarray:
    return (np.arange(first, first + n, dtype=np.float32)[None, :] + 1000 * np.arange(leads)[:, None]).astype(np.float32)


def test_contiguous_blocks_read_back_across_the_wrap():
    ring = SampleRing(2, 10, start_index=100)
    for first in range(100, 130, 4):
        ring.append(first, block(first, 4))
    assert (ring.start, ring.end) == (122, 132)
    np.testing.assert_array_equal(ring.read(123, 131), block(123, 8))
    with pytest.raises(IndexError, match="not all held"):
        ring.read(120, 125)


def test_a_jump_leaves_nan_and_is_counted():
    ring = SampleRing(2, 20)
    ring.append(0, block(0, 5))
    assert ring.append(8, block(8, 4)) == 3
    x = ring.read(0, 12)
    assert np.isnan(x[:, 5:8]).all() and not np.isnan(x[:, :5]).any() and ring.gap_samples == 3


def test_repeated_samples_keep_the_first_copy():
    ring = SampleRing(2, 20)
    ring.append(0, block(0, 6))
    ring.append(4, block(4, 4) + 0.5)  # samples 4, 5 again (different values), then 6, 7 new
    x = ring.read(0, 8)
    np.testing.assert_array_equal(x[:, :6], block(0, 6))
    np.testing.assert_array_equal(x[:, 6:], block(6, 2) + 0.5)
    assert ring.overlap_samples == 2


def test_a_block_longer_than_the_ring_keeps_its_newest_samples():
    ring = SampleRing(1, 8)
    ring.append(0, block(0, 20, leads=1))
    assert (ring.start, ring.end) == (12, 20)
    np.testing.assert_array_equal(ring.read(12, 20), block(12, 8, leads=1))


@settings(max_examples=150, deadline=None)
@given(steps=st.lists(st.tuples(st.integers(0, 12), st.integers(1, 15)), min_size=1, max_size=30),
       capacity=st.integers(5, 40))
def test_reads_match_a_dense_reference(steps, capacity):
    ring = SampleRing(2, capacity)
    reference = np.full((2, 1000), np.nan, dtype=np.float32)
    pos = 0
    for gap, n in steps:
        first = pos + gap
        ring.append(first, block(first, n))
        reference[:, first:first + n] = block(first, n)
        pos = first + n
    start = ring.start
    np.testing.assert_array_equal(ring.read(start, ring.end), reference[:, start:ring.end])
    assert ring.gap_samples == sum(g for g, _ in steps)


def test_contact_log_says_off_on_or_unknown_per_electrode():
    log = ContactLog(keep=1000)
    log.add(0, 100, {"LA": False, "V1": False})
    log.add(100, 200, {"LA": True, "V1": False})
    log.add(200, 300, {"LA": False, "V1": None})
    assert log.query(0, 100) == {"LA": False, "V1": False}
    assert log.query(50, 150) == {"LA": True, "V1": False}
    assert log.query(150, 250) == {"LA": True, "V1": None}  # V1 not reported for part of it
    assert log.query(200, 300) == {"LA": False, "V1": None}
    assert log.query(400, 500) == {}
    assert len(log.runs) == 3
    log.add(300, 400, {"LA": False, "V1": None})  # same report: the run grows
    assert len(log.runs) == 3 and log.runs[-1][1] == 400
