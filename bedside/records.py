"""Reading WFDB records (via ``wfdb``) as the canonical 12 leads in millivolts.

:func:`open_record` reads only the header and decides whether the record can feed the model: which
channel holds which canonical lead, which leads must be derived, the sampling rate and the unit
scale. :meth:`EcgRecord.read` then reads any sample range, so a 24-hour record is never loaded
whole. Single- and multi-segment records, any signal format wfdb reads, multi-frequency records
(an ECG channel with several samples per frame) and any sampling rate are accepted.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import wfdb

from bedside.errors import RecordError
from bedside.leads import CANONICAL_LEADS, DERIVED_LEADS, canonical_name, derive_limb_leads, missing_leads
from bedside.preprocess import DEFAULT_RECIPE, Recipe, input_samples_for_window

#: Physical units accepted as voltage, with the factor to millivolts (matched case-insensitively).
VOLTAGE_TO_MV: dict[str, float] = {"mv": 1.0, "uv": 1e-3, "µv": 1e-3, "μv": 1e-3, "nv": 1e-6, "v": 1e3}


def record_base(path: str | os.PathLike[str]) -> str:
    """A record path without a ``.hea``/``.dat`` extension, as wfdb expects it."""
    p = str(path)
    for ext in (".hea", ".dat", ".mat", ".atr"):
        if p.endswith(ext):
            return p[: -len(ext)]
    return p


@dataclass(frozen=True)
class EcgRecord:
    """A WFDB record that can feed the model; read its samples with :meth:`read`."""

    path: str  # record path without extension
    fs_hz: float  # sampling rate of the ECG leads (frame rate x samples per frame)
    n_samples: int  # length of the ECG leads, in samples at fs_hz
    channel_of: dict[str, int]  # canonical lead -> channel index in the record
    to_mv: dict[str, float]  # canonical lead -> factor from the header unit to mV
    derived: tuple[str, ...]  # canonical leads computed from I and II
    source_names: tuple[str, ...]  # every signal name as the header spells it
    samples_per_frame: int  # of the ECG channels (1 for single-frequency records)

    @property
    def name(self) -> str:
        """The record's name without its folder (paths can hold identifiers)."""
        return Path(self.path).name

    @property
    def duration_s(self) -> float:
        return self.n_samples / self.fs_hz

    def read(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Samples [start, stop) of the 12 canonical leads, [12, n] float32 in mV; NaN marks gaps."""
        stop = self.n_samples if stop is None else min(stop, self.n_samples)
        if not 0 <= start < stop:
            raise RecordError(f"record {self.name}: sample range [{start}, {stop}) is empty or outside 0..{self.n_samples}")
        spf = self.samples_per_frame
        f0, f1 = start // spf, -(-stop // spf)
        channels = sorted(set(self.channel_of.values()))
        try:
            rec = wfdb.rdrecord(self.path, sampfrom=f0, sampto=f1, channels=channels,
                                smooth_frames=spf == 1, return_res=32)
        except Exception as exc:  # wfdb raises many types for damaged files
            raise RecordError(f"record {self.name}: cannot read samples {start}..{stop}: {exc}. "
                              "Check that the signal files are complete and match the header.") from exc
        if spf == 1:
            columns = [rec.p_signal[:, k] for k in range(len(channels))]
        else:
            columns = list(rec.e_p_signal)
        offset = start - f0 * spf
        by_channel = {ch: np.asarray(col, dtype=np.float32)[offset: offset + (stop - start)]
                      for ch, col in zip(channels, columns)}
        leads = {name: by_channel[ch] * np.float32(self.to_mv[name]) for name, ch in self.channel_of.items()}
        for name, x in leads.items():
            if np.isinf(x).any():
                first = start + int(np.flatnonzero(np.isinf(x))[0])
                raise RecordError(f"record {self.name}: lead {name} becomes infinite at sample {first} (a header gain "
                                  "or unit that does not fit the samples). Check the header's gains and units.")
        if self.derived:
            computed = derive_limb_leads(leads["I"], leads["II"])
            for name in self.derived:
                leads[name] = computed[name]
        return np.stack([leads[name] for name in CANONICAL_LEADS]).astype(np.float32, copy=False)

    def chunks(self, chunk_samples: int, overlap: int = 0) -> Iterator[tuple[int, np.ndarray]]:
        """(first sample, [12, n] mV) chunks covering the record; memory bounded by ``chunk_samples``."""
        if chunk_samples <= overlap:
            raise ValueError(f"chunk_samples={chunk_samples} must exceed overlap={overlap}")
        start = 0
        while start < self.n_samples:
            stop = min(start + chunk_samples, self.n_samples)
            yield start, self.read(start, stop)
            if stop == self.n_samples:
                break
            start = stop - overlap


def _header(path: str):
    hea = Path(path + ".hea")
    if not hea.is_file():
        raise RecordError(f"{hea}: no such WFDB header. Give the record path without extension "
                          "(for example data/s0010_re for data/s0010_re.hea).")
    try:
        return wfdb.rdheader(path, rd_segments=True)
    except Exception as exc:
        raise RecordError(f"{hea}: not a readable WFDB header: {exc}") from exc


#: Sampling rates a bedside ECG record can have (Hz); anything outside is a damaged or mistyped header.
FS_RANGE_HZ = (25.0, 10000.0)


def _header_lines(hea: Path) -> list[list[str]]:
    """Fields of each record and signal line of a WFDB header (comments and blank lines skipped)."""
    try:
        text = hea.read_text(encoding="latin-1")
    except OSError:
        return []
    return [line.split() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def _number(field: str) -> float | None:
    """The leading number of a header field such as ``500/1000(3)`` or ``200.5(0)/mV``; None if none."""
    head = re.split(r"[/(]", field, maxsplit=1)[0]
    try:
        return float(head)
    except ValueError:
        return None


def _check_header_values(base: str, header) -> None:
    """Refuse a header whose sampling frequency or gains cannot describe a signal.

    Read from the header text itself: wfdb silently puts 250 Hz for a missing or unparsable
    frequency, and 200 for a gain of 0, NaN or inf, which would replay at the wrong rate or scale.
    """
    name = Path(base).name
    hea = Path(base + ".hea")
    lines = _header_lines(hea)
    fix = "Correct the header (the record line is 'NAME NSIG FS NSAMP', the gain is the signal line's 3rd field)."
    fs_field = lines[0][2] if lines and len(lines[0]) > 2 else None
    if fs_field is None:
        raise RecordError(f"record {name}: the header gives no sampling frequency (wfdb would assume 250 Hz). {fix}")
    fs = _number(fs_field)
    lo, hi = FS_RANGE_HZ
    if fs is None or not math.isfinite(fs) or not lo <= fs <= hi:
        raise RecordError(f"record {name}: sampling frequency {fs_field!r} in the header is not a rate between "
                          f"{lo:g} and {hi:g} Hz. {fix}")
    if not math.isclose(float(header.fs or 0), fs):
        raise RecordError(f"record {name}: sampling frequency {fs_field!r} in the header was read as "
                          f"{header.fs} Hz. {fix}")
    signal_files: list[tuple[str, list[list[str]]]] = []
    if isinstance(header, wfdb.MultiRecord):
        for seg in header.seg_name or []:
            if seg and seg != "~":
                signal_files.append((seg, _header_lines(hea.with_name(seg + ".hea"))[1:]))
    else:
        signal_files.append((name, lines[1:]))
    for where, signal_lines in signal_files:
        for fields in signal_lines:
            if len(fields) < 3:
                continue  # no gain field: WFDB's uncalibrated default
            gain = _number(fields[2])
            if gain is None or gain == 0 or not math.isfinite(gain):
                signal = fields[8] if len(fields) > 8 else fields[0]
                value = re.split(r"[/(]", fields[2], maxsplit=1)[0]
                raise RecordError(f"record {name}: signal {signal!r} of {where} has gain {value!r}; "
                                  f"a gain must be a finite non-zero number of ADC units per physical unit. {fix}")


def _signal_layout(header) -> tuple[list[str], list[str], list[int]]:
    """(names, units, samples per frame) of a single- or multi-segment header."""
    names = list(header.sig_name or [])
    if isinstance(header, wfdb.MultiRecord):
        units_of: dict[str, str] = {}
        spf_of: dict[str, int] = {}
        for seg in header.segments or []:  # the layout segment (variable layout) comes first
            if seg is None:
                continue
            for n, u, k in zip(seg.sig_name or [], seg.units or [], seg.samps_per_frame or []):
                units_of.setdefault(n, u or "mV")
                spf_of.setdefault(n, int(k or 1))
        return names, [units_of.get(n, "mV") for n in names], [spf_of.get(n, 1) for n in names]
    units = [u or "mV" for u in (header.units or ["mV"] * len(names))]
    spf = [int(k or 1) for k in (header.samps_per_frame or [1] * len(names))]
    return names, units, spf


def open_record(path: str | os.PathLike[str], recipe: Recipe = DEFAULT_RECIPE,
                require_window: bool = True) -> EcgRecord:
    """Open a WFDB record for the model's leads, or refuse it with a message saying why.

    Refused: a record missing any of the model's leads (the message names the missing leads and
    those found), ECG leads not in voltage units, leads at different sampling rates, and (with
    ``require_window``) a record shorter than one model window.
    """
    base = record_base(path)
    header = _header(base)
    _check_header_values(base, header)
    names, units, spf = _signal_layout(header)
    channel_of: dict[str, int] = {}
    for ch, name in enumerate(names):
        canon = canonical_name(name or "")
        if canon is not None and canon not in channel_of:
            channel_of[canon] = ch
    problems: list[str] = []
    missing = [lead for lead in recipe.leads if lead in missing_leads(list(channel_of))]
    if missing:
        found = ", ".join(repr(n) for n in names) or "none"
        problems.append(
            f"the model needs leads {', '.join(recipe.leads)}; missing {', '.join(missing)}. "
            f"Leads found: {found}. Lead names are matched case-insensitively to I, II, III, aVR, aVL, "
            "aVF, V1-V6; III, aVR, aVL, aVF are derived when I and II are present. Modified or unnamed "
            "leads (MLII, 'ECG 1') are not standard leads and are never guessed")
    to_mv: dict[str, float] = {}
    for lead, ch in channel_of.items():
        unit = (units[ch] or "mV").strip()
        factor = VOLTAGE_TO_MV.get(unit.lower())
        if factor is None:
            problems.append(f"lead {names[ch]!r} is in {unit!r}, not a voltage unit "
                            f"({', '.join(sorted(VOLTAGE_TO_MV))})")
        to_mv[lead] = factor or 1.0
    lead_spf = sorted({spf[ch] for ch in channel_of.values()}) or [1]
    if len(lead_spf) != 1:
        problems.append(f"the ECG leads are sampled at different rates (samples per frame {lead_spf}); "
                        "resample them to one rate first")
    k = lead_spf[0]
    fs_hz = float(header.fs) * k
    if not FS_RANGE_HZ[0] <= fs_hz <= FS_RANGE_HZ[1]:
        raise RecordError(f"record {Path(base).name}: ECG sampled at {fs_hz:g} Hz ({header.fs:g} Hz x {k} samples "
                          f"per frame), outside {FS_RANGE_HZ[0]:g}-{FS_RANGE_HZ[1]:g} Hz. Check the header.")
    n_samples = int(header.sig_len or 0) * k
    need = input_samples_for_window(fs_hz, recipe)
    if require_window and n_samples < need:
        problems.append(f"it is {n_samples / fs_hz:.2f} s long ({n_samples} samples at {fs_hz:g} Hz); the model "
                        f"needs at least one {recipe.window_s:g} s window ({need} samples)")
    if problems:
        raise RecordError(f"{base}: cannot be used: " + "; and ".join(problems) + ".")
    derived = tuple(lead for lead in DERIVED_LEADS if lead not in channel_of)
    return EcgRecord(path=base, fs_hz=fs_hz, n_samples=n_samples, channel_of=channel_of, to_mv=to_mv,
                     derived=derived, source_names=tuple(names), samples_per_frame=k)


def read_record(path: str | os.PathLike[str], recipe: Recipe = DEFAULT_RECIPE) -> tuple[np.ndarray, float]:
    """A whole record as ([12, n] float32 mV, fs in Hz); for short records (use chunks otherwise)."""
    record = open_record(path, recipe)
    return record.read(), record.fs_hz
