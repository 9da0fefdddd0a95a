r"""NT-Xent and its family in one module: standard, decoupled, debiased, hard-negative, supervised, CLIP.

Standard NT-Xent (Chen et al. 2020, "A Simple Framework for Contrastive Learning of Visual Representations",
eq. 1). Two views of N samples give M = 2N embeddings, L2-normalised, with
:math:`s_{ik} = z_i^\top z_k / \tau`. For anchor i whose positive (its other view) is p(i):

.. math::
    \ell_i = -\log \frac{\exp(s_{i,p(i)})}{\sum_{k \ne i} \exp(s_{ik})}, \qquad
    \mathcal{L} = \frac{1}{2N} \sum_{i=1}^{2N} \ell_i .

The denominator runs over all 2N-1 other embeddings *including the positive*: that is SimCLR's definition, it
makes :math:`\ell_i` a cross-entropy over a proper softmax (so :math:`\ell_i \ge 0`, and all-identical
embeddings give exactly :math:`\log(2N-1)`), and the positive's own term damps the gradient once the positive
dominates. Removing it gives the decoupled loss (Yeh et al. 2022, "Decoupled Contrastive Learning", eq. 3):
:math:`\ell_i = -s_{i,p(i)} + \log\sum_{k \ne i, p(i)} \exp(s_{ik})`, which drops the "negative-positive
coupling" factor of the gradient, can go below zero, and trains well with smaller batches.

Other variants, all selected on the same module:

* ``variant="debiased"`` (Chuang et al. 2020, "Debiased Contrastive Learning", eq. 6): with class prior
  :math:`\tau^+` and :math:`Q` negatives, the negative sum is replaced by
  :math:`Q g = \max\big(\frac{1}{1-\tau^+}(\sum_k e^{s_{ik}} - \tau^+ Q e^{s_{ip}}),\; Q e^{-1/\tau}\big)` and
  :math:`\ell_i = -\log \frac{e^{s_{ip}}}{e^{s_{ip}} + Q g}`.
* ``variant="hard"`` (Robinson et al. 2021, "Contrastive Learning with Hard Negative Samples", eq. 5 with the
  importance weights of section 3): negatives reweighted by :math:`w_k = Q e^{\beta s_{ik}} / \sum_j e^{\beta
  s_{ij}}` inside the debiased estimator above (``tau_plus=0`` by default gives pure hard-negative weighting;
  ``beta=0`` gives back the debiased loss).
* ``labels=`` (Khosla et al. 2020, "Supervised Contrastive Learning", eq. 2, the :math:`\mathcal{L}^{sup}_{out}`
  form): every other embedding with the same label is a positive,
  :math:`\ell_i = -\frac{1}{|P(i)|}\sum_{p \in P(i)} \log \frac{e^{s_{ip}}}{\sum_{k \ne i} e^{s_{ik}}}`.
* A ``(V, N, D)`` tensor: all V views of a sample are positives of each other (the multi-view form of SupCon).
* ``symmetric=True``: two towers (Radford et al. 2021, CLIP, fig. 3): anchors of modality a see only modality b
  and vice versa, the mean of the a->b and b->a cross-entropies; no within-modality negatives.

Anchors without a positive (a label seen once), or without a negative where the variant needs one (DCL,
debiased and hard with a single label) are left out of the mean; a batch with none left gives a zero loss that
still has a graph. Zero vectors stay zero after normalisation, so their cosine with everything is 0: they are
equidistant from every other embedding and never produce NaN.

Temperature is a float, or learnable as CLIP does: a log-scale parameter :math:`\log(1/\tau)`, with
:math:`1/\tau` clamped to at most 100.

Similarities and log-sum-exps are computed in fp32 even under bf16/fp16 autocast, masks use ``-inf``.
``similarity_dtype=torch.bfloat16`` (or float16) runs only the similarity products (:math:`z z^\top` and its
gradient's) in that dtype, on the tensor cores, as the libraries' losses do under autocast: faster from a few
thousand pairs, each similarity rounded to about 3 significant digits; the softmax stays fp32.
``chunk_size`` selects the exact row-block path of :mod:`core.losses.chunked`. Under ``torch.distributed`` the
embeddings are gathered with gradients and each rank computes only its own anchors' rows (open_clip's
``local_loss``); see :meth:`NTXentLoss.forward` for how ranks' losses add up to the global loss.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from functools import lru_cache

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from core.losses.chunked import chunked_loss_sum
from core.losses.distributed import gather_no_grad, gather_with_grad, is_distributed
from core.losses.objective import VARIANTS, Layout, Variant, VariantParams, block_loss_sum, similarities
from core.losses.paired import paired_loss

MAX_INVERSE_TEMPERATURE = 100.0


@lru_cache(maxsize=16)
def _batch_indices(views: int, n: int, world: int, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """Index tensors of a batch of ``views`` x ``n`` embeddings per rank, built once per shape.

    Returns:
        ``(samples, anchors, partner)``: (V*N,) the sample id of each local embedding, (V*N,) their indices
        (this rank's anchors before its offset), and (world*V*N,) the other view of each embedding of the
        global batch (rank-major blocks, view-major inside; meaningful for two views only). Rebuilding them is
        a dozen small operators per call, a few percent of the whole loss at N=256 on the CPU. They are shared
        between calls: never modify them in place.
    """
    with torch.inference_mode(False):  # normal tensors even when first asked for in inference mode: autograd saves them
        samples = torch.arange(n, device=device).repeat(views)
        anchors = torch.arange(views * n, device=device)
        index = torch.arange(world * views * n, device=device)
        block = views * n
        partner = index // block * block + (index % block + n) % block
    return samples, anchors, partner


class NTXentLoss(nn.Module):
    """NT-Xent (normalised temperature-scaled cross-entropy) and its variants; see the module docstring.

    Args:
        temperature: initial tau > 0; 1/tau is clamped to at most 100.
        learnable_temperature: learn log(1/tau) as a parameter (CLIP).
        variant: ``"ntxent"`` (SimCLR), ``"dcl"``, ``"debiased"`` or ``"hard"``.
        tau_plus: class prior of the debiased and hard variants, in [0, 1); ``None`` means 0.1 for
            ``debiased`` and 0 (pure hard-negative reweighting) for ``hard``.
        beta: concentration of the hard-negative weights, >= 0.
        symmetric: two towers: ``z_a`` and ``z_b`` are two modalities, negatives only across them.
        chunk_size: rows per block of the exact memory-efficient path; ``None`` uses the dense path, and so does a
            block that would hold every anchor (one block is the whole matrix: the same memory, without the
            path's row gathers and scatters).
        similarity_dtype: dtype of the similarity products; ``None`` means fp32 (or the embeddings' dtype if
            wider). ``torch.bfloat16`` / ``torch.float16`` round their factors and run them on tensor cores.
        gather_distributed: gather embeddings from every rank when ``torch.distributed`` is initialised.
    """

    def __init__(
        self,
        temperature: float = 0.1,
        *,
        learnable_temperature: bool = False,
        variant: Variant = "ntxent",
        tau_plus: float | None = None,
        beta: float = 1.0,
        symmetric: bool = False,
        chunk_size: int | None = None,
        similarity_dtype: torch.dtype | None = None,
        gather_distributed: bool = True,
    ) -> None:
        super().__init__()
        if not temperature > 0 or not math.isfinite(temperature):
            raise ValueError(f"temperature must be a positive finite number, got {temperature}")
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
        if tau_plus is None:
            tau_plus = 0.1 if variant == "debiased" else 0.0
        if not 0.0 <= tau_plus < 1.0:
            raise ValueError(f"tau_plus must be in [0, 1), got {tau_plus}")
        if beta < 0:
            raise ValueError(f"beta must be >= 0, got {beta}")
        if chunk_size is not None and chunk_size < 1:
            raise ValueError(f"chunk_size must be a positive integer or None, got {chunk_size}")
        if similarity_dtype is not None and not similarity_dtype.is_floating_point:
            raise ValueError(f"similarity_dtype must be a floating-point dtype or None, got {similarity_dtype}")
        log_scale = torch.tensor(math.log(min(1.0 / temperature, MAX_INVERSE_TEMPERATURE)))
        # the dense path's scale when the temperature is fixed
        self.fixed_scale = None if learnable_temperature else min(1.0 / temperature, MAX_INVERSE_TEMPERATURE)
        if learnable_temperature:
            self.log_scale = nn.Parameter(log_scale)
        else:
            self.register_buffer("log_scale", log_scale, persistent=False)
        uses_prior = variant in ("debiased", "hard")
        self.params = VariantParams(
            variant=variant, tau_plus=tau_plus if uses_prior else 0.0, beta=beta if variant == "hard" else 0.0
        )
        self.symmetric = symmetric
        self.chunk_size = chunk_size
        self.similarity_dtype = similarity_dtype
        self.gather_distributed = gather_distributed

    @property
    def scale(self) -> Tensor:
        """Inverse temperature 1/tau, clamped to at most 100: ()."""
        return self.log_scale.float().exp().clamp(max=MAX_INVERSE_TEMPERATURE)

    def _dense_scale(self) -> Tensor | float:
        # a fixed temperature as a plain number: no graph for it (and reading the tensor back would sync a GPU)
        return self.scale if self.fixed_scale is None else self.fixed_scale

    @property
    def temperature(self) -> float:
        """Current temperature tau."""
        return float(1.0 / self.scale.detach())

    def forward(
        self, z_a: Tensor, z_b: Tensor | None = None, labels: Tensor | None = None, *, gather: bool | None = None
    ) -> Tensor:
        """Mean loss over all anchors.

        Args:
            z_a: (N, D) first view, or (V, N, D) all V views with ``z_b`` omitted.
            z_b: (N, D) second view (second modality with ``symmetric=True``).
            labels: (N,) integer class of each sample, for the supervised (SupCon) form.
            gather: override ``gather_distributed`` for this call (False: a rank-local loss, e.g. evaluation).

        Returns:
            () the loss. Under ``torch.distributed`` each rank returns ``world_size * (sum of its anchors'
            losses) / (number of anchors on all ranks)``: the mean over ranks is the global-batch loss, and
            with DDP's gradient averaging the parameter gradients equal those of the global-batch loss.
        """
        views = self._stack_views(z_a, z_b)  # (V, N, D)
        V, N, _ = views.shape
        if labels is not None and labels.shape != (N,):
            raise ValueError(f"labels must have shape ({N},), got {tuple(labels.shape)}")
        device = views.device.type
        # fp32 from here on: cosine, exp and log-sum-exp overflow or lose the positive in half precision.
        with torch.autocast(device_type=device, enabled=False) if torch.is_autocast_enabled(device) else nullcontext():
            x = views.to(torch.promote_types(views.dtype, torch.float32)).reshape(V * N, -1)  # (V*N, D) view-major
            product = self.similarity_dtype or x.dtype
            distributed = (self.gather_distributed if gather is None else gather) and is_distributed()
            world, rank = (dist.get_world_size(), dist.get_rank()) if distributed else (1, 0)
            samples, anchors, partner = _batch_indices(V, N, world, x.device)
            one_positive = labels is None and V == 2 and not self.symmetric
            if one_positive and world == 1 and self._dense(V * N) and self.params.variant in ("ntxent", "dcl"):
                # the common case as one operation with its gradient by hand (core.losses.paired)
                return paired_loss(x, self._dense_scale(), partner, self.params.variant == "dcl", product)
            z = F.normalize(x, dim=-1)  # (V*N, D)
            group = labels.long().repeat(V) if labels is not None else samples  # (V*N,)
            modality = torch.arange(V, device=z.device).repeat_interleave(N) if self.symmetric else None
            if distributed:
                z, group, modality = self._gather(z, group, modality, labels is None, N * V)
                anchors = anchors + rank * V * N
            layout = Layout(group=group, modality=modality, partner=partner if one_positive else None)
            total, count = self._loss_sum(z, anchors, layout, product)
            if world > 1:
                count = torch.as_tensor(count, device=z.device).clone()
                dist.all_reduce(count)
                return total * world / count.clamp(min=1)
            # a count known without the data is a plain number: no tensor to build, no graph node for it
            return total / (max(count, 1) if isinstance(count, int) else count.clamp(min=1))

    def _stack_views(self, z_a: Tensor, z_b: Tensor | None) -> Tensor:
        if z_b is None:
            if z_a.dim() != 3 or z_a.shape[0] < 2:
                raise ValueError(f"a single tensor must be (V, N, D) with V >= 2 views, got {tuple(z_a.shape)}")
            views = z_a
        else:
            if z_a.dim() != 2 or z_a.shape != z_b.shape:
                raise ValueError(
                    f"z_a and z_b must both be (N, D) with the same shape, got {tuple(z_a.shape)} "
                    f"and {tuple(z_b.shape)}"
                )
            views = torch.stack([z_a, z_b])
        if self.symmetric and views.shape[0] != 2:
            raise ValueError("symmetric=True takes exactly two modalities")
        if views.shape[1] < 1:
            raise ValueError("the batch is empty")
        return views

    def _gather(
        self, z: Tensor, group: Tensor, modality: Tensor | None, unsupervised: bool, local_size: int
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        z = gather_with_grad(z)  # (world*V*N, D) rank-major, each rank's block view-major
        if unsupervised:
            # sample ids must be unique across ranks: offset each rank's ids by its rank
            offsets = torch.arange(dist.get_world_size(), device=z.device).repeat_interleave(local_size)
            group = gather_no_grad(group) + offsets * (int(group.max()) + 1)
        else:
            group = gather_no_grad(group)
        if modality is not None:
            modality = gather_no_grad(modality)
        return z, group, modality

    def _dense(self, anchors: int) -> bool:
        """Whether ``anchors`` rows take the dense path: no chunk size, or one chunk would hold them all."""
        return self.chunk_size is None or self.chunk_size >= anchors

    def _loss_sum(
        self, z: Tensor, anchors: Tensor, layout: Layout, product: torch.dtype
    ) -> tuple[Tensor, Tensor | int]:
        if not self._dense(len(anchors)):
            return chunked_loss_sum(z, self.scale, anchors, layout, self.params, self.chunk_size, product)
        scale = self._dense_scale()
        if len(anchors) == len(z):  # one process: every row is an anchor, in order; no gather copy, no index
            return block_loss_sum(similarities(z * scale, z, product), None, layout, self.params, scale)  # (M, M)
        s = similarities(z[anchors] * scale, z, product)  # (A, M): this rank's anchors against the global batch
        return block_loss_sum(s, anchors, layout, self.params, scale)
