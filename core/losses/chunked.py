"""Exact NT-Xent in row blocks: the loss and its gradients without the full similarity matrix.

Each block of ``K`` anchor rows is computed against all ``M`` columns, and its similarity tile is freed before
the next, so the peak extra memory is O(K * M) instead of O(M^2). This is the tiling of Inf-CL (Cheng et al.
2024, "Breaking the Memory Barrier: Near Infinite Batch Size Scaling for Contrastive Loss", arXiv 2410.17243),
with whole rows per tile: each anchor's log-sum-exp is complete inside its block, so no online merging across
tiles is needed and every variant of :mod:`core.losses.objective` is supported unchanged.

Unlike Inf-CL, which recomputes every tile in backward, the gradients are computed in forward while the tile is
at hand (as fused linear cross-entropy kernels do, e.g. Liger-Kernel, Hsu et al. 2024, arXiv 2410.10989): the
loss is a sum, so its gradient is the gradient for an upstream 1 scaled by the upstream value. Per block:
one product for the tile, its gradient (written out, ``P - Y``, when each anchor has one positive; otherwise
autograd from the tile to its losses), and two products accumulated in place into the (M, D) gradient, with the
elementwise work on a tile that stays in cache. Backward only scales the stored gradient. Without autograd
(evaluation) no gradient is computed. With a narrower product dtype (bf16, fp16) the three products of each block
run in it on rounded factors, and the tile and its gradient stay in fp32.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from core.losses.objective import Layout, VariantParams, add_product, block_loss_sum, has_negatives
from core.losses.paired import log_softmax_rows


class _ChunkedLoss(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        z: Tensor,
        scale: Tensor,
        anchors: Tensor,
        layout: Layout,
        params: VariantParams,
        chunk_size: int,
        product: torch.dtype,
    ) -> tuple[Tensor, Tensor]:
        want_z, want_scale = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        total = z.new_zeros(())
        count = torch.zeros((), dtype=torch.long, device=z.device)
        grad_z = torch.zeros_like(z) if want_z or want_scale else None
        grad_scale = torch.zeros_like(scale)
        factor = z.to(product)  # (M, D) the columns' factor, narrowed once: z itself in its own dtype
        for rows in anchors.split(chunk_size):
            z_anchors = z[rows]  # (K, D)
            z_rows = (z_anchors * scale).to(product)  # (K, D) the rows' factor, narrowed once for two products
            s = (z_rows @ factor.T).to(z.dtype)  # (K, M) the tile, in z's dtype whatever the products'
            loss, ok, grad_s = _tile(s, rows, layout, params, scale, grad_z is not None)
            total += loss
            count += ok
            if grad_s is not None:
                # s = scale * z[rows] @ z.T: accumulate in place, no (M, D) temporary per block in fp32
                grad_s = grad_s.to(product)  # (K, M) narrowed once for both products
                add_product(grad_z, grad_s.T, z_rows)  # through the columns
                through_rows = (grad_s @ factor).to(z.dtype)  # (K, D)
                grad_z.index_add_(0, rows, through_rows * scale)  # through the anchor rows
                if want_scale:
                    grad_scale += (through_rows * z_anchors).sum()  # sum of grad_s * (s / scale)
        ctx.save_for_backward(grad_z, grad_scale)
        ctx.mark_non_differentiable(count)
        return total, count

    @staticmethod
    def backward(ctx: Any, grad_total: Tensor, _grad_count: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        grad_z, grad_scale = ctx.saved_tensors
        want_z, want_scale = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        return (grad_z * grad_total if want_z else None), (grad_scale * grad_total if want_scale else None), \
            None, None, None, None, None  # fmt: skip


def _tile(
    s: Tensor, rows: Tensor, layout: Layout, params: VariantParams, scale: Tensor, want_grad: bool
) -> tuple[Tensor, Tensor | int, Tensor | None]:
    """Loss sum, anchor count and (if wanted) the gradient with respect to ``s`` of one (K, M) tile."""
    decoupled = params.variant == "dcl"
    if layout.partner is not None and params.variant in ("ntxent", "dcl") and has_negatives(s.shape[1], decoupled):
        # one positive per anchor: the gradient is P - Y, written out (core.losses.paired)
        s.index_put_((torch.arange(len(rows), device=s.device), rows), s.new_tensor(float("-inf")))
        targets = layout.partner[rows][:, None]  # (K, 1)
        loss, log_p = log_softmax_rows(s, targets, decoupled)
        if not want_grad:
            return loss, len(rows), None
        return loss, len(rows), log_p.exp_().scatter_add_(1, targets, log_p.new_full(targets.shape, -1.0))
    if not want_grad:
        return *block_loss_sum(s, rows, layout, params, scale), None
    with torch.enable_grad():  # autograd only from the tile to the losses; the tile's products by hand
        s.requires_grad_(True)  # (K, M) fp32, the only quadratic tensor alive
        loss, ok = block_loss_sum(s.clone(), rows, layout, params, scale)  # a copy: the formulas mask in place
        (grad_s,) = torch.autograd.grad(loss, s)
    return loss.detach(), ok, grad_s


def chunked_loss_sum(
    z: Tensor,
    scale: Tensor,
    anchors: Tensor,
    layout: Layout,
    params: VariantParams,
    chunk_size: int,
    product: torch.dtype | None = None,
) -> tuple[Tensor, Tensor]:
    """Sum of per-anchor losses over ``anchors`` and the number of anchors counted, in row blocks.

    Args:
        z: (M, D) fp32 L2-normalised embeddings of the global batch.
        scale: () inverse temperature.
        anchors: (A,) int64 indices of the anchors this process owns.
        layout: positives and candidates.
        params: variant options.
        chunk_size: rows per block, K.
        product: dtype of each block's three products (``None``: ``z``'s); see
            :func:`core.losses.objective.similarities`.
    """
    return _ChunkedLoss.apply(z, scale, anchors, layout, params, chunk_size, product or z.dtype)
