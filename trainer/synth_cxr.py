"""Synthetic chest radiographs for the synthetic cohort (drawn shapes, not clinical images).

A frontal (PA or AP) image is drawn in normalised coordinates (u across, v down, both in [0, 1]):
soft tissue, two lung fields with sharp costophrenic angles, ribs, the mediastinum and a heart
silhouette whose width is the cardiothoracic ratio (CTR) times the thoracic width. The latent
severities (each in [0, 1], 0.5 being the labelling threshold) show clearly:

- cardiomegaly: CTR = 0.42 + 0.16 * severity (so the classic CTR > 0.5 rule sits at severity 0.5);
- pleural effusion: fluid fills the lung bases with a meniscus that rises laterally, blunting the
  costophrenic angles (one or both sides);
- edema: perihilar haze ("bat wings"), denser lungs, and Kerley B lines when marked.

AP views magnify the heart slightly and show shallower inspiration, as portable films do.
Lateral views are drawn too (the pairing excludes them). Images are 8-bit grey JPEGs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.ndimage import gaussian_filter

FRONTAL_SIZE = (288, 256)  # (rows, columns); not square, so the centre crop matters
LATERAL_SIZE = (288, 256)
JPEG_QUALITY = 92
DRAW_SCALE = 2  # shapes are drawn at 1/2 resolution and upsampled: 4x faster, edges stay smooth


@dataclass(frozen=True)
class Anatomy:
    """A subject's body habitus on the film (fractions of the image size)."""

    thorax_half: float  # half the thoracic width
    lung_top: float
    diaphragm: float
    centre_u: float
    heart_height: float
    brightness: float
    contrast: float


def draw_anatomy(rng: np.random.Generator) -> Anatomy:
    """Subject-level habitus: modest spread, so the CTR, not the body, sets the heart's width."""
    return Anatomy(
        thorax_half=float(rng.uniform(0.33, 0.39)),
        lung_top=float(rng.uniform(0.11, 0.16)),
        diaphragm=float(rng.uniform(0.70, 0.76)),
        centre_u=float(rng.normal(0.5, 0.012)),
        heart_height=float(rng.uniform(0.11, 0.14)),
        brightness=float(rng.normal(0.0, 0.03)),
        contrast=float(rng.uniform(0.9, 1.1)),
    )


def ctr_for(cardiomegaly: float, rng: np.random.Generator) -> float:
    """Cardiothoracic ratio for a cardiomegaly severity in [0, 1] (0.5 -> CTR 0.50)."""
    return float(0.42 + 0.16 * cardiomegaly + rng.normal(0.0, 0.008))


def _grid(size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Normalised (u, v) coordinates of a grid at half the output size (shapes are drawn there)."""
    rows, cols = size[0] // DRAW_SCALE, size[1] // DRAW_SCALE
    v, u = np.mgrid[0:rows, 0:cols].astype(np.float32)
    return (u + 0.5) / cols, (v + 0.5) / rows


def _soft(d: np.ndarray, edge: float = 0.012) -> np.ndarray:
    """Soft mask from a signed 'inside' distance-like value (positive inside)."""
    return np.clip(0.5 + d / edge, 0.0, 1.0)


def _finish(img: np.ndarray, size: tuple[int, int], anatomy: Anatomy, rng: np.random.Generator,
            angle_deg: float) -> np.ndarray:
    """Blur, upsample to ``size``, set contrast, add film noise, tilt slightly; uint8 [rows, cols]."""
    img = gaussian_filter(img, sigma=0.6)
    img = (img - 0.4) * anatomy.contrast + 0.4 + anatomy.brightness
    drawn = Image.fromarray(np.clip(img, 0.0, 1.0).astype(np.float32), mode="F")
    full = np.asarray(drawn.resize((size[1], size[0]), Image.Resampling.BILINEAR))
    full = full + rng.normal(0.0, 0.015, full.shape).astype(np.float32)
    out = Image.fromarray(np.clip(full * 255.0, 0, 255).astype(np.uint8), mode="L")
    if angle_deg:
        out = out.rotate(angle_deg, resample=Image.Resampling.BILINEAR, fillcolor=int(0.06 * 255))
    return np.asarray(out)


def draw_frontal(view: str, anatomy: Anatomy, ctr: float, effusion: float, edema: float,
                 rng: np.random.Generator, size: tuple[int, int] = FRONTAL_SIZE) -> np.ndarray:
    """A frontal radiograph (``view`` "PA" or "AP") as uint8 [rows, cols]; image right = patient left."""
    u, v = _grid(size)
    c = anatomy.centre_u
    th = anatomy.thorax_half
    ap = view == "AP"
    top = anatomy.lung_top + (0.02 if ap else 0.0)
    base = anatomy.diaphragm - (0.03 if ap else 0.0)
    img = np.full(u.shape, 0.06, dtype=np.float32)
    body = ((u - c) / 0.47) ** 2 + ((v - 0.58) / 0.62) ** 2
    img = np.where(body < 1.0, 0.42, img)
    img += 0.05 * np.exp(-((u - c) / 0.04) ** 2) * (v > 0.05)  # spine
    # lung fields: superellipses, rounder at the apex, sharp costophrenic angles at the base
    lungs = np.zeros(u.shape, dtype=np.float32)
    lateral = np.zeros_like(lungs)
    side_of = np.zeros_like(lungs)
    for side in (-1.0, 1.0):
        inner, outer = c + side * 0.055, c + side * th
        cu, ru = (inner + outer) / 2, abs(outer - inner) / 2
        cv, rv = (top + base) / 2, (base - top) / 2
        du2, dv2 = ((u - cu) / ru) ** 2, ((v - cv) / rv) ** 2
        inside = 1.0 - np.where(v < cv, du2 + dv2, du2 * du2 + dv2 * dv2)
        m = _soft(inside, 0.05)
        lungs = np.maximum(lungs, m)
        lateral = np.where(m > 0, np.clip(side * (u - c) / th, 0, 1), lateral)
        side_of = np.where(m > 0, side, side_of)
    lung_density = 0.13 + 0.06 * (v - top) / (base - top) + 0.06 * edema
    img = img * (1 - lungs) + lung_density * lungs
    # ribs: bright arcs across the lungs
    for k in range(10):
        arc = top + 0.02 + 0.062 * k + 0.06 * ((u - c) / th) ** 2
        img += 0.06 * lungs * np.exp(-((v - arc) / 0.008) ** 2)
    # hila and normal vessels, then perihilar haze and Kerley B lines for edema
    for side in (-1.0, 1.0):
        hu, hv = c + side * 0.11, 0.47
        r2 = ((u - hu) / (0.05 + 0.07 * edema)) ** 2 + ((v - hv) / (0.08 + 0.05 * edema)) ** 2
        img += lungs * (0.08 + 0.30 * edema) * np.exp(-r2)
    if edema > 0.55:
        for _ in range(int(6 + 10 * edema)):
            side = rng.choice([-1.0, 1.0])
            lu = c + side * th * rng.uniform(0.75, 0.95)
            lv = base - rng.uniform(0.03, 0.15)
            line = np.exp(-((v - lv) / 0.005) ** 2) * (np.abs(u - lu) < 0.025)
            img += 0.12 * lungs * line
    # pleural effusion: fluid at the bases with a meniscus rising laterally
    if effusion > 0.15:
        sides = [-1.0, 1.0] if rng.random() < 0.65 else [float(rng.choice([-1.0, 1.0]))]
        for side in sides:
            amount = effusion * (1.0 if side == sides[0] else rng.uniform(0.6, 1.0))
            height = 0.02 + 0.16 * amount
            level = base - height * (0.5 + 0.8 * lateral ** 2)
            fluid = lungs * (side_of == side) * _soft(v - level, 0.01)
            img = img * (1 - fluid) + 0.47 * fluid
    # mediastinum and heart; AP magnifies the heart (portable film, short distance)
    img = np.where((np.abs(u - c) < 0.05) & (v < base - 0.1) & (v > 0.04), np.maximum(img, 0.48), img)
    half_w = ctr * th * (1.06 if ap else 1.0)
    hu = c + 0.25 * half_w  # the heart lies mostly on the patient's left (image right)
    hv = base - anatomy.heart_height * 0.75
    hr = anatomy.heart_height * (1.0 + 0.35 * (ctr - 0.45))
    heart = _soft(1.0 - ((u - hu) / half_w) ** 2 - ((v - hv) / hr) ** 2, 0.08)
    img = np.maximum(img, 0.52 * heart + img * (1 - heart))
    angle = float(rng.normal(0.0, 1.5))
    return _finish(img, size, anatomy, rng, angle)


def draw_lateral(anatomy: Anatomy, ctr: float, effusion: float, edema: float,
                 rng: np.random.Generator, size: tuple[int, int] = LATERAL_SIZE) -> np.ndarray:
    """A lateral radiograph as uint8 [rows, cols] (anterior to the left)."""
    u, v = _grid(size)
    img = np.full(u.shape, 0.06, dtype=np.float32)
    img = np.where(((u - 0.5) / 0.42) ** 2 + ((v - 0.56) / 0.6) ** 2 < 1.0, 0.42, img)
    lung = _soft(1.0 - ((u - 0.5) / 0.3) ** 2 - ((v - 0.45) / 0.3) ** 2, 0.05)
    img = img * (1 - lung) + (0.15 + 0.06 * edema) * lung
    img = np.where((np.abs(u - 0.76) < 0.035) & (v > 0.1), np.maximum(img, 0.55), img)  # spine
    heart = _soft(1.0 - ((u - 0.38) / (0.36 * ctr)) ** 2 - ((v - 0.6) / 0.13) ** 2, 0.08)
    img = np.maximum(img, 0.5 * heart + img * (1 - heart))
    if effusion > 0.15:
        fluid = lung * _soft(v - (0.74 - 0.12 * effusion - 0.2 * np.clip(u - 0.5, 0, 1)), 0.01)
        img = img * (1 - fluid) + 0.47 * fluid
    return _finish(img, size, anatomy, rng, float(rng.normal(0.0, 1.5)))


def cxr_image_path(cxr_root: Path, subject_id: int, study_id: int, dicom_id: str) -> Path:
    """``files/pNN/pNNNNNNNN/sNNNNNNNN/<dicom_id>.jpg`` under MIMIC-CXR-JPG (pNN: first 2 digits)."""
    s = str(subject_id)
    return cxr_root / "files" / f"p{s[:2]}" / f"p{s}" / f"s{study_id}" / f"{dicom_id}.jpg"


def write_jpeg(path: Path, img: np.ndarray) -> None:
    """Save an 8-bit grey image as a baseline JPEG (deterministic bytes for the same pixels)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img, mode="L").save(path, format="JPEG", quality=JPEG_QUALITY)
