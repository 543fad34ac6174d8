"""A synthetic bedside recording for demos and tests: minutes of 12-lead ECG whose latent
edema, effusion and heart-size severities rise over time, with one lead-off episode.

Synthetic, not clinical: the ECG comes from the same generator as the synthetic cohort
(:mod:`trainer.synth_ecg`), generated in 10 s segments whose severities follow a ramp from
``start`` to ``end``. Segment joins are not beat-synchronous (a small step at each join, which the
baseline filter removes). The lead-off episode is written as invalid samples (NaN in wfdb), so the
bedside must report it as a gap and never score it.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import wfdb

from bedside.leads import CANONICAL_LEADS
from trainer import synth_ecg

SEGMENT_S = 10.0


def ramp_severities(minutes: float, start: float = 0.05, end: float = 0.95) -> np.ndarray:
    """Severity per 10 s segment: flat at ``start`` for the first third, then a linear rise to ``end``."""
    n = max(1, int(round(minutes * 60 / SEGMENT_S)))
    first = n // 3
    rise = np.linspace(start, end, max(1, n - first))
    return np.concatenate([np.full(first, start), rise])[:n]


def synth_recording(minutes: float = 3.0, seed: int = 0, fs_hz: float = synth_ecg.FS_HZ,
                    lead_off: tuple[str, float, float] | None = ("V3", 40.0, 6.0)) -> np.ndarray:
    """[12, n] float32 mV; ``lead_off`` = (lead, start s, duration s) becomes NaN."""
    rng = np.random.default_rng(seed)
    traits = synth_ecg.draw_traits(rng)
    seg_n = int(SEGMENT_S * fs_hz)
    parts = []
    for sev in ramp_severities(minutes):
        state = synth_ecg.ecg_state(traits, cardiomegaly=sev, effusion=sev, edema=sev, rng=rng)
        parts.append(synth_ecg.synth_ecg(state, rng, n=seg_n, fs_hz=fs_hz))
    x = np.concatenate(parts, axis=1).astype(np.float32)
    if lead_off is not None:
        lead, t0, dur = lead_off
        a, b = int(t0 * fs_hz), int((t0 + dur) * fs_hz)
        if b <= x.shape[1]:
            x[CANONICAL_LEADS.index(lead), a:b] = np.nan
    return x


def write_recording(out: str | os.PathLike[str], minutes: float = 3.0, seed: int = 0,
                    lead_off: tuple[str, float, float] | None = ("V3", 40.0, 6.0)) -> Path:
    """Write the recording as a WFDB record (``out`` without extension); returns the record path."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    x = synth_recording(minutes, seed, lead_off=lead_off)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        wfdb.wrsamp(out.name, fs=synth_ecg.FS_HZ, units=["mV"] * 12, sig_name=list(CANONICAL_LEADS),
                    p_signal=x.T.astype(np.float64), fmt=["16"] * 12, adc_gain=[synth_ecg.ADC_GAIN_PER_MV] * 12,
                    baseline=[0] * 12, comments=["synthetic bedside recording (not clinical): severities ramp up",
                                                 f"seed {seed}, {minutes} min"], write_dir=tmp)
        for ext in (".dat", ".hea"):  # header last: a record is complete once its header exists
            os.replace(Path(tmp) / f"{out.name}{ext}", out.parent / f"{out.name}{ext}")
    return out


def _lead_off_option(text: str) -> tuple[str, float, float] | None:
    """'V3@40+6' -> ('V3', 40.0, 6.0); 'none' -> None."""
    if text.lower() == "none":
        return None
    try:
        lead, rest = text.split("@")
        start, dur = rest.split("+")
        if lead not in CANONICAL_LEADS:
            raise ValueError(f"unknown lead {lead!r}")
        return lead, float(start), float(dur)
    except ValueError as exc:
        raise ValueError(f"--lead-off {text!r}: expected LEAD@START+DURATION in seconds (e.g. V3@40+6) "
                         f"or 'none' ({exc})") from None


def synth_record_command():
    """The click command ``trainer synth-record`` (built lazily so importing this module stays light)."""
    import click

    from bedside.cli_types import FiniteFloat

    @click.command("synth-record")
    @click.option("--out", required=True, help="Record path without extension (e.g. demo/records/bed7).")
    @click.option("--minutes", default=5.0, show_default=True, type=FiniteFloat(min=0.5, max=24 * 60),
                  help="Length, minutes (at most a day).")
    @click.option("--seed", default=0, show_default=True, type=int, help="Random seed.")
    @click.option("--lead-off", default="V3@40+6", show_default=True,
                  help="Lead-off episode LEAD@START+DURATION (s), written as invalid samples; 'none' for none.")
    def command(out: str, minutes: float, seed: int, lead_off: str) -> None:
        """Write a SYNTHETIC 12-lead bedside recording (500 Hz) whose edema, effusion and heart-size
        severities rise over time, with one lead-off episode: for demos of `bedside replay`."""
        try:
            episode = _lead_off_option(lead_off)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--lead-off") from None
        path = write_recording(out, minutes, seed, lead_off=episode)
        click.echo(f"wrote {path}.hea/.dat: {minutes:g} min, 12 leads at {synth_ecg.FS_HZ} Hz (synthetic, not clinical)")

    return command


