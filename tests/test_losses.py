"""cross_modal_supcon against a direct, loop-based float64 reading of the formula (issue 3)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from trainer.losses import WEIGHTINGS, clip_loss, cross_modal_supcon, hard_negative_log_weights, same_label


def reference_loss(ecg: np.ndarray, cxr: np.ndarray, labels: np.ndarray, *, temperature: float, weighting: str,
                   alpha: float, topk_fraction: float, direct_pair_weight: float) -> float:
    """The issue's formula, one anchor and one candidate at a time, in float64."""
    B = ecg.shape[0]
    lab = labels.reshape(B, -1)
    k = max(1, math.floor(topk_fraction * B))

    def unit(v):
        return v / np.linalg.norm(v)

    def direction(anchors, candidates):
        total = 0.0
        for i in range(B):
            cos = [float(unit(anchors[i]) @ unit(candidates[j])) for j in range(B)]
            s = [c / temperature for c in cos]
            pos = [bool(np.all(lab[i] == lab[j])) for j in range(B)]
            negs = [j for j in range(B) if not pos[j]]
            w = [1.0] * B
            if weighting == "topk":
                for j in sorted(negs, key=lambda j: -cos[j])[:k]:
                    w[j] = alpha
            elif weighting == "topk-all":
                for j in sorted(range(B), key=lambda j: -cos[j])[:k]:
                    w[j] = alpha
            elif weighting == "linear" and negs:
                lo, hi = min(s[j] for j in negs), max(s[j] for j in negs)
                for j in negs:
                    w[j] = 1.0 if hi == lo else 1 + (alpha - 1) * (s[j] - lo) / (hi - lo)
            elif weighting == "exp" and negs:
                raw = {j: math.exp(alpha * cos[j]) for j in negs}
                mean = sum(raw.values()) / len(negs)
                for j in negs:
                    w[j] = raw[j] / mean
            d = sum(w[j] * math.exp(s[j]) for j in range(B))
            m = [direct_pair_weight if j == i else (1.0 if pos[j] else 0.0) for j in range(B)]
            total += -sum(m[j] * math.log(math.exp(s[j]) / d) for j in range(B)) / sum(m)
        return total / B

    return 0.5 * (direction(ecg, cxr) + direction(cxr, ecg))


def make_inputs(seed: int, batch: int, dim: int, multilabel: bool):
    rng = np.random.default_rng(seed)
    ecg = rng.normal(size=(batch, dim))
    cxr = ecg + 0.8 * rng.normal(size=(batch, dim))  # paired rows are similar, as after some training
    labels = rng.integers(0, 2, size=(batch, 3) if multilabel else batch).astype(np.float32)
    return ecg, cxr, labels


@pytest.mark.parametrize("weighting", WEIGHTINGS)
@pytest.mark.parametrize("multilabel", [False, True], ids=["single-label", "multi-label"])
@pytest.mark.parametrize("temperature", [0.5, 0.1])
def test_matches_direct_formula(weighting, multilabel, temperature):
    ecg, cxr, labels = make_inputs(seed=WEIGHTINGS.index(weighting) + 10 * multilabel, batch=12, dim=6, multilabel=multilabel)
    kw = dict(temperature=temperature, weighting=weighting, alpha=5.0, topk_fraction=0.25, direct_pair_weight=3.0)
    got = cross_modal_supcon(torch.tensor(ecg), torch.tensor(cxr), torch.tensor(labels), **kw)
    want = reference_loss(ecg, cxr, labels, **kw)
    assert got.dtype == torch.float64
    assert got.item() == pytest.approx(want, rel=1e-9)


@pytest.mark.parametrize("weighting", WEIGHTINGS)
def test_weighting_changes_the_loss(weighting):
    """Each weighting is a different loss (none of them silently falls back to another)."""
    ecg, cxr, labels = make_inputs(3, 16, 8, multilabel=True)
    args = (torch.tensor(ecg), torch.tensor(cxr), torch.tensor(labels))
    values = {w: cross_modal_supcon(*args, temperature=0.2, weighting=w, topk_fraction=0.2).item() for w in WEIGHTINGS}
    others = [v for w, v in values.items() if w != weighting]
    assert all(abs(values[weighting] - v) > 1e-6 for v in others)


def test_direct_pair_weight_is_used():
    ecg, cxr, labels = make_inputs(4, 10, 5, multilabel=False)
    args = (torch.tensor(ecg), torch.tensor(cxr), torch.tensor(labels))
    a = cross_modal_supcon(*args, temperature=0.3, direct_pair_weight=3.0).item()
    b = cross_modal_supcon(*args, temperature=0.3, direct_pair_weight=1.0).item()
    assert a != pytest.approx(b)
    assert b == pytest.approx(reference_loss(ecg, cxr, labels, temperature=0.3, weighting="topk", alpha=5.0,
                                             topk_fraction=0.1, direct_pair_weight=1.0), rel=1e-9)


def test_clip_loss_is_symmetric_infonce():
    rng = np.random.default_rng(0)
    a, b = torch.tensor(rng.normal(size=(8, 4))), torch.tensor(rng.normal(size=(8, 4)))
    logits = torch.nn.functional.normalize(a, dim=1) @ torch.nn.functional.normalize(b, dim=1).T / 0.1
    target = torch.arange(8)
    want = 0.5 * (torch.nn.functional.cross_entropy(logits, target) + torch.nn.functional.cross_entropy(logits.T, target))
    assert clip_loss(a, b, temperature=0.1).item() == pytest.approx(want.item(), rel=1e-12)


@pytest.mark.parametrize("weighting", WEIGHTINGS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_stable_at_paper_temperature(weighting, dtype):
    """temperature 0.01 (logits up to +-100, exp overflows float32 at 88): finite, close to float64."""
    ecg, cxr, labels = make_inputs(7, 64, 32, multilabel=True)
    kw = dict(temperature=0.01, weighting=weighting)
    want = cross_modal_supcon(torch.tensor(ecg), torch.tensor(cxr), torch.tensor(labels), **kw).item()
    e = torch.tensor(ecg, dtype=dtype, requires_grad=True)
    c = torch.tensor(cxr, dtype=dtype, requires_grad=True)
    got = cross_modal_supcon(e, c, torch.tensor(labels), **kw)
    got.backward()
    assert got.dtype == dtype and torch.isfinite(got)
    assert torch.isfinite(e.grad).all() and torch.isfinite(c.grad).all()
    # bf16 keeps 8 bits of mantissa: a cosine's rounding moves a logit at tau=0.01 by up to ~0.4
    assert got.item() == pytest.approx(want, rel=1e-5 if dtype == torch.float32 else 5e-2)


def test_weights_carry_no_gradient():
    """The gradient is that of the loss with the weights held constant at the current similarities."""
    ecg, cxr, labels = make_inputs(11, 10, 6, multilabel=False)
    e = torch.tensor(ecg, requires_grad=True)
    loss = cross_modal_supcon(e, torch.tensor(cxr), torch.tensor(labels), temperature=0.2, weighting="exp")
    (g,) = torch.autograd.grad(loss, e)
    # the weights depend on cos, so a gradient flowing through them would differ from this one
    pos = same_label(torch.tensor(labels))

    def frozen_loss(ev):
        a = torch.nn.functional.normalize(ev, dim=1)
        b = torch.nn.functional.normalize(torch.tensor(cxr), dim=1)
        cos0 = torch.nn.functional.normalize(torch.tensor(ecg), dim=1) @ b.T
        lw_rows = hard_negative_log_weights(cos0, pos, weighting="exp", alpha=5.0, k=1)
        lw_cols = hard_negative_log_weights(cos0.T, pos.T, weighting="exp", alpha=5.0, k=1)
        out = 0.0
        for cos, lw in ((a @ b.T, lw_rows), ((a @ b.T).T, lw_cols)):
            s = cos / 0.2
            log_d = torch.logsumexp(s + lw, dim=1, keepdim=True)
            m = torch.where(torch.eye(10, dtype=torch.bool), torch.full_like(s, 3.0), pos.double())
            out = out + (-(m * (s - log_d)).sum(1) / m.sum(1)).mean() / 2
        return out

    e2 = torch.tensor(ecg, requires_grad=True)
    (g_frozen,) = torch.autograd.grad(frozen_loss(e2), e2)
    assert torch.allclose(g, g_frozen, rtol=1e-9, atol=1e-12)


def test_unknown_weighting_lists_choices():
    x = torch.randn(4, 3)
    with pytest.raises(ValueError, match=r"unknown weighting 'hard'.*'none', 'topk', 'linear', 'exp', 'topk-all'"):
        cross_modal_supcon(x, x, torch.zeros(4), weighting="hard")


@pytest.mark.parametrize("kwargs, match", [
    (dict(temperature=0.0), "temperature"),
    (dict(alpha=-1.0), "alpha"),
    (dict(topk_fraction=1.5), "topk_fraction"),
    (dict(direct_pair_weight=0.0), "direct_pair_weight"),
])
def test_bad_settings_name_the_parameter(kwargs, match):
    x = torch.randn(4, 3)
    with pytest.raises(ValueError, match=match):
        cross_modal_supcon(x, x, torch.zeros(4), **kwargs)


def test_shape_errors():
    with pytest.raises(ValueError, match="same shape"):
        cross_modal_supcon(torch.randn(4, 3), torch.randn(5, 3), torch.zeros(4))
    with pytest.raises(ValueError, match="labels"):
        cross_modal_supcon(torch.randn(4, 3), torch.randn(4, 3), torch.zeros(3))


def test_all_same_label_rows_have_no_negatives():
    """A batch where everything is positive: every weighting gives the same loss and stays finite."""
    ecg, cxr, _ = make_inputs(5, 6, 4, multilabel=False)
    labels = torch.ones(6)
    vals = [cross_modal_supcon(torch.tensor(ecg), torch.tensor(cxr), labels, temperature=0.1, weighting=w).item()
            for w in ("none", "topk", "linear", "exp")]
    assert all(math.isfinite(v) for v in vals)
    assert max(vals) - min(vals) < 1e-12
