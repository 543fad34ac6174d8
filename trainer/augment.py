"""3KG augmentation of 12-lead ECGs (Gopal et al., ML4H 2021), as CroMoTEX pretrains with it.

Order of operations, per view (training only; the bedside never augments):

1. in millivolts, on the conditioned window (``bedside.preprocess.condition``): project the 8
   independent leads (I, II, V1-V6) to a vectorcardiogram with the inverse Dower matrix, rotate it
   by a random angle in [-45, 45] degrees about each axis, scale each axis by U(1, 1.5), project back
   to the 8 leads, and re-derive III, aVR, aVF, aVL from the new I and II with
   ``bedside.leads`` (so each lands in its canonical slot: the public code swapped aVL and aVF);
2. ``bedside.preprocess.scale`` with the run's recipe: the one scaling that the bedside applies too;
3. mask a random 25 % stretch of each lead (its own start per lead).

Why masking comes after the scaling, and with the lead's median: masking before the scaling would
change the lead's min and max whenever the stretch holds the R peak, so the visible part of the
lead would be scaled differently from the unmasked signal the bedside sees. After min-max scaling,
0 is the midpoint of the lead's range, not its baseline; the median of a baseline-removed lead is
its isoelectric level, so a median-filled stretch reads as a flat baseline, the least surprising
"no information" value. This is a training-only augmentation, not a gap: gaps in bedside ECGs are
never filled.

Back-projection: ``"pinv"`` (the paper's and 3KG's) maps the rotated VCG back through the
pseudo-inverse of the inverse Dower matrix, so every lead is rebuilt from the 3-D dipole alone;
``"residual"`` adds the change of the dipole to the original leads, so the part of the ECG a dipole
does not explain is kept and the identity transform returns the input exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial.transform import Rotation

from bedside.leads import LEAD_INDEX, assemble_canonical
from bedside.preprocess import DEFAULT_RECIPE, Recipe, scale

#: Columns of :data:`INVERSE_DOWER`, in the published order.
DOWER_LEADS: tuple[str, ...] = ("V1", "V2", "V3", "V4", "V5", "V6", "I", "II")
#: Inverse Dower transform, rows X, Y, Z (Edenbrandt & Pahlm, J Electrocardiol 21(4), 1988), mV to mV.
INVERSE_DOWER: np.ndarray = np.array([
    [-0.172, -0.074, 0.122, 0.231, 0.239, 0.194, 0.156, -0.010],
    [0.057, -0.019, -0.106, -0.022, 0.041, 0.048, -0.227, 0.887],
    [-0.229, -0.310, -0.246, -0.063, 0.055, 0.108, 0.022, 0.102],
])
#: Back-projection from the VCG to the 8 independent leads (Moore-Penrose pseudo-inverse).
DOWER_PINV: np.ndarray = np.linalg.pinv(INVERSE_DOWER)
_ROWS = [LEAD_INDEX[name] for name in DOWER_LEADS]
PROJECTIONS: tuple[str, ...] = ("pinv", "residual")


@dataclass(frozen=True)
class Augment3KG:
    """Parameters of the 3KG augmentation; the defaults are the paper's."""

    rotation_deg: float = 45.0  # uniform in [-rotation_deg, rotation_deg] about each of x, y, z
    scale_max: float = 1.5  # each VCG axis scaled by U(1, scale_max)
    mask_fraction: float = 0.25  # fraction of each lead's samples masked (one contiguous stretch)
    projection: str = "pinv"  # see PROJECTIONS

    def validate(self) -> None:
        """Raise ValueError naming the parameter when a value cannot be used."""
        if not 0 <= self.rotation_deg <= 180:
            raise ValueError(f"rotation_deg={self.rotation_deg} must be within [0, 180] degrees")
        if not self.scale_max >= 1:
            raise ValueError(f"scale_max={self.scale_max} must be >= 1 (axes are scaled by U(1, scale_max))")
        if not 0 <= self.mask_fraction < 1:
            raise ValueError(f"mask_fraction={self.mask_fraction} must be in [0, 1)")
        if self.projection not in PROJECTIONS:
            raise ValueError(f"projection {self.projection!r} unknown; choices: {list(PROJECTIONS)}")


def leads_to_vcg(x_mv: np.ndarray) -> np.ndarray:
    """[12, n] canonical leads in mV to the [3, n] vectorcardiogram (X, Y, Z) in mV."""
    return INVERSE_DOWER @ x_mv[_ROWS]


def random_vcg_transform(rng: np.random.Generator, rotation_deg: float, scale_max: float) -> np.ndarray:
    """A [3, 3] matrix S @ R: rotation by U(-a, a) degrees about x, y, z, then per-axis scale U(1, s)."""
    angles = rng.uniform(-rotation_deg, rotation_deg, size=3)
    rot = Rotation.from_euler("xyz", angles, degrees=True).as_matrix()
    return np.diag(rng.uniform(1.0, scale_max, size=3)) @ rot


def transform_leads(x_mv: np.ndarray, matrix: np.ndarray, projection: str = "pinv") -> np.ndarray:
    """Apply a [3, 3] VCG transform to a [12, n] mV window; derived limb leads recomputed in their slots."""
    if projection not in PROJECTIONS:
        raise ValueError(f"projection {projection!r} unknown; choices: {list(PROJECTIONS)}")
    vcg = leads_to_vcg(x_mv)
    if projection == "pinv":
        eight = DOWER_PINV @ (matrix @ vcg)
    else:
        eight = x_mv[_ROWS] + DOWER_PINV @ (matrix @ vcg - vcg)
    # only the independent leads go in: assemble_canonical derives III, aVR, aVF, aVL from I and II
    return assemble_canonical(dict(zip(DOWER_LEADS, eight)))


def mask_stretches(x: np.ndarray, rng: np.random.Generator, fraction: float) -> np.ndarray:
    """Copy of a [12, n] (scaled) window with one random stretch of each lead set to the lead's median."""
    out = np.array(x, dtype=np.float32, copy=True)
    n = out.shape[-1]
    length = int(round(fraction * n))
    if length == 0:
        return out
    starts = rng.integers(0, n - length + 1, size=out.shape[0])
    medians = np.median(out, axis=-1)
    for lead, start in enumerate(starts):
        out[lead, start:start + length] = medians[lead]
    return out


def augment_view(x_mv: np.ndarray, rng: np.random.Generator, params: Augment3KG,
                 recipe: Recipe = DEFAULT_RECIPE) -> np.ndarray:
    """One 3KG view of a conditioned [12, n] mV window, as the model input: scaled (recipe), masked."""
    matrix = random_vcg_transform(rng, params.rotation_deg, params.scale_max)
    scaled = scale(transform_leads(x_mv, matrix, params.projection), recipe)
    return mask_stretches(scaled, rng, params.mask_fraction)
