"""The pathologies the models predict and how CheXpert values become training targets.

This module is the one place where the label set is defined. CheXpert labels (MIMIC-CXR-JPG's
``mimic-cxr-2.0.0-chexpert.csv.gz``) take the values 1.0 (positive), 0.0 (negative), -1.0
(uncertain) and blank (not mentioned). The paper counts only 1.0 as positive; which values count as
positive is configurable (``label_positive``) and recorded in every cache manifest.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

#: Label keys in the order of every label axis (cache ``labels.npy``, model outputs, bundles).
LABELS: tuple[str, ...] = ("edema", "pleural_effusion", "cardiomegaly")

#: The CheXpert column that holds each label, in the order of :data:`LABELS`.
LABEL_COLUMNS: dict[str, str] = {
    "edema": "Edema",
    "pleural_effusion": "Pleural Effusion",
    "cardiomegaly": "Cardiomegaly",
}

#: All 14 finding columns of ``mimic-cxr-2.0.0-chexpert.csv.gz`` in the file's order.
CHEXPERT_COLUMNS: tuple[str, ...] = (
    "Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Enlarged Cardiomediastinum",
    "Fracture", "Lung Lesion", "Lung Opacity", "No Finding", "Pleural Effusion", "Pleural Other",
    "Pneumonia", "Pneumothorax", "Support Devices",
)

#: The values a CheXpert cell can hold besides blank (NaN).
CHEXPERT_VALUES: tuple[float, ...] = (1.0, 0.0, -1.0)

#: The paper's mapping: only 1.0 is positive; 0.0, -1.0 and blank are negative.
DEFAULT_POSITIVE: tuple[float, ...] = (1.0,)


def validate_positive(values: Iterable[float]) -> tuple[float, ...]:
    """Check a ``label_positive`` choice; returns it sorted high to low without duplicates.

    Raises ValueError naming the bad value and the allowed ones.
    """
    out: list[float] = []
    for v in values:
        try:
            f = float(v)
        except (TypeError, ValueError):
            raise ValueError(f"label_positive value {v!r} is not a number; choose from "
                             f"{list(CHEXPERT_VALUES)} (blank always counts as negative)") from None
        if f not in CHEXPERT_VALUES:
            raise ValueError(f"label_positive value {v!r} is not a CheXpert value; choose from "
                             f"{list(CHEXPERT_VALUES)} (blank always counts as negative)")
        if f not in out:
            out.append(f)
    if not out:
        raise ValueError("label_positive is empty; give at least one of "
                         f"{list(CHEXPERT_VALUES)} (the paper uses 1.0)")
    return tuple(sorted(out, reverse=True))


def binarize(raw: np.ndarray, positive: Sequence[float] = DEFAULT_POSITIVE) -> np.ndarray:
    """Raw CheXpert values (NaN for blank) to float32 targets in {0, 1} (1 where in ``positive``)."""
    raw = np.asarray(raw, dtype=np.float64)
    return np.isin(raw, np.asarray(positive, dtype=np.float64)).astype(np.float32)
