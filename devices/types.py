"""What a driver delivers: sample blocks in mV, device events and counters."""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

#: Electrodes whose contact a board can report (RL is the driven reference and is not reported).
ELECTRODES: tuple[str, ...] = ("RA", "LA", "LL", "V1", "V2", "V3", "V4", "V5", "V6")

#: Every kind of :class:`DeviceEvent`. ``reconnect``: a port proved to be the board again (valid
#: frames); ``refused``: a port was opened and not used (another board's serial, or no valid frames
#: where nothing may be written), its detail says what to do; ``plain_port``: the port is given by a
#: plain kernel name such as /dev/ttyUSB0 (see devices.identity).
EVENT_KINDS: frozenset[str] = frozenset(
    {"gap", "crc_error", "resync", "disconnect", "reconnect", "lead_off", "lead_on", "garbage", "refused",
     "plain_port"})


@dataclass(frozen=True, eq=False)
class SampleBlock:
    """Contiguous samples of the board's channels; a gap in the device sequence ends a block."""

    first_index: int  # device sample index of the first sample, unwrapped, monotonic since stream start
    fs_hz: float  # nominal sampling rate of the device
    leads: tuple[str, ...]  # canonical lead name of each row
    samples_mv: np.ndarray  # [len(leads), n] float32 millivolts (read-only)
    host_time: float  # time.time() when the bytes of the last sample were received
    lead_off: dict[str, bool | None]  # electrode -> True (off) / False (on) / None (not carried)

    @property
    def n_samples(self) -> int:
        return int(self.samples_mv.shape[1])

    @property
    def stop_index(self) -> int:
        """Device index one past the last sample."""
        return self.first_index + self.n_samples


@dataclass(frozen=True)
class DeviceEvent:
    """Something the consumer must know besides samples (see :data:`EVENT_KINDS`)."""

    kind: str
    host_time: float  # time.time() when the driver noticed it
    sample_index: int | None = None  # where it happened in device samples (gap: first missing sample)
    length: int | None = None  # gap: missing samples; garbage: bytes skipped
    detail: str = ""


@dataclass
class Counters:
    """Running totals since the driver started (a snapshot when read from a driver)."""

    frames_received: int = 0  # valid frames delivered as samples
    frames_lost: int = 0  # samples missing from the device sequence (sum of gap lengths)
    frames_corrupt: int = 0  # frames that failed their CRC or were rejected as inconsistent
    bytes_received: int = 0
    bytes_skipped: int = 0  # bytes that were not part of a delivered frame
    resyncs: int = 0  # times frame sync was lost and found again
    disconnects: int = 0
    reconnects: int = 0
    refused: int = 0  # ports opened and not used (another board, or no valid frames)

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}
