"""Test helpers for the engine: a synthetic ECG, WFDB records of it, a bundle that reads lead I's polarity,
and a live source fed by the test (the same Source interface as a serial device)."""

from __future__ import annotations

import queue
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import wfdb

from bedside.leads import CANONICAL_LEADS, INDEPENDENT_LEADS, LEAD_INDEX, derive_limb_leads
from bedside.sources import Block, LinkEvent
from tests.bundles import LABELS, make_bundle

#: Per-lead amplitude (mV) of P, R, T for the 8 independent leads (limb leads follow from I and II).
_SHAPE = {"I": (0.08, 0.9, 0.25), "II": (0.12, 1.3, 0.35), "V1": (0.05, 0.5, -0.1), "V2": (0.06, 1.1, 0.4),
          "V3": (0.06, 1.4, 0.45), "V4": (0.07, 1.6, 0.4), "V5": (0.07, 1.4, 0.3), "V6": (0.06, 1.0, 0.25)}


def synthetic_ecg(duration_s: float, fs_hz: float, hr_bpm: float | np.ndarray = 72.0, seed: int = 0,
                  noise_mv: float = 0.01) -> np.ndarray:
    """[12, n] float32 mV in canonical order: Gaussian P-QRS-T beats, a little noise and wander."""
    rng = np.random.default_rng(seed)
    n = int(round(duration_s * fs_hz))
    t = np.arange(n) / fs_hz
    rate = np.broadcast_to(np.asarray(hr_bpm, dtype=np.float64), (n,))
    phase = np.cumsum(rate / 60.0 / fs_hz)  # beats since the start
    beat_times = np.interp(np.arange(1, int(phase[-1]) + 1) - 0.5, phase, t)
    leads = {}
    for name, (p, r, tw) in _SHAPE.items():
        x = np.zeros(n)
        for bt in beat_times:
            lo, hi = max(0, int((bt - 0.35) * fs_hz)), min(n, int((bt + 0.5) * fs_hz))
            s = t[lo:hi] - bt
            x[lo:hi] += (p * np.exp(-((s + 0.16) / 0.025) ** 2) - 0.1 * r * np.exp(-((s + 0.03) / 0.008) ** 2)
                         + r * np.exp(-(s / 0.011) ** 2) - 0.2 * r * np.exp(-((s - 0.03) / 0.009) ** 2)
                         + tw * np.exp(-((s - 0.28) / 0.05) ** 2))
        x += 0.05 * np.sin(2 * np.pi * 0.2 * t + rng.uniform(0, 6)) + rng.normal(0, noise_mv, n)
        leads[name] = x
    derived = derive_limb_leads(leads["I"], leads["II"])
    return np.stack([leads[k] if k in leads else derived[k] for k in CANONICAL_LEADS]).astype(np.float32)


def write_record(folder: Path, name: str, x_mv: np.ndarray, fs_hz: float, independent_only: bool = True) -> Path:
    """Write [12, n] mV as a WFDB record (format 16, 1 uV resolution); the 8 measured leads by default."""
    names = list(INDEPENDENT_LEADS) if independent_only else list(CANONICAL_LEADS)
    signal = np.stack([x_mv[LEAD_INDEX[k]] for k in names], axis=1).astype(np.float64)
    wfdb.wrsamp(name, fs=fs_hz, units=["mV"] * len(names), sig_name=names, p_signal=signal, fmt=["16"] * len(names),
                adc_gain=[1000.0] * len(names), baseline=[0] * len(names), write_dir=str(folder))
    return folder / name


def polarity_bundle(path: Path, gain: float = 0.01, threshold: float = 0.5,
                    not_validated: tuple[str, ...] = ()) -> Path:
    """A bundle whose edema score is sigmoid(gain * sum of scaled lead I): ~0 for upright QRS, ~1 inverted.

    Pleural effusion and cardiomegaly stay near 0 (bias -6). Labels in ``not_validated`` never alarm.
    """
    weights = np.zeros((12 * 1000, len(LABELS)), dtype=np.float32)
    weights[LEAD_INDEX["I"] * 1000:(LEAD_INDEX["I"] + 1) * 1000, LABELS.index("edema")] = gain
    bias = np.array([0.0 if label == "edema" else -6.0 for label in LABELS], dtype=np.float32)
    return make_bundle(path, weights=weights, bias=bias, thresholds={label: threshold for label in LABELS},
                       not_validated=not_validated)


def flip_lead_i(x_mv: np.ndarray, fs_hz: float, spans_s: list[tuple[float, float]]) -> np.ndarray:
    """Invert lead I (and so the limb leads derived from it) over [start, stop) spans: the 'pathology'."""
    out = x_mv.copy()
    i, ii = out[LEAD_INDEX["I"]].copy(), out[LEAD_INDEX["II"]]
    for a, b in spans_s:
        i[int(a * fs_hz):int(b * fs_hz)] *= -1
    derived = derive_limb_leads(i, ii)
    out[LEAD_INDEX["I"]] = i
    for name, lead in derived.items():
        out[LEAD_INDEX[name]] = lead
    return out


class FeedSource:
    """A live Source the test feeds: blocks and link events are queued, ``connected`` is settable."""

    kind = "live"
    realtime = True
    description = "test://feed"

    def __init__(self, fs_hz: float):
        self._fs = fs_hz
        self.queue: queue.SimpleQueue = queue.SimpleQueue()
        self.connected = True
        self.frames_lost = 0
        self.opened = self.closed = False
        self._ended = False

    @property
    def fs_hz(self) -> float:
        return self._fs

    def open(self) -> None:
        self.opened = True

    def close(self) -> None:
        self.closed = True

    def put_block(self, first_index: int, data: np.ndarray, lead_off: dict | None = None) -> None:
        self.queue.put(Block(first_index, np.asarray(data, dtype=np.float32), time.time(), lead_off or {}, self._fs))

    def put_event(self, kind: str, sample_index: int | None = None, length: int | None = None) -> None:
        self.queue.put(LinkEvent(kind, time.time(), sample_index, length, f"test {kind}"))

    def end(self) -> None:
        self.queue.put(None)

    def poll(self, timeout_s: float):
        if self._ended:
            return None
        try:
            items = [self.queue.get(timeout=timeout_s)]
        except queue.Empty:
            return []
        while items[-1] is not None:
            try:
                items.append(self.queue.get_nowait())
            except queue.Empty:
                break
        if items[-1] is None:
            self._ended = True
            items.pop()
        return items


def write_step_record(folder: Path) -> Path:
    """3 minutes at 500 Hz written under ``folder``; lead I inverted (the edema 'risk') from 60 s to 120 s."""
    return write_record(folder, "step", flip_lead_i(synthetic_ecg(180, 500.0, seed=5), 500.0, [(60, 120)]), 500.0)


def wait_until(predicate: Callable[[], bool], timeout_s: float = 30.0, step_s: float = 0.02) -> bool:
    """Poll ``predicate`` every ``step_s`` until it holds or ``timeout_s`` passed; its last value."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step_s)
    return predicate()
