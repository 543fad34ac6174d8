"""The shared preprocessing recipe: parameters, steps, gaps, and rate handling."""

from __future__ import annotations

import numpy as np
import pytest

from bedside.errors import GapError
from bedside.preprocess import (DEFAULT_RECIPE, Recipe, condition, find_gaps, input_samples_for_window,
                                median_kernel, preprocess_window, remove_baseline, scale_minmax, window_starts)


def test_default_recipe_is_the_papers():
    r = DEFAULT_RECIPE
    assert (r.fs_hz, r.window_s, r.window_samples) == (100.0, 10.0, 1000)
    assert r.baseline_filters_s == (0.2, 0.6)
    assert [median_kernel(s, r.fs_hz) for s in r.baseline_filters_s] == [21, 61]
    assert r.leads[4:6] == ("aVF", "aVL")


def test_recipe_round_trips_and_rejects_unknown_fields():
    assert Recipe.from_dict(DEFAULT_RECIPE.to_dict()) == DEFAULT_RECIPE
    with pytest.raises(ValueError, match="unknown preprocessing recipe fields"):
        Recipe.from_dict({**DEFAULT_RECIPE.to_dict(), "colour": "blue"})
    with pytest.raises(ValueError, match="scaling"):
        Recipe.from_dict({**DEFAULT_RECIPE.to_dict(), "scaling": "zscore"})


@pytest.mark.parametrize("fs", [100, 125, 250, 257, 360, 500, 1000, 62.4725 * 4])
def test_any_rate_gives_exactly_one_window(fs):
    n = input_samples_for_window(fs)
    assert n >= 10 * fs - 1
    x = np.random.default_rng(0).normal(size=(12, n)).astype(np.float32)
    assert preprocess_window(x, fs).shape == (12, 1000)


def test_resampling_keeps_a_sine_in_band():
    fs = 500.0
    t = np.arange(5000) / fs
    x = np.tile(np.sin(2 * np.pi * 10 * t), (12, 1)).astype(np.float32)  # 10 Hz, below 50 Hz Nyquist
    y = condition(x, fs)
    t100 = np.arange(1000) / 100.0
    inner = slice(100, 900)  # away from the median filters' edges
    corr = np.corrcoef(y[0, inner], np.sin(2 * np.pi * 10 * t100[inner]))[0, 1]
    assert corr > 0.99


def test_baseline_wander_is_removed():
    fs = 100.0
    t = np.arange(1000) / fs
    drift = 2.0 * np.sin(2 * np.pi * 0.2 * t)  # 0.2 Hz wander, 2 mV
    spikes = np.zeros(1000)
    spikes[::80] = 1.0  # narrow "QRS" every 0.8 s
    y = remove_baseline(np.tile(drift + spikes, (12, 1)), fs)
    assert np.abs(y[0] - spikes)[100:900].max() < 0.1


def test_minmax_scales_each_lead_and_flat_lead_maps_to_zero():
    x = np.stack([np.linspace(-3, 5, 50), np.full(50, 7.0)]).astype(np.float32)
    y = scale_minmax(x)
    assert y[0].min() == -1.0 and y[0].max() == 1.0
    assert np.all(y[1] == 0.0)


def test_gap_is_refused_never_zero_filled():
    x = np.random.default_rng(1).normal(size=(12, 5000)).astype(np.float32)
    x[3, 1000:1250] = np.nan
    x[7, 10] = np.nan
    assert find_gaps(x) == [(3, 1000, 250), (7, 10, 1)]
    with pytest.raises(GapError) as err:
        preprocess_window(x, 500.0)
    assert err.value.gaps == [(3, 1000, 250), (7, 10, 1)]
    assert "lead 3 at 2.000 s for 0.500 s" in str(err.value)


def test_short_window_is_refused():
    with pytest.raises(ValueError, match="needs 5000"):
        condition(np.zeros((12, 4999), np.float32), 500.0)


def test_window_starts_hop():
    assert window_starts(30 * 500, 500.0, 5.0) == [0, 2500, 5000, 7500, 10000]
    assert window_starts(4999, 500.0, 5.0) == []


@pytest.mark.parametrize("fs", [125, 250, 257, 360, 500, 1000])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int16])
def test_cached_resampler_is_scipys_own_design(fs, dtype):
    """resample() reuses one FIR per (up, down, dtype), bit-identical to resample_poly designing it per call."""
    from scipy.signal import resample_poly

    from bedside.preprocess import resample, resample_filter, resample_ratio

    x = (np.random.default_rng(fs).normal(size=(12, 10 * fs + 3)) * 300).astype(dtype)
    up, down = resample_ratio(fs, 100.0)
    assert np.array_equal(resample(x, fs, 100.0), resample_poly(x, up, down, axis=-1).astype(np.float32))
    h = resample_filter(up, down, "float32")
    assert resample_filter(up, down, "float32") is h and not h.flags.writeable
