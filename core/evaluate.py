"""Held-out evaluation of a contrastive model: geometry, diagnostics and, with labels, accuracy.

* Alignment and uniformity (Wang & Isola 2020, "Understanding Contrastive Representation Learning through
  Alignment and Uniformity on the Hypersphere", eqs. 4-5 and their reference code):
  ``align = E ||f(x) - f(y)||_2^alpha`` over positive pairs with alpha = 2, and
  ``uniform = log E exp(-t ||f(x) - f(y)||_2^2)`` over all pairs with t = 2. Both are computed on the
  L2-normalised outputs the loss is applied to, for two augmented views of held-out records. Lower is better.
* Diagnostics from Wang & Liu 2021 ("Understanding the Behaviour of Contrastive Loss", section 3): mean positive
  cosine, mean and max negative cosine, and the entropy of the softmax weights the loss puts on negatives at
  the current temperature (low entropy: the loss concentrates on the hardest negatives).
* With labels: k-NN top-1 accuracy (cosine, majority vote of the k nearest training embeddings) and a
  linear-probe accuracy (logistic regression on the frozen embeddings), on the served embedding.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torch import Tensor


def align_loss(x: Tensor, y: Tensor, alpha: float = 2.0) -> Tensor:
    """Wang & Isola's alignment: mean ||x_i - y_i||^alpha over (N, D) normalised positive pairs."""
    return (x - y).norm(p=2, dim=1).pow(alpha).mean()


def uniform_loss(x: Tensor, t: float = 2.0) -> Tensor:
    """Wang & Isola's uniformity: log of the mean Gaussian potential exp(-t ||x_i - x_j||^2), i < j."""
    return torch.pdist(x, p=2).pow(2).mul(-t).exp().mean().log()


def contrastive_diagnostics(z_a: Tensor, z_b: Tensor, temperature: float) -> dict[str, float]:
    """Positive/negative similarity statistics and the entropy of the weights on negatives.

    Args:
        z_a: (N, D) normalised first views.
        z_b: (N, D) normalised second views.
        temperature: the loss's current tau.
    """
    z = torch.cat([z_a, z_b])  # (2N, D)
    n = len(z_a)
    sim = z @ z.T  # (2N, 2N)
    idx = torch.arange(2 * n, device=z.device)
    partner = (idx + n) % (2 * n)
    neg_mask = torch.ones_like(sim, dtype=torch.bool)
    neg_mask[idx, idx] = False
    neg_mask[idx, partner] = False
    pos = sim[idx, partner]  # (2N,)
    neg = sim.masked_fill(~neg_mask, float("-inf"))  # (2N, 2N)
    weights = torch.softmax(neg / temperature, dim=1)  # (2N, 2N) loss's weights on each anchor's negatives
    entropy = -(weights * weights.clamp(min=1e-30).log()).sum(1)  # (2N,)
    n_neg = neg_mask.sum(1).float()
    return {
        "pos_sim_mean": pos.mean().item(),
        "neg_sim_mean": sim[neg_mask].mean().item(),
        "neg_sim_max": neg.max(dim=1).values.mean().item(),
        "neg_weight_entropy": entropy.mean().item(),
        "neg_weight_entropy_ratio": (entropy / n_neg.log().clamp(min=1e-12)).mean().item(),
    }


def knn_top1(train: np.ndarray, y_train: np.ndarray, test: np.ndarray, y_test: np.ndarray, k: int) -> float:
    """Top-1 accuracy of a cosine k-NN majority vote."""
    knn = KNeighborsClassifier(n_neighbors=min(k, len(train)), metric="cosine")
    return float(knn.fit(train, y_train).score(test, y_test))


def linear_probe(train: np.ndarray, y_train: np.ndarray, test: np.ndarray, y_test: np.ndarray) -> float:
    """Accuracy of a logistic regression trained on frozen, standardised embeddings."""
    if len(np.unique(y_train)) < 2:
        return float("nan")
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    return float(probe.fit(train, y_train).score(test, y_test))


@torch.no_grad()
def evaluate(
    *,
    project_views: Callable[[], tuple[Tensor, Tensor]],
    embed_train: Callable[[], Tensor],
    embed_val: Callable[[], Tensor],
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    temperature: float,
    train_labels: np.ndarray | None,
    val_labels: np.ndarray | None,
    knn_k: int,
    probe: bool,
) -> dict[str, float]:
    """All held-out metrics of one evaluation.

    Args:
        project_views: returns (N, D) projections of two augmented views of the held-out sample.
        embed_train: returns (M, E) served embeddings of the training sample (the k-NN memory).
        embed_val: returns (N, E) served embeddings of the held-out sample.
        loss_fn: the training loss, for the held-out loss.
        temperature: current tau.
        train_labels, val_labels: labels of the two samples, or None; the label metrics (k-NN, probe) need two
            classes or more among the training sample's.
        knn_k: neighbours of the k-NN vote.
        probe: whether to fit the linear probe.
    """
    z_a, z_b = (F.normalize(v.float(), dim=-1) for v in project_views())
    metrics: dict[str, Any] = {
        "val_loss": loss_fn(z_a, z_b).item(),
        "alignment": align_loss(z_a, z_b).item(),
        "uniformity": uniform_loss(torch.cat([z_a, z_b])).item(),
        **contrastive_diagnostics(z_a, z_b, temperature),
    }
    # one class in the k-NN's memory: nothing to tell apart (the vote is always right, the probe cannot be fitted)
    if train_labels is not None and val_labels is not None and len(np.unique(train_labels)) > 1:
        train, val = embed_train().cpu().numpy(), embed_val().cpu().numpy()
        metrics["knn_top1"] = knn_top1(train, train_labels, val, val_labels, knn_k)
        if probe:
            metrics["linear_probe_top1"] = linear_probe(train, train_labels, val, val_labels)
    return metrics
