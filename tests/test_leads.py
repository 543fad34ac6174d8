"""Lead names, canonical order and derived limb leads."""

from __future__ import annotations

import numpy as np
import pytest

from bedside.leads import (CANONICAL_LEADS, INDEPENDENT_LEADS, assemble_canonical, canonical_name,
                           derive_limb_leads, missing_leads)


def test_canonical_order_is_mimic_native_order():
    assert CANONICAL_LEADS == ("I", "II", "III", "aVR", "aVF", "aVL", "V1", "V2", "V3", "V4", "V5", "V6")


@pytest.mark.parametrize("raw, canon", [("i", "I"), ("II", "II"), ("avr", "aVR"), ("AVL", "aVL"),
                                        (" aVF ", "aVF"), ("v6", "V6"), ("V1", "V1")])
def test_names_map_case_insensitively(raw, canon):
    assert canonical_name(raw) == canon


@pytest.mark.parametrize("raw", ["MLII", "V", "ECG 1", "vx", "PLETH", "", "I "  "x"])
def test_non_standard_names_are_never_guessed(raw):
    assert canonical_name(raw) is None


def test_derived_leads_satisfy_einthoven_and_goldberger():
    rng = np.random.default_rng(0)
    lead_i, lead_ii = rng.normal(size=(2, 500))
    d = derive_limb_leads(lead_i, lead_ii)
    np.testing.assert_allclose(lead_i + d["III"], lead_ii)  # Einthoven: I + III = II
    np.testing.assert_allclose(d["aVR"] + d["aVL"] + d["aVF"], 0, atol=1e-12)  # Goldberger sum
    np.testing.assert_allclose(d["aVF"], (lead_ii + d["III"]) / 2)


def test_assemble_puts_each_lead_in_its_slot_and_names_missing():
    signals = {name: np.full(4, k, dtype=np.float32) for k, name in enumerate(INDEPENDENT_LEADS)}
    x = assemble_canonical(signals)
    assert x.shape == (12, 4)
    for name in INDEPENDENT_LEADS:
        assert x[CANONICAL_LEADS.index(name), 0] == INDEPENDENT_LEADS.index(name)
    assert x[CANONICAL_LEADS.index("aVF"), 0] == pytest.approx(1 - 0 / 2)  # II - I/2 with I=0, II=1
    assert x[CANONICAL_LEADS.index("aVL"), 0] == pytest.approx(0 - 1 / 2)  # I - II/2
    del signals["V3"]
    with pytest.raises(KeyError, match="V3"):
        assemble_canonical(signals)


def test_missing_leads_counts_derivable_ones_as_present():
    assert missing_leads(list(INDEPENDENT_LEADS)) == []
    assert missing_leads(["II", "V5"]) == ["I", "III", "aVR", "aVF", "aVL", "V1", "V2", "V3", "V4", "V6"]
