"""3KG augmentation: VCG geometry, derived leads in their canonical slots, masking after scaling."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from bedside.leads import CANONICAL_LEADS, LEAD_INDEX, assemble_canonical
from bedside.preprocess import DEFAULT_RECIPE, condition, scale_minmax
from trainer.augment import (DOWER_PINV, INVERSE_DOWER, Augment3KG, augment_view, leads_to_vcg, mask_stretches,
                             random_vcg_transform, transform_leads)

I, II, III, AVR, AVF, AVL = (LEAD_INDEX[n] for n in ("I", "II", "III", "aVR", "aVF", "aVL"))


def random_ecg(seed: int, n: int = 1000) -> np.ndarray:
    """A [12, n] mV window whose limb leads obey Einthoven/Goldberger, like a real recording."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / 100.0
    leads = {name: (rng.normal(0, 0.3) * np.sin(2 * np.pi * rng.uniform(0.5, 3) * t + rng.uniform(0, 6))
                    + rng.normal(0, 0.05, n)) for name in ("I", "II", "V1", "V2", "V3", "V4", "V5", "V6")}
    return assemble_canonical(leads).astype(np.float64)


def test_dower_matrices_are_inverse_on_the_vcg():
    assert np.allclose(INVERSE_DOWER @ DOWER_PINV, np.eye(3), atol=1e-12)
    assert INVERSE_DOWER.shape == (3, 8)


@pytest.mark.parametrize("projection", ["pinv", "residual"])
def test_derived_leads_land_in_their_canonical_slots(projection):
    x = random_ecg(0)
    m = random_vcg_transform(np.random.default_rng(1), 45.0, 1.5)
    y = transform_leads(x, m, projection)
    assert y.shape == (12, 1000)
    assert np.allclose(y[III], y[II] - y[I], atol=1e-5)
    assert np.allclose(y[AVR], -(y[I] + y[II]) / 2, atol=1e-5)
    assert np.allclose(y[AVF], y[II] - y[I] / 2, atol=1e-5)
    assert np.allclose(y[AVL], y[I] - y[II] / 2, atol=1e-5)
    # the public code's bug (aVL written into aVF's slot) would fail the line above: the two differ
    assert not np.allclose(y[AVF], y[I] - y[II] / 2, atol=1e-3)
    assert CANONICAL_LEADS[AVF] == "aVF" and CANONICAL_LEADS[AVL] == "aVL"


@pytest.mark.parametrize("projection", ["pinv", "residual"])
def test_vcg_of_the_output_is_the_transformed_vcg(projection):
    x = random_ecg(2)
    m = random_vcg_transform(np.random.default_rng(3), 45.0, 1.5)
    assert np.allclose(leads_to_vcg(transform_leads(x, m, projection)), m @ leads_to_vcg(x), atol=1e-5)


def test_residual_identity_returns_the_input():
    x = random_ecg(4)
    assert np.allclose(transform_leads(x, np.eye(3), "residual"), x, atol=1e-5)


def test_pinv_identity_keeps_a_pure_dipole():
    """An ECG that is exactly a dipole's projection survives the paper's back-projection unchanged."""
    vcg = np.random.default_rng(5).normal(size=(3, 500))
    eight = DOWER_PINV @ vcg
    x = assemble_canonical(dict(zip(("V1", "V2", "V3", "V4", "V5", "V6", "I", "II"), eight)))
    assert np.allclose(transform_leads(x, np.eye(3), "pinv"), x, atol=1e-5)


def test_random_transform_respects_ranges():
    rng = np.random.default_rng(6)
    for _ in range(50):
        m = random_vcg_transform(rng, 45.0, 1.5)
        sv = np.linalg.svd(m, compute_uv=False)
        assert np.linalg.det(m) > 0
        assert sv.min() >= 1 - 1e-9 and sv.max() <= 1.5 + 1e-9
    assert np.allclose(random_vcg_transform(rng, 0.0, 1.0), np.eye(3))
    # rotation only: orthogonal, and its x-y-z Euler angles all within +-45 degrees
    from scipy.spatial.transform import Rotation

    for _ in range(50):
        r = random_vcg_transform(rng, 45.0, 1.0)
        assert np.allclose(r @ r.T, np.eye(3), atol=1e-9)
        assert np.abs(Rotation.from_matrix(r).as_euler("xyz", degrees=True)).max() <= 45 + 1e-6


def test_mask_is_one_stretch_per_lead_at_the_median():
    x = scale_minmax(random_ecg(7).astype(np.float32))
    y = mask_stretches(x, np.random.default_rng(8), 0.25)
    starts = set()
    for lead in range(12):
        changed = np.flatnonzero(~np.isclose(y[lead], x[lead]))
        masked_value = np.median(x[lead])
        stretch = np.flatnonzero(np.isclose(y[lead], masked_value) & ~np.isclose(x[lead], masked_value))
        assert len(changed) > 0
        run = np.arange(changed.min(), changed.max() + 1)
        assert len(run) <= 250 and set(changed) <= set(run) and set(stretch) == set(changed)
        assert np.allclose(y[lead, run], masked_value)
        starts.add(int(run[0]))
    assert len(starts) > 1  # each lead has its own stretch
    assert not np.shares_memory(x, y)


def test_mask_fraction_zero_is_identity():
    x = scale_minmax(random_ecg(9).astype(np.float32))
    assert np.array_equal(mask_stretches(x, np.random.default_rng(0), 0.0), x)


def test_augment_view_is_scaled_deterministic_and_different_per_seed():
    x = random_ecg(10).astype(np.float32)
    params = Augment3KG()
    a = augment_view(x, np.random.default_rng(1), params)
    b = augment_view(x, np.random.default_rng(1), params)
    c = augment_view(x, np.random.default_rng(2), params)
    assert a.dtype == np.float32 and a.shape == (12, 1000)
    assert np.array_equal(a, b) and not np.allclose(a, c)
    assert a.min() >= -1 and a.max() <= 1
    # every lead spans [-1, 1] except where masking removed an extreme
    assert np.mean(np.isclose(a.max(axis=1), 1.0)) >= 0.5


def test_augment_view_with_fixed_mv_keeps_amplitude():
    """The run's recipe scales the view: fixed_mv keeps a halved ECG half as tall, minmax stretches it back."""
    x = random_ecg(11).astype(np.float32)
    params = Augment3KG()
    fixed = replace(DEFAULT_RECIPE, scaling="fixed_mv", full_scale_mv=20.0)  # large: nothing clips
    a = augment_view(x, np.random.default_rng(3), params, fixed)
    b = augment_view(0.5 * x, np.random.default_rng(3), params, fixed)
    assert np.abs(a).max() < 1 and np.allclose(b, 0.5 * a, atol=1e-6)
    c = augment_view(x, np.random.default_rng(3), params, DEFAULT_RECIPE)
    d = augment_view(0.5 * x, np.random.default_rng(3), params, DEFAULT_RECIPE)
    assert np.allclose(c, d, atol=1e-5) and not np.allclose(a, c)


@pytest.mark.parametrize("field, value", [("rotation_deg", -1.0), ("scale_max", 0.5), ("mask_fraction", 1.0),
                                          ("projection", "dower")])
def test_bad_parameters_are_named(field, value):
    with pytest.raises(ValueError, match=field):
        Augment3KG(**{field: value}).validate()


def test_real_ptb_record_in_millivolts(records_dir):
    """On a real 12-lead ECG (PTB s0010_re), conditioned in mV: a rotated view keeps a physiological size."""
    from bedside.records import read_record

    x, fs = read_record(records_dir / "s0010_re")
    mv = condition(x, fs)
    m = random_vcg_transform(np.random.default_rng(0), 45.0, 1.5)
    y = transform_leads(mv, m, "pinv")
    assert np.isfinite(y).all()
    ratio = np.abs(leads_to_vcg(y)).max() / np.abs(leads_to_vcg(mv)).max()
    assert 0.5 < ratio < 2.0  # scaling by at most 1.5 per axis after a rotation
    assert np.allclose(y[AVF], y[II] - y[I] / 2, atol=1e-5)
