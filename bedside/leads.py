"""The canonical 12-lead set: its order, the accepted lead names, and the derived limb leads.

This module is the one place where the canonical lead order is defined. It is MIMIC-IV-ECG's
native order (aVF before aVL), which the models are trained on.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

CANONICAL_LEADS: tuple[str, ...] = (
    "I", "II", "III", "aVR", "aVF", "aVL", "V1", "V2", "V3", "V4", "V5", "V6",
)
#: The 8 independent leads an acquisition board measures; the other 4 follow from I and II.
INDEPENDENT_LEADS: tuple[str, ...] = ("I", "II", "V1", "V2", "V3", "V4", "V5", "V6")
#: Limb leads computed from I and II (Einthoven's and Goldberger's relations).
DERIVED_LEADS: tuple[str, ...] = ("III", "aVR", "aVF", "aVL")

LEAD_INDEX: dict[str, int] = {name: i for i, name in enumerate(CANONICAL_LEADS)}
_BY_LOWER: dict[str, str] = {name.lower(): name for name in CANONICAL_LEADS}


def canonical_name(name: str) -> str | None:
    """Return the canonical spelling of a lead name (case-insensitive, surrounding blanks ignored).

    Names that are not one of the 12 standard leads (``MLII``, ``V``, ``ECG 1``, ``vx``) give None:
    a modified or unnamed lead is never silently taken for a standard one.
    """
    return _BY_LOWER.get(name.strip().lower())


def derive_limb_leads(lead_i: np.ndarray, lead_ii: np.ndarray) -> dict[str, np.ndarray]:
    """III, aVR, aVF, aVL from leads I and II (same units in, same units out)."""
    return {
        "III": lead_ii - lead_i,
        "aVR": -(lead_i + lead_ii) / 2.0,
        "aVF": lead_ii - lead_i / 2.0,
        "aVL": lead_i - lead_ii / 2.0,
    }


def assemble_canonical(signals: dict[str, np.ndarray]) -> np.ndarray:
    """Stack named leads ([n] arrays, canonical names) into a [12, n] array in canonical order.

    Missing derived leads are computed from I and II; a recorded derived lead is kept as recorded.
    Raises KeyError naming the missing leads when an independent lead is absent.
    """
    missing = [name for name in INDEPENDENT_LEADS if name not in signals]
    if missing:
        raise KeyError(", ".join(missing))
    derived = derive_limb_leads(signals["I"], signals["II"])
    rows = [signals[name] if name in signals else derived[name] for name in CANONICAL_LEADS]
    return np.stack(rows).astype(np.float32, copy=False)


def missing_leads(found: Sequence[str]) -> list[str]:
    """Canonical leads that cannot be had from ``found`` (canonical names), in canonical order."""
    have = set(found)
    if {"I", "II"} <= have:
        have |= set(DERIVED_LEADS)
    return [name for name in CANONICAL_LEADS if name not in have]
