"""Wire parsers: never raise, account for every byte, recover every valid frame after garbage."""

from __future__ import annotations

import os
import re
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devices import ads1298, cyton
from devices.protocols import PROTOCOLS, get_protocol

# DEVICES_HYPOTHESIS_EXAMPLES=1500 for a long run (passes; about 2.5 min)
SETTINGS = settings(max_examples=int(os.environ.get("DEVICES_HYPOTHESIS_EXAMPLES", "100")), deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])
chunkings = st.lists(st.one_of(st.integers(1, 50), st.integers(50, 700)), min_size=1, max_size=8)
codes = st.integers(-(1 << 23), (1 << 23) - 1)


def feed(parser, data: bytes, chunks: list[int]):
    """Feed data in chunks of the given sizes (cycled); returns the concatenated frames and incidents."""
    outs, pos, k = [], 0, 0
    while pos < len(data):
        size = chunks[k % len(chunks)]
        outs.append(parser.feed(data[pos:pos + size]))
        pos, k = pos + size, k + 1
    outs.append(parser.flush())
    frames = [o.frames for o in outs]
    cat = np.concatenate
    result = {"counters": cat([f.counters for f in frames]), "counts": cat([f.counts for f in frames]),
              "offsets": cat([f.offsets for f in frames])}
    if frames[0].status is not None:
        result["status"] = cat([f.status for f in frames])
        result["timestamps"] = cat([f.timestamps for f in frames])
    return result, [i for o in outs for i in o.incidents]


def assert_conserved(parser, n_frames: int) -> None:
    assert parser.pending == 0
    assert parser.bytes_received == n_frames * parser.frame_size + parser.bytes_skipped


@pytest.mark.parametrize("name", list(PROTOCOLS))
@SETTINGS
@given(data=st.binary(max_size=1500), chunks=chunkings)
def test_random_bytes_never_raise_and_every_byte_is_counted(name: str, data: bytes, chunks: list[int]) -> None:
    spec = get_protocol(name)
    parser = spec.make_parser()
    out, incidents = feed(parser, data, chunks)
    n = len(out["counters"])
    assert_conserved(parser, n)
    # whatever came out is a byte-exact well-formed frame of the input
    if n:
        if name == "ads1298":
            again = ads1298.encode_frames(out["counters"], out["counts"], out["status"], out["timestamps"])
        else:
            again = cyton.encode_frames(out["counters"], out["counts"])
        for row, off in zip(again, out["offsets"]):
            window = np.frombuffer(data[off: off + spec.frame_size], np.uint8)
            if name == "ads1298":
                assert np.array_equal(window, row)
            else:  # aux bytes and the stop byte are not decoded
                assert np.array_equal(window[:26], row[:26]) and 0xC0 <= window[32] <= 0xC6
    assert sum(i.length for i in incidents if i.kind == "garbage") == parser.bytes_skipped


def ads_frame(seq: int, values: list[int], status: int, ts: int) -> bytes:
    return ads1298.encode_frames(np.array([seq]), np.array([values]), np.array([status]), np.array([ts])).tobytes()


ads_frames = st.builds(ads_frame, st.integers(0, (1 << 32) - 1), st.lists(codes, min_size=8, max_size=8),
                       st.integers(0, (1 << 24) - 1), st.integers(0, (1 << 32) - 1))


@SETTINGS
@given(segments=st.lists(st.tuples(st.sampled_from(["frame", "frame", "garbage", "cut", "flip"]), ads_frames,
                                   st.binary(min_size=1, max_size=60), st.integers(0, 10_000)), max_size=25),
       chunks=chunkings)
def test_ads1298_recovers_every_valid_frame(segments, chunks: list[int]) -> None:
    data, expected, corrupted_with_sync = b"", [], 0
    for kind, frame, garbage, r in segments:
        if kind == "frame":
            expected.append((len(data), frame))
            data += frame
        elif kind == "garbage":
            data += garbage
        elif kind == "cut":  # a truncated frame
            data += frame[: 1 + r % (len(frame) - 1)]
        else:  # one bit flipped: the CRC must reject it
            bit = r % (8 * len(frame))
            bad = bytearray(frame)
            bad[bit // 8] ^= 1 << (bit % 8)
            data += bytes(bad)
            corrupted_with_sync += bit >= 32
    parser = ads1298.Ads1298Parser()
    out, incidents = feed(parser, data, chunks)
    assert [int(o) for o in out["offsets"]] == [off for off, _ in expected]
    for k, (_, frame) in enumerate(expected):
        again = ads1298.encode_frames(out["counters"][k:k + 1], out["counts"][k:k + 1], out["status"][k:k + 1],
                                      out["timestamps"][k:k + 1]).tobytes()
        assert again == frame
    assert parser.crc_errors >= corrupted_with_sync
    assert_conserved(parser, len(expected))


def cyton_frame(counter: int, values: list[int], stop: int) -> bytes:
    return cyton.encode_frames(np.array([counter]), np.array([values]), stop_byte=stop).tobytes()


def no_header_inside(frame: bytes) -> bytes:
    """The frame with every 0xA0 after its header replaced (a frame the garbage cannot mimic)."""
    return frame[:1] + frame[1:].replace(b"\xa0", b"\xa1")


cyton_frames = st.builds(cyton_frame, st.integers(0, 255), st.lists(codes, min_size=8, max_size=8),
                         st.integers(0xC0, 0xC6))


@SETTINGS
@given(segments=st.lists(st.tuples(st.sampled_from(["frame", "frame", "garbage", "cut"]), cyton_frames,
                                   st.binary(min_size=1, max_size=60), st.integers(0, 10_000)), max_size=25),
       chunks=chunkings)
def test_cyton_recovers_every_valid_frame_after_garbage(segments, chunks: list[int]) -> None:
    """Any garbage and truncated packets; valid packets whose payload holds no 0xA0 header byte.

    Without a CRC, a packet whose payload holds 0xA0 can be outvoted by a look-alike made of the
    garbage around it; such packets are covered by the next test (no garbage around them).
    """
    data, expected, junk = b"", [], []
    for kind, frame, garbage, r in segments:
        frame = no_header_inside(frame)
        if kind == "frame":
            expected.append((len(data), frame))
            data += frame
        else:
            piece = garbage if kind == "garbage" else frame[: 1 + r % (len(frame) - 1)]
            junk.append((len(data), len(data) + len(piece)))
            data += piece
    parser = cyton.CytonParser()
    out, _ = feed(parser, data, chunks)
    offsets = [int(o) for o in out["offsets"]]
    valid = {off for off, _ in expected}
    assert valid <= set(offsets)
    for off in set(offsets) - valid:  # a look-alike may come out of garbage, never out of a valid packet
        assert not any(v < off + cyton.FRAME_SIZE and off < v + cyton.FRAME_SIZE for v in valid)
    for k, off in enumerate(offsets):
        if off in valid:
            frame = dict(expected)[off]
            again = cyton.encode_frames(out["counters"][k:k + 1], out["counts"][k:k + 1], frame[32]).tobytes()
            assert again == frame
    assert_conserved(parser, len(offsets))


@SETTINGS
@given(frames=st.lists(cyton_frames, max_size=40), chunks=chunkings)
def test_cyton_back_to_back_packets_all_recovered(frames: list[bytes], chunks: list[int]) -> None:
    data = b"".join(frames)
    parser = cyton.CytonParser()
    out, incidents = feed(parser, data, chunks)
    assert [int(o) for o in out["offsets"]] == [33 * k for k in range(len(frames))]
    assert not incidents and parser.bytes_skipped == 0


def test_crc_is_zlib_crc32_iso_hdlc() -> None:
    assert zlib.crc32(b"123456789") == 0xCBF43926  # the CRC-32/ISO-HDLC check value the spec quotes
    frame = ads_frame(7, [1, -1, 2, -2, 3, -3, 0x7FFFFF, -0x800000], 0xC00000, 14000)
    assert int.from_bytes(frame[39:43], "big") == zlib.crc32(frame[:39])
    assert frame[:4] == ads1298.SYNC and len(frame) == ads1298.FRAME_SIZE == 43


def test_lead_off_bits_map_to_electrodes() -> None:
    masks = ads1298.lead_off_masks(("I", "II", "V1", "V2", "V3", "V4", "V5", "V6"))
    assert masks["LA"] == 1 << 12  # IN1P
    assert masks["LL"] == 1 << 13  # IN2P
    assert masks["RA"] == (1 << 4) | (1 << 5)  # IN1N and IN2N
    assert [masks[f"V{k}"] for k in range(1, 7)] == [1 << (14 + k) for k in range(6)]
    word = int(ads1298.status_words(["V3", "RA"], ("I", "II", "V1", "V2", "V3", "V4", "V5", "V6"))[0])
    states = ads1298.electrode_states(word, masks)
    assert [e for e, off in states.items() if off] == ["RA", "V3"]
    assert word >> 20 == 0b1100
    # a channel map without chest leads reports those electrodes as unknown
    assert ads1298.lead_off_masks(("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2"))["V6"] is None


def test_scale_factors() -> None:
    assert cyton.mv_per_count(24) == pytest.approx(4.5 / 24 / (2 ** 23 - 1) * 1e3)
    assert ads1298.mv_per_count(6) == pytest.approx(2.4 / 6 / 2 ** 23 * 1e3)
    with pytest.raises(Exception, match="not a OpenBCI Cyton"):
        get_protocol("cyton").mv_per_count(5)


def test_byte_rates_fit_the_baud_rates() -> None:
    for spec in PROTOCOLS.values():
        bits_per_s = spec.byte_rate * 10  # 8N1: 10 bits a byte
        assert bits_per_s < 0.75 * spec.baudrate, spec.name


def test_protocol_document_example_and_masks_match_the_code() -> None:
    """docs/protocol-ads1298.md is what a firmware author reads: its example and tables must hold."""
    doc = (Path(__file__).resolve().parents[1] / "docs" / "protocol-ads1298.md").read_text()
    leads = ("I", "II", "V1", "V2", "V3", "V4", "V5", "V6")
    codes = np.array([[20972, -10486, 5243, 0, 0x7FFFFF, -1, 1, -0x800000]])
    frame = ads1298.encode_frames(np.array([1000]), codes, ads1298.status_words(["V3"], leads),
                                  np.array([2_000_000])).tobytes()
    dump = re.search(r"```\n(0000:.*?)```", doc, re.S).group(1)
    assert bytes.fromhex(" ".join(line.split(":", 1)[1] for line in dump.strip().splitlines())) == frame
    assert f"CRC = 0x{int.from_bytes(frame[39:], 'big'):08X}" in doc
    assert codes[0, 0] == round(1.0 / ads1298.mv_per_count(6))
    for electrode, mask in ads1298.lead_off_masks(leads).items():
        assert re.search(rf"\| {electrode} \|[^\n]*`0x{mask:06X}`", doc), electrode
    assert "AA 55 EC 98" in doc and f"{ads1298.BAUDRATE}" in doc.replace(" ", "")
