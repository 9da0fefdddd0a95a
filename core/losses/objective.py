"""Per-anchor NT-Xent-family losses for a block of anchor rows against all candidate columns.

This is the one place the formulas live for every variant and layout. The dense path calls
:func:`block_loss_sum` once on the whole similarity matrix and lets autograd differentiate it; the chunked path
calls it on row blocks, without graph in forward and with graph in backward (see :mod:`core.losses.chunked`).
The formulas are written out in :mod:`core.losses.ntxent`. One case has its own operation with the gradient
written out: the standard and decoupled loss of one process with two views (:mod:`core.losses.paired`), the
common training case.

Notation (shapes in comments): ``R`` anchor rows in the block, ``M`` candidate columns (all embeddings of the
global batch), ``s`` the scaled cosine similarity ``cos / tau``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

Variant = Literal["ntxent", "dcl", "debiased", "hard"]
VARIANTS: tuple[str, ...] = ("ntxent", "dcl", "debiased", "hard")


@dataclass(frozen=True)
class Layout:
    """Which columns are positives and candidates for each anchor.

    Attributes:
        group: (M,) int64. Two embeddings are positives of each other when their groups are equal (same
            sample for unsupervised views, same label for SupCon).
        modality: (M,) int64 or None. With two towers (CLIP-style) an anchor only sees columns of the other
            modality; ``None`` means every other embedding is a candidate.
        partner: (M,) int64 or None. When every embedding has exactly one positive (two views, no labels, one
            modality) its index; lets the standard and decoupled losses skip building (R, M) masks.
    """

    group: Tensor
    modality: Tensor | None
    partner: Tensor | None = None


@dataclass(frozen=True)
class VariantParams:
    """Options of the debiased and hard-negative variants (ignored by ``ntxent`` and ``dcl``)."""

    variant: Variant = "ntxent"
    tau_plus: float = 0.0
    beta: float = 0.0


def has_negatives(columns: int, decoupled: bool) -> bool:
    """Whether anchors with one positive each, among ``columns`` embeddings (themselves included), have a negative:
    more than two columns for the standard loss, more than three for the decoupled one, whose denominator loses
    the positive too. Below that no anchor counts."""
    return columns > (3 if decoupled else 2)


def similarities(a: Tensor, b: Tensor, dtype: torch.dtype) -> Tensor:
    """``a @ b.T`` with the product run in ``dtype``, returned in ``a``'s dtype.

    In bf16 or fp16 each factor is rounded to about 3 significant digits and the product runs on the tensor cores
    (AMX on recent Xeon CPUs), as every library's loss does under autocast; the exponentials that follow stay in
    ``a``'s dtype. In ``a``'s own dtype the conversions are no-ops.
    """
    return (a.to(dtype) @ b.to(dtype).T).to(a.dtype)


def add_product(out: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """``out += a @ b`` in place; ``a`` and ``b`` may be narrower than ``out`` (the product then runs in theirs)."""
    return out.addmm_(a, b) if a.dtype == out.dtype else out.add_(a @ b)


def _masked_lse(values: Tensor, mask: Tensor) -> Tensor:
    # -inf (never a large finite constant) so half-precision callers cannot overflow; fp32 here anyway.
    return torch.logsumexp(values.masked_fill(~mask, float("-inf")), dim=1)


def _log1mexp(x: Tensor) -> Tensor:
    """Compute log(1 - exp(x)) for x < 0 accurately (Maechler 2012)."""
    return torch.where(x > -math.log(2.0), torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


def block_loss_sum(
    s: Tensor, rows: Tensor | None, layout: Layout, params: VariantParams, scale: Tensor | float
) -> tuple[Tensor, Tensor | int]:
    """Summed loss of the anchor rows in a block, and how many anchors it counts.

    Args:
        s: (R, M) fp32 scaled similarities of the block's anchors against every column.
        rows: (R,) int64 column index of each anchor itself (its self-similarity is excluded); ``None`` when
            anchor i is column i of a square block (one process, every embedding an anchor).
        layout: positives and candidates of the global batch.
        params: variant and its options.
        scale: () the inverse temperature 1/tau, or the number (used by the debiased lower bound e^{-1/tau}).

    Returns:
        ``(total, count)``: () the sum of the anchors' losses and the number of anchors counted, () int64, or a
        plain int where it does not depend on the data; an anchor without a positive, or without a negative
        where the variant needs one, is left out of both.
    """
    if rows is None:
        rows = torch.arange(s.shape[0], device=s.device)
    if layout.partner is not None and params.variant in ("ntxent", "dcl"):
        return _one_positive(s, rows, layout.partner, params.variant == "dcl")
    M = s.shape[1]
    cols = torch.arange(M, device=s.device)
    g_row, g_col = layout.group[rows], layout.group
    valid = cols[None, :] != rows[:, None]  # (R, M) every other embedding
    if layout.modality is not None:
        valid &= layout.modality[None, :] != layout.modality[rows][:, None]
    pos = valid & (g_col[None, :] == g_row[:, None])  # (R, M)
    neg = valid & ~pos  # (R, M)
    n_pos = pos.sum(1)  # (R,)
    n_neg = neg.sum(1)  # (R,)
    ok = n_pos > 0
    n_pos_f = n_pos.clamp(min=1).to(s.dtype)

    if params.variant in ("ntxent", "dcl"):
        denominator = valid if params.variant == "ntxent" else neg
        if params.variant == "dcl":
            ok &= n_neg > 0
        lse = _masked_lse(s, denominator & ok[:, None] | ~ok[:, None])  # (R,) finite even for excluded rows
        pos_mean = torch.where(pos, s, torch.zeros_like(s)).sum(1) / n_pos_f  # (R,)
        loss = lse - pos_mean
    else:
        ok &= n_neg > 0
        neg_or_all = neg | ~ok[:, None]  # keeps every log-sum-exp finite for excluded rows
        n_neg_f = n_neg.clamp(min=1).to(s.dtype)
        if params.variant == "hard":
            # Robinson et al. 2021, eq. 5: negatives reweighted by e^{beta s}, normalised to mean weight 1.
            log_neg = (
                torch.log(n_neg_f)
                + _masked_lse((1.0 + params.beta) * s, neg_or_all)
                - _masked_lse(params.beta * s, neg_or_all)
            )  # (R,) log of sum_k w_k e^{s_k}
        else:
            log_neg = _masked_lse(s, neg_or_all)  # (R,) log sum_k e^{s_k}
        floor = torch.log(n_neg_f)[:, None] - scale  # (R, 1) log(N_neg e^{-1/tau})
        if params.tau_plus > 0:
            # log(sum_neg - tau_plus * N_neg * e^{s_ip}) - log(1 - tau_plus), eq. 6 of Chuang et al. 2020
            ratio = math.log(params.tau_plus) + torch.log(n_neg_f)[:, None] + s - log_neg[:, None]  # (R, M)
            safe = ratio.clamp(max=-1e-6)
            debiased = log_neg[:, None] + _log1mexp(safe) - math.log(1.0 - params.tau_plus)
            debiased = torch.where(ratio < -1e-6, debiased, floor.expand_as(s))
        else:
            debiased = log_neg[:, None].expand_as(s)
        log_ng = torch.maximum(debiased, floor)  # (R, M)
        per_pair = torch.nn.functional.softplus(log_ng - s)  # -log(e^s / (e^s + Ng))
        loss = torch.where(pos, per_pair, torch.zeros_like(s)).sum(1) / n_pos_f
    return torch.where(ok, loss, torch.zeros_like(loss)).sum(), ok.sum()


def _one_positive(s: Tensor, rows: Tensor, partner: Tensor, decoupled: bool) -> tuple[Tensor, int]:
    """Standard or decoupled loss when each anchor has one positive at a known column: no (R, M) masks.

    The block's self-similarities are masked in place: the product's backward does not read ``s``.
    """
    targets = partner[rows]  # (R,)
    s = s.index_put_((torch.arange(len(rows), device=s.device), rows), s.new_tensor(float("-inf")))
    if not has_negatives(s.shape[1], decoupled):  # nothing counts
        return s[:, :0].sum(), 0  # a zero with a graph
    count = s.shape[0]  # every anchor counts
    if decoupled:
        pos = s.gather(1, targets[:, None])[:, 0]  # (R,) read out before the positive is masked too
        s = s.scatter(1, targets[:, None], float("-inf"))
        return (torch.logsumexp(s, dim=1) - pos).sum(), count
    # fused log-softmax + gather, summed inside: a per-row loss vector and its sum cost a pass more in backward
    return torch.nn.functional.cross_entropy(s, targets, reduction="sum"), count
