"""Contrastive losses: the supervised cross-modal loss with adaptive hard-negative weighting.

One function, :func:`cross_modal_supcon`, covers every contrastive objective of the project:

- the full method (CroMoTEX): same-label positives, the direct (same-study) pair weighted
  ``direct_pair_weight``, hard negatives up-weighted by ``weighting``;
- supervised cross-modal contrast without hard negatives: ``weighting="none"``;
- CLIP-style unsupervised alignment and the self-supervised ECG pretraining (two augmented views):
  :func:`clip_loss`, which is the same function with one label per sample, so the only positive of
  a row is its own pair.

The formula (for anchors ``a`` of one modality against candidates ``b`` of the other), with
``s_ij = cos(a_i, b_j) / temperature``, positive weights ``m_ij`` (``direct_pair_weight`` for j = i,
1 for other same-label j, 0 otherwise) and denominator ``D_i = sum_j w_ij exp(s_ij)``::

    row loss_i = -sum_j m_ij log(exp(s_ij) / D_i) / sum_j m_ij

is averaged over rows and over both directions (ECG anchors, CXR anchors). ``log D_i`` is a
log-sum-exp of ``s_ij + log w_ij``, so nothing overflows at temperature 0.01 in float32 or bfloat16.
The weights ``w_ij`` are computed without gradient.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

#: Valid ``weighting`` choices of :func:`cross_modal_supcon`.
WEIGHTINGS: tuple[str, ...] = ("none", "topk", "linear", "exp", "topk-all")


def same_label(labels: torch.Tensor) -> torch.Tensor:
    """[B, B] bool: True where two samples' label rows are equal ([B] or [B, K] labels)."""
    if labels.ndim == 1:
        return labels[:, None] == labels[None, :]
    return (labels[:, None, :] == labels[None, :, :]).all(dim=-1)


def hard_negative_log_weights(cos: torch.Tensor, positive: torch.Tensor, *, weighting: str, alpha: float,
                              k: int) -> torch.Tensor:
    """log w_ij of the denominator for anchors in rows: 0 for positives, per ``weighting`` for negatives.

    ``cos`` is the [B, B] cosine similarity (anchors in rows), ``positive`` the [B, B] same-label mask.
    The result carries no gradient.
    """
    cos = cos.detach()
    negative = ~positive
    zero = torch.zeros_like(cos)
    if weighting == "none":
        return zero
    if weighting in ("topk", "topk-all"):
        k = min(k, cos.shape[1])
        # topk: only negatives compete for the k hard slots; topk-all (the public code): any candidate
        ranked = cos.masked_fill(positive, float("-inf")) if weighting == "topk" else cos
        hard = torch.zeros_like(positive).scatter_(1, ranked.topk(k, dim=1).indices, True)
        if weighting == "topk":
            hard &= negative  # a row with fewer than k negatives: the -inf picks are positives, not hard
        return torch.where(hard, zero + math.log(alpha), zero)
    if weighting == "linear":
        lo = cos.masked_fill(positive, float("inf")).amin(dim=1, keepdim=True)
        hi = cos.masked_fill(positive, float("-inf")).amax(dim=1, keepdim=True)
        span = hi - lo
        flat = ~(span > 0)  # also rows without negatives (inf - inf is NaN)
        frac = ((cos - lo) / torch.where(flat, torch.ones_like(span), span)).clamp(0, 1)
        w = 1.0 + (alpha - 1.0) * frac
        return torch.where(negative & ~flat, torch.log(w), zero)
    if weighting == "exp":
        # w_ij = exp(alpha cos_ij) / mean over row i's negatives of exp(alpha cos): log-space, no overflow
        logits = (alpha * cos).masked_fill(positive, float("-inf"))
        n_neg = negative.sum(dim=1, keepdim=True)
        log_mean = torch.logsumexp(logits, dim=1, keepdim=True) - torch.log(n_neg.clamp(min=1).to(cos.dtype))
        return torch.where(negative, alpha * cos - log_mean, zero)
    raise ValueError(f"unknown weighting {weighting!r}; choices: {list(WEIGHTINGS)}")


def _directional_loss(cos: torch.Tensor, positive: torch.Tensor, *, temperature: float, weighting: str,
                      alpha: float, k: int, direct_pair_weight: float) -> torch.Tensor:
    """Mean row loss with anchors in the rows of ``cos``."""
    s = cos / temperature
    with torch.no_grad():
        log_w = hard_negative_log_weights(cos, positive, weighting=weighting, alpha=alpha, k=k)
    log_d = torch.logsumexp(s + log_w, dim=1, keepdim=True)
    eye = torch.eye(cos.shape[0], dtype=torch.bool, device=cos.device)
    m = torch.where(eye, torch.full_like(s, direct_pair_weight), positive.to(s.dtype)).detach()
    row = -(m * (s - log_d)).sum(dim=1) / m.sum(dim=1)
    return row.mean()


def cross_modal_supcon(ecg: torch.Tensor, cxr: torch.Tensor, labels: torch.Tensor, *, temperature: float = 0.01,
                       weighting: str = "topk", alpha: float = 5.0, topk_fraction: float = 0.1,
                       direct_pair_weight: float = 3.0) -> torch.Tensor:
    """Supervised cross-modal contrastive loss with adaptive hard-negative weighting (scalar tensor).

    ``ecg`` and ``cxr``: [B, D] projections (normalised here), row i of each from the same study.
    ``labels``: [B] or [B, K]; two samples are positives when their label rows are equal.
    ``weighting``: how negatives are weighted in the denominator, one of :data:`WEIGHTINGS`:
    ``none`` (1), ``topk`` (``alpha`` for the k most similar negatives of the row,
    k = max(1, floor(topk_fraction * B))), ``linear`` (1 to ``alpha`` by the similarity's place between
    the row's least and most similar negative), ``exp`` (exp(alpha * cos), rescaled to mean 1 over the
    row's negatives), ``topk-all`` (the public code's variant: ``alpha`` for the k most similar
    candidates of any label, positives included; kept to reproduce it).
    Computed in the inputs' dtype (float32 or bfloat16) by log-sum-exp.
    """
    if weighting not in WEIGHTINGS:
        raise ValueError(f"unknown weighting {weighting!r}; choices: {list(WEIGHTINGS)}")
    if ecg.ndim != 2 or ecg.shape != cxr.shape:
        raise ValueError(f"ecg and cxr must both be [B, D] with the same shape; got {tuple(ecg.shape)} "
                         f"and {tuple(cxr.shape)}")
    if labels.ndim not in (1, 2) or labels.shape[0] != ecg.shape[0]:
        raise ValueError(f"labels must be [B] or [B, K] with B={ecg.shape[0]}; got {tuple(labels.shape)}")
    if not temperature > 0:
        raise ValueError(f"temperature={temperature} must be > 0 (the paper uses 0.01)")
    if not alpha > 0:
        raise ValueError(f"alpha={alpha} must be > 0 (the paper uses 5)")
    if not 0 < topk_fraction <= 1:
        raise ValueError(f"topk_fraction={topk_fraction} must be in (0, 1] (the paper uses 0.1)")
    if not direct_pair_weight > 0:
        raise ValueError(f"direct_pair_weight={direct_pair_weight} must be > 0 (the paper uses 3)")
    batch = ecg.shape[0]
    k = max(1, math.floor(topk_fraction * batch))
    a = F.normalize(ecg, dim=-1)
    b = F.normalize(cxr, dim=-1)
    cos = a @ b.T  # [B, B]: ECG anchors in rows, CXR anchors in columns
    positive = same_label(labels)
    kwargs = dict(temperature=temperature, weighting=weighting, alpha=alpha, k=k,
                  direct_pair_weight=direct_pair_weight)
    return 0.5 * (_directional_loss(cos, positive, **kwargs) + _directional_loss(cos.T, positive.T, **kwargs))


def clip_loss(a: torch.Tensor, b: torch.Tensor, *, temperature: float = 0.01) -> torch.Tensor:
    """Symmetric InfoNCE between paired rows of ``a`` and ``b`` (CLIP; SimCLR-style across two views).

    Each sample is its own class, so the only positive of a row is its pair and no hard-negative
    weighting applies.
    """
    ids = torch.arange(a.shape[0], device=a.device)
    return cross_modal_supcon(a, b, ids, temperature=temperature, weighting="none", direct_pair_weight=1.0)
