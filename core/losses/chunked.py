"""Exact NT-Xent in row blocks: the loss and its gradients without the full similarity matrix.

Forward computes each block of ``K`` anchor rows against all ``M`` columns without autograd, keeping only the
per-block sums. Backward recomputes each block's similarity tile, differentiates the losses with respect to the
tile with autograd, and accumulates the tile's gradient into the embeddings in place (two matrix products), so
the peak extra memory is O(K * M) instead of O(M^2). This is the
recompute-in-backward idea of Inf-CL (Cheng et al. 2024, "Breaking the Memory Barrier: Near Infinite Batch
Size Scaling for Contrastive Loss", arXiv 2410.17243), with whole rows per tile: each anchor's log-sum-exp is
complete inside its block, so no online merging across tiles is needed and every variant of
:mod:`core.losses.objective` is supported unchanged.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from core.losses.objective import Layout, VariantParams, block_losses


def _block_sum(z: Tensor, scale: Tensor, rows: Tensor, layout: Layout, params: VariantParams) -> tuple[Tensor, Tensor]:
    s = (z[rows] * scale) @ z.T  # (K, M) fp32 tile, the only quadratic tensor alive
    loss, ok = block_losses(s, rows, layout, params, scale)
    return loss.sum(), ok.sum()


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
    ) -> tuple[Tensor, Tensor]:
        total = z.new_zeros(())
        count = torch.zeros((), dtype=torch.long, device=z.device)
        for rows in anchors.split(chunk_size):
            block_total, block_count = _block_sum(z, scale, rows, layout, params)
            total += block_total
            count += block_count
        ctx.save_for_backward(z, scale, anchors)
        ctx.layout, ctx.params, ctx.chunk_size = layout, params, chunk_size
        ctx.mark_non_differentiable(count)
        return total, count

    @staticmethod
    def backward(ctx: Any, grad_total: Tensor, _grad_count: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        z, scale, anchors = ctx.saved_tensors
        grad_z = torch.zeros_like(z)
        grad_scale = torch.zeros_like(scale)
        for rows in anchors.split(ctx.chunk_size):
            z_rows = z[rows] * scale  # (K, D)
            with torch.enable_grad():  # autograd only from the tile to the losses; the tile's own product by hand
                s = (z_rows @ z.T).requires_grad_(True)  # (K, M)
                # a copy: the formulas mask the tile in place, and s is kept for the temperature's gradient
                block_total = block_losses(s.clone(), rows, ctx.layout, ctx.params, scale)[0].sum()
                (grad_s,) = torch.autograd.grad(block_total, s, grad_outputs=grad_total)
            # s = scale * z[rows] @ z.T: accumulate in place, no (M, D) temporary per block
            grad_z.addmm_(grad_s.T, z_rows)  # through the columns
            grad_z.index_add_(0, rows, (grad_s @ z) * scale)  # through the anchor rows
            if ctx.needs_input_grad[1]:
                grad_scale += (grad_s * s.detach()).sum() / scale
        return grad_z, (grad_scale if ctx.needs_input_grad[1] else None), None, None, None, None


def chunked_loss_sum(
    z: Tensor, scale: Tensor, anchors: Tensor, layout: Layout, params: VariantParams, chunk_size: int
) -> tuple[Tensor, Tensor]:
    """Sum of per-anchor losses over ``anchors`` and the number of anchors counted, in row blocks.

    Args:
        z: (M, D) fp32 L2-normalised embeddings of the global batch.
        scale: () inverse temperature.
        anchors: (A,) int64 indices of the anchors this process owns.
        layout: positives and candidates.
        params: variant options.
        chunk_size: rows per block, K.
    """
    return _ChunkedLoss.apply(z, scale, anchors, layout, params, chunk_size)
