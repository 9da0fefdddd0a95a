r"""The standard and decoupled NT-Xent when every anchor has one positive, with the gradient written out.

:func:`log_softmax_rows` is the loss of a block of anchor rows and the log-probabilities its gradient needs
(:math:`\partial \ell / \partial S = P - Y`); the chunked path (:mod:`core.losses.chunked`) uses it on its
tiles. :func:`paired_loss` is the dense path of the common training case: one process, two views, no labels, so
every embedding is an anchor with exactly one positive, its other view :math:`p(i)`. For raw embeddings
:math:`x_i`, :math:`z_i = x_i / \max(\|x_i\|, \epsilon)` and :math:`S = z z^\top / \tau` (the diagonal
excluded), the mean loss of Chen et al. 2020, eq. 1, is
:math:`\frac{1}{M}\sum_i \big(\log\sum_{k \ne i} e^{S_{ik}} - S_{i,p(i)}\big)`, and its gradient with respect to
the similarities is :math:`G = (P - Y) / M`: :math:`P` is the row softmax over the candidates and :math:`Y` the
one-hot of each anchor's positive. For the decoupled loss (Yeh et al. 2022, eq. 3) the positive leaves the
softmax: :math:`P_{i,p(i)} = 0`. Then

.. math::
    \frac{\partial \mathcal{L}}{\partial z} = \frac{1}{\tau} (G + G^\top) z, \qquad
    \frac{\partial \mathcal{L}}{\partial (1/\tau)} = \sum_{ik} G_{ik}\, z_i^\top z_k
        = \tfrac{1}{2} \sum_i z_i^\top \big((G + G^\top) z\big)_i, \qquad
    \frac{\partial \mathcal{L}}{\partial x_i} = \frac{g_i - z_i (z_i^\top g_i)}{\|x_i\|},

with :math:`(Y + Y^\top) z = 2 z_{p(\cdot)}` because the pairing is its own inverse, and :math:`g_i` the
gradient of :math:`z_i` (below :math:`\epsilon` the norm is a constant and the projection term drops, as in
``F.normalize``). Autograd would run the normalisation, the masked similarity matrix, its log-softmax and the
mean as a dozen operations, with an (M, M) gradient for each of the quadratic ones; here forward turns the
similarity matrix into :math:`P` and keeps it, and backward is two products with no (M, M) temporary. :math:`P`
is not modified in backward, so a second backward (``retain_graph=True``) gives the same gradient.

With a narrower product dtype (bf16, fp16) the three products (:math:`z z^\top` and the two of backward) run in it
on rounded factors, :math:`P` is kept in it (half the memory), and everything else stays in fp32.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from core.losses.objective import add_product, has_negatives, similarities

EPS = 1e-12  # F.normalize's


def log_softmax_rows(s: Tensor, targets: Tensor, decoupled: bool) -> tuple[Tensor, Tensor]:
    """Summed loss of a block of anchor rows, and their log-probabilities over the candidates.

    Args:
        s: (R, M) scaled similarities, each anchor's own column already ``-inf``; consumed (reused or freed).
        targets: (R, 1) int64 column of each anchor's positive.
        decoupled: leave the positive out of the denominator (DCL); its probability is then 0.

    Returns:
        ``(total, log_p)``: () the summed loss, (R, M) log P (``exp_()`` it in place for P).
    """
    if decoupled:
        positive = s.gather(1, targets)  # (R, 1) read out before the positive is masked too
        s.scatter_(1, targets, float("-inf"))
        lse = torch.logsumexp(s, dim=1, keepdim=True)  # (R, 1)
        return (lse - positive).sum(), s.sub_(lse)
    log_p = torch.log_softmax(s, dim=1)  # (R, M); one fused pass, where logsumexp takes several
    return -log_p.gather(1, targets).sum(), log_p


class _PairedLoss(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, x: Tensor, scale: Tensor | float, partner: Tensor, decoupled: bool, product: torch.dtype
    ) -> Tensor:
        norms = torch.linalg.vector_norm(x, dim=1, keepdim=True)  # (M, 1)
        unclamped = norms >= EPS  # (M, 1)
        norms.clamp_min_(EPS)
        z = x / norms  # (M, D)
        s = similarities(z * scale, z, product)  # (M, M) in z's dtype
        total, log_p = log_softmax_rows(s.fill_diagonal_(float("-inf")), partner[:, None], decoupled)
        del s
        weight = 1.0 / len(x)
        if ctx.needs_input_grad[0] or ctx.needs_input_grad[1]:
            probabilities = log_p.exp_().to(product)  # P in place of log P; narrowed once, for both products
            ctx.save_for_backward(z, norms, unclamped, probabilities, partner)
            ctx.scale = scale.detach() if isinstance(scale, Tensor) else scale
            ctx.weight = weight
        return total * weight

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        z, norms, unclamped, probabilities, partner = ctx.saved_tensors
        factor = z.to(probabilities.dtype)  # (M, D) z itself unless the products run narrower
        direction = (probabilities @ factor).to(z.dtype)  # (M, D)
        add_product(direction, probabilities.T, factor).sub_(z[partner], alpha=2.0)  # (P + P^T - 2Y) z
        grad = grad * ctx.weight
        grad_scale = (direction * z).sum() * (0.5 * grad) if ctx.needs_input_grad[1] else None
        grad_x = None
        if ctx.needs_input_grad[0]:
            grad_z = direction.mul_(grad * ctx.scale)  # (M, D)
            along = (z * grad_z).sum(1, keepdim=True).mul_(unclamped)  # (M, 1)
            grad_x = grad_z.sub_(z * along).div_(norms)
        return grad_x, grad_scale, None, None, None


def paired_loss(
    x: Tensor, scale: Tensor | float, partner: Tensor, decoupled: bool, product: torch.dtype | None = None
) -> Tensor:
    """Mean standard (or decoupled) loss with every embedding an anchor; see the module docstring.

    Args:
        x: (M, D) raw embeddings, fp32 or wider; normalised here.
        scale: inverse temperature 1/tau: a number, or a () tensor when it is learned.
        partner: (M,) int64 index of each embedding's positive; ``partner[partner[i]] == i``.
        decoupled: leave the positive out of the denominator (DCL).
        product: dtype of the three products (``None``: ``x``'s); see :func:`core.losses.objective.similarities`.

    Returns:
        () the mean over the M anchors; a zero that has a graph when no anchor has a negative.
    """
    if not has_negatives(x.shape[0], decoupled):  # nothing counts
        return x[:0].sum() * scale
    return _PairedLoss.apply(x, scale, partner, decoupled, product or x.dtype)
