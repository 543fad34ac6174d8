"""The protocol registry: one :class:`ProtocolSpec` per supported board, looked up by name."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from bedside.leads import INDEPENDENT_LEADS, canonical_name
from devices import ads1298, cyton
from devices.errors import DeviceError
from devices.framing import FrameParser
from devices.sequencer import Sequencer


@dataclass(frozen=True)
class ProtocolSpec:
    """Facts about one wire protocol; ``encode``/``make_parser`` are its two halves."""

    name: str
    board: str
    fs_hz: float
    channels: int
    frame_size: int
    counter_modulus: int
    baudrate: int
    gains: tuple[int, ...]
    default_gain: int
    carries_lead_off: bool
    banner: bytes  # text the board prints when reset (garbage to a frame parser)
    _mv_per_count: Callable[[int], float]
    make_parser: Callable[[], FrameParser]
    default_leads: tuple[str, ...] = INDEPENDENT_LEADS
    start_command: bytes = b"b"
    stop_command: bytes = b"s"
    identify_command: bytes = b"v"
    serial_in_banner: bool = False  # the identify line ends with "serial XXXX" (the board's identity)

    def identify_line(self, serial: str | None = None) -> bytes:
        """What the board answers to the identify command (its banner, with its serial where carried)."""
        if self.serial_in_banner and serial:
            return self.banner.rstrip(b"\n") + b" serial " + serial.encode("ascii") + b"\n"
        return self.banner

    @property
    def byte_rate(self) -> float:
        """Real-time stream rate in bytes per second."""
        return self.fs_hz * self.frame_size

    def gain_or_default(self, gain: int | None) -> int:
        if gain is None:
            return self.default_gain
        if gain not in self.gains:
            raise DeviceError(f"gain {gain} is not a {self.board} PGA gain; use one of "
                              f"{', '.join(map(str, self.gains))} (the board's setting; default {self.default_gain})")
        return gain

    def mv_per_count(self, gain: int | None = None) -> float:
        return self._mv_per_count(self.gain_or_default(gain))

    def lead_off_masks(self, leads: Sequence[str]) -> dict[str, int | None] | None:
        return ads1298.lead_off_masks(leads) if self.carries_lead_off else None

    def encode(self, index: np.ndarray, counts: np.ndarray, status: np.ndarray | None = None) -> np.ndarray:
        """[n, frame_size] uint8 frames for device indices ``index`` and codes ``counts`` [n, 8]."""
        if self.name == "ads1298":
            return ads1298.encode_frames(index, counts, status)
        return cyton.encode_frames(index, counts)

    def make_sequencer(self, leads: tuple[str, ...], gain: int | None = None) -> Sequencer:
        return Sequencer(fs_hz=self.fs_hz, leads=leads, counter_modulus=self.counter_modulus,
                         mv_per_count=self.mv_per_count(gain), frame_size=self.frame_size,
                         lead_off_masks=self.lead_off_masks(leads),
                         check_neighbours=self.counter_modulus < (1 << 16))


PROTOCOLS: dict[str, ProtocolSpec] = {
    "cyton": ProtocolSpec(
        name="cyton", board="OpenBCI Cyton (ADS1299)", fs_hz=cyton.FS_HZ, channels=8,
        frame_size=cyton.FRAME_SIZE, counter_modulus=256, baudrate=cyton.BAUDRATE, gains=cyton.GAINS,
        default_gain=cyton.DEFAULT_GAIN, carries_lead_off=False, banner=cyton.BANNER,
        _mv_per_count=cyton.mv_per_count, make_parser=cyton.CytonParser),
    "ads1298": ProtocolSpec(
        name="ads1298", board="ADS1298 12-lead frame", fs_hz=ads1298.FS_HZ, channels=8,
        frame_size=ads1298.FRAME_SIZE, counter_modulus=ads1298.SEQ_MODULUS, baudrate=ads1298.BAUDRATE,
        gains=ads1298.GAINS, default_gain=ads1298.DEFAULT_GAIN, carries_lead_off=True,
        banner=ads1298.BANNER, _mv_per_count=ads1298.mv_per_count, make_parser=ads1298.Ads1298Parser,
        serial_in_banner=True),
}
PROTOCOL_NAMES: tuple[str, ...] = tuple(PROTOCOLS)


def get_protocol(name: str) -> ProtocolSpec:
    """The spec of a protocol by name, or a DeviceError listing the valid names."""
    try:
        return PROTOCOLS[name]
    except KeyError:
        raise DeviceError(f"unknown protocol {name!r}; use one of: {', '.join(PROTOCOL_NAMES)}") from None


def check_lead_map(lead_map: Sequence[str], channels: int = 8) -> tuple[str, ...]:
    """Canonical names of the leads on channels CH1..CHn, or a DeviceError saying what is wrong."""
    names = tuple(lead_map)
    if len(names) != channels:
        raise DeviceError(f"lead map {names!r} names {len(names)} leads; the board has {channels} channels: "
                          f"give one lead per channel, e.g. {','.join(INDEPENDENT_LEADS)}")
    out = []
    for name in names:
        canon = canonical_name(str(name))
        if canon is None:
            raise DeviceError(f"lead map entry {name!r} is not a standard lead; use I, II, III, aVR, aVL, aVF, V1-V6")
        out.append(canon)
    dupes = sorted({n for n in out if out.count(n) > 1})
    if dupes:
        raise DeviceError(f"lead map {names!r} names {', '.join(dupes)} twice; each channel measures one lead")
    return tuple(out)
