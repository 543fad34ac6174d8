"""Threshold selection at an operating point, calibration fitting, and the test metrics."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import expit
from scipy.stats import norm

from export.calibration import apply_calibration, fit_calibration
from export.metrics import aurocs, label_metrics
from export.thresholds import OperatingPoint, choose_threshold, choose_thresholds, sens_spec


def test_specificity_point_on_a_uniform_grid_is_the_lowest_cut_that_meets_it():
    neg = np.arange(1000) / 1000.0  # 0.000 .. 0.999
    pos = 0.8 + (np.arange(200) + 0.5) / 1000.0  # 0.8005 .. 0.9995
    y = np.r_[np.zeros(1000), np.ones(200)]
    s = np.r_[neg, pos]
    t = choose_threshold(y, s, OperatingPoint("specificity", 0.90))
    sens, spec = sens_spec(y, s, t)
    assert spec >= 0.90
    assert 0.899 < t <= 0.9005  # above the 900th negative (0.899), at most the next score up
    assert sens == pytest.approx(np.mean(pos >= t))
    # optimal: the next lower distinct score as a cut breaks the specificity target
    lower = np.max(s[s < t])
    assert sens_spec(y, s, lower)[1] < 0.90


def test_specificity_point_on_gaussian_scores_matches_the_analytic_threshold():
    rng = np.random.default_rng(0)
    z_neg, z_pos = rng.normal(0, 1, 40000), rng.normal(1.5, 1, 40000)
    y = np.r_[np.zeros(40000), np.ones(40000)]
    s = expit(np.r_[z_neg, z_pos])
    t = choose_threshold(y, s, OperatingPoint("specificity", 0.90))
    assert t == pytest.approx(expit(norm.ppf(0.90)), abs=0.01)
    sens, spec = sens_spec(y, s, t)
    assert spec == pytest.approx(0.90, abs=0.002)
    assert sens == pytest.approx(norm.sf(norm.ppf(0.90) - 1.5), abs=0.01)


def test_sensitivity_point_takes_the_highest_cut_that_meets_it():
    rng = np.random.default_rng(1)
    y = rng.random(5000) < 0.3
    s = np.clip(rng.normal(0.3 + 0.3 * y, 0.15), 0, 1)
    t = choose_threshold(y, s, OperatingPoint("sensitivity", 0.80))
    sens, _ = sens_spec(y, s, t)
    assert sens >= 0.80
    higher = np.min(s[s >= t])  # the lowest positive-side score: a cut just above it loses it
    assert sens_spec(y, s, np.nextafter(higher, 1))[0] < 0.80


def test_tied_scores_give_a_cut_between_the_plateaus():
    s = np.r_[np.full(900, 0.2), np.full(100, 0.5), np.full(50, 0.5), np.full(50, 0.9)]
    y = np.r_[np.zeros(1000), np.ones(100)]
    t = choose_threshold(y, s, OperatingPoint("specificity", 0.90))
    assert 0.2 < t < 0.5
    assert sens_spec(y, s, t) == (1.0, 0.9)
    # ">=" and ">" decide every validation score alike at a cut between plateaus
    assert np.array_equal(s >= t, s > t)


def test_thresholds_need_both_classes_and_name_the_label():
    y = np.zeros((10, 2))
    y[:5, 1] = 1
    with pytest.raises(ValueError, match="a:.*0 positive of 10"):
        choose_thresholds(y, np.random.default_rng(0).random((10, 2)), ["a", "b"], OperatingPoint())


@pytest.mark.parametrize("text,expected", [("specificity=0.90", OperatingPoint("specificity", 0.9)),
                                           ("Sensitivity = 0.8", OperatingPoint("sensitivity", 0.8))])
def test_operating_point_parses(text, expected):
    assert OperatingPoint.parse(text) == expected


@pytest.mark.parametrize("text", ["specificity", "specificity=high", "ppv=0.9", "specificity=1.0", "sensitivity=0"])
def test_operating_point_refuses_with_the_fix(text):
    with pytest.raises(ValueError, match="specificity|sensitivity|between"):
        OperatingPoint.parse(text)


def test_platt_recovers_known_parameters():
    rng = np.random.default_rng(2)
    z = rng.normal(0, 2, 40000)
    y = (rng.random(40000) < expit(0.5 * z - 1.0)).astype(float)
    cal = fit_calibration(expit(z)[:, None], y[:, None], ["edema"], "platt")
    assert cal["method"] == "platt"
    assert cal["params"]["edema"]["a"] == pytest.approx(0.5, abs=0.05)
    assert cal["params"]["edema"]["b"] == pytest.approx(-1.0, abs=0.05)
    # the bedside's formula with those parameters gives the true probabilities back
    got = apply_calibration(expit(z)[:1000, None], ["edema"], cal)[:, 0]
    assert np.max(np.abs(got - expit(0.5 * z[:1000] - 1.0))) < 0.02


def test_isotonic_as_the_bedside_applies_it_equals_sklearn_predict():
    from sklearn.isotonic import IsotonicRegression

    rng = np.random.default_rng(3)
    p = rng.random(3000)
    y = (rng.random(3000) < p ** 2).astype(float)
    cal = fit_calibration(p[:, None], y[:, None], ["x"], "isotonic")
    knots = cal["params"]["x"]
    assert np.all(np.diff(knots["x"]) > 0) and np.all(np.diff(knots["y"]) >= 0)
    ref = IsotonicRegression(y_min=0, y_max=1, out_of_bounds="clip").fit(p, y)
    q = np.r_[rng.random(500), -0.5, 1.5]  # with points outside the fitted range
    got = apply_calibration(np.clip(q, 0, 1)[:, None].astype(np.float32), ["x"], cal)[:, 0]
    assert np.max(np.abs(got - ref.predict(np.clip(q, 0, 1)))) < 1e-5


def test_identity_and_bad_calibration_requests():
    p = np.random.default_rng(4).random((20, 1)).astype(np.float32)
    cal = fit_calibration(p, np.ones((20, 1)) * (p > 0.5), ["x"], "identity")
    assert np.array_equal(apply_calibration(p, ["x"], cal), p)
    with pytest.raises(ValueError, match="choices"):
        fit_calibration(p, p > 0.5, ["x"], "beta")
    with pytest.raises(ValueError, match="only negatives.*--calibration none"):
        fit_calibration(p, np.zeros((20, 1)), ["x"], "platt")


def test_label_metrics_report_rates_at_the_threshold_and_a_ci_around_auroc():
    rng = np.random.default_rng(5)
    y = (rng.random((2000, 1)) < 0.3).astype(float)
    raw = np.clip(rng.normal(0.4 + 0.2 * y, 0.15), 0, 1).astype(np.float32)
    m = label_metrics(y, raw, raw, ["x"], {"x": 0.55}, bootstrap=200)["x"]
    sens, spec = sens_spec(y[:, 0], raw[:, 0], 0.55)
    assert (m["sensitivity"], m["specificity"]) == (sens, spec)
    lo, hi = m["auroc_ci95"]
    assert lo < m["auroc"] < hi and hi - lo < 0.1
    assert m["n"] == 2000 and m["positives"] == int(y.sum())
    none = label_metrics(np.zeros((10, 1)), raw[:10], raw[:10], ["x"], {"x": 0.5}, bootstrap=100)["x"]
    assert none["auroc"] is None and none["auroc_ci95"] == [None, None]  # no positives: nothing to rank
    assert np.isnan(aurocs(np.zeros((10, 1)), raw[:10], ["x"])["x"])
