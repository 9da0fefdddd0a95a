"""NT-Xent family: formulas against plain float64 loop references, dense vs chunked, numerics."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from core.losses import NTXentLoss


def _sims(views: torch.Tensor, tau: float) -> tuple[torch.Tensor, int]:
    z = F.normalize(views.double(), dim=-1).reshape(-1, views.shape[-1])
    return z @ z.T / tau, views.shape[1]


def reference(
    views: torch.Tensor,
    tau: float,
    variant: str = "ntxent",
    labels: torch.Tensor | None = None,
    symmetric: bool = False,
    tau_plus: float = 0.0,
    beta: float = 0.0,
) -> float:
    """Loop-by-loop port of each paper's per-anchor formula, in float64."""
    s, n = _sims(views, tau)
    m = s.shape[0]
    group = (labels if labels is not None else torch.arange(n)).repeat(views.shape[0])
    modality = torch.arange(views.shape[0]).repeat_interleave(n)
    total, count = 0.0, 0
    for i in range(m):
        cands = [k for k in range(m) if k != i and (not symmetric or modality[k] != modality[i])]
        pos = [k for k in cands if group[k] == group[i]]
        neg = [k for k in cands if group[k] != group[i]]
        if not pos or (variant != "ntxent" and not neg):
            continue
        if variant == "ntxent":  # SimCLR eq. 1 / SupCon L_out eq. 2: denominator over every candidate
            denom = sum(math.exp(s[i, k]) for k in cands)
            li = -sum(math.log(math.exp(s[i, p]) / denom) for p in pos) / len(pos)
        elif variant == "dcl":  # Yeh et al. eq. 3: positive removed from the denominator
            denom = sum(math.exp(s[i, k]) for k in neg)
            li = -sum(math.log(math.exp(s[i, p]) / denom) for p in pos) / len(pos)
        else:  # Chuang et al. eq. 6, with Robinson et al.'s importance weights for "hard"
            q = len(neg)
            w = [math.exp(beta * s[i, k]) for k in neg]
            w = [q * x / sum(w) for x in w]
            neg_sum = sum(wk * math.exp(s[i, k]) for wk, k in zip(w, neg, strict=True))
            li = 0.0
            for p in pos:
                ng = (neg_sum - tau_plus * q * math.exp(s[i, p])) / (1 - tau_plus)
                ng = max(ng, q * math.exp(-1 / tau))
                li += -math.log(math.exp(s[i, p]) / (math.exp(s[i, p]) + ng))
            li /= len(pos)
        total += li
        count += 1
    return total / count


def make_views(v: int = 2, n: int = 6, d: int = 5, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(v, n, d, generator=gen, dtype=torch.float64)


CASES = [
    dict(variant="ntxent"),
    dict(variant="dcl"),
    dict(variant="debiased", tau_plus=0.1),
    dict(variant="hard", beta=1.0),
    dict(variant="hard", beta=0.5, tau_plus=0.1),
    dict(variant="ntxent", labels=True),
    dict(variant="dcl", labels=True),
    dict(variant="debiased", tau_plus=0.1, labels=True),
    dict(variant="ntxent", views=3),
    dict(variant="ntxent", symmetric=True),
    dict(variant="dcl", symmetric=True),
]


def _build(case: dict, tau: float = 0.5, chunk_size: int | None = None):
    views = make_views(v=case.get("views", 2))
    labels = torch.tensor([0, 1, 0, 2, 1, 0]) if case.get("labels") else None
    options = {k: case[k] for k in ("tau_plus", "beta") if k in case}
    loss = NTXentLoss(
        tau, variant=case["variant"], symmetric=case.get("symmetric", False), chunk_size=chunk_size, **options
    )
    ref = reference(
        views,
        tau,
        case["variant"],
        labels,
        case.get("symmetric", False),
        case.get("tau_plus", 0.1 if case["variant"] == "debiased" else 0.0),
        case.get("beta", 0.0),
    )
    return views, labels, loss, ref


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
def test_dense_matches_float64_reference(case: dict) -> None:
    views, labels, loss, ref = _build(case)
    value = loss(views, labels=labels) if case.get("views") else loss(views[0], views[1], labels=labels)
    assert value.item() == pytest.approx(ref, rel=1e-9, abs=1e-9)


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
@pytest.mark.parametrize("chunk_size", [1, 5, 64])
def test_chunked_equals_dense_in_loss_and_gradients(case: dict, chunk_size: int) -> None:
    views, labels, dense, _ = _build(case)
    _, _, chunked, _ = _build(case, chunk_size=chunk_size)
    results = []
    for module in (dense, chunked):
        x = views.float().clone().requires_grad_(True)
        value = module(x, labels=labels)
        value.backward()
        results.append((value.detach(), x.grad))
    assert torch.allclose(results[0][0], results[1][0], atol=1e-5)
    assert torch.allclose(results[0][1], results[1][1], atol=1e-5)


def test_a_chunk_that_holds_every_anchor_runs_the_dense_path(monkeypatch) -> None:
    import core.losses.ntxent as ntxent

    real, sizes = ntxent.chunked_loss_sum, []
    monkeypatch.setattr(ntxent, "chunked_loss_sum", lambda *args: sizes.append(args[5]) or real(*args))
    views = make_views(n=6)  # 12 anchors
    for variant in ("ntxent", "hard"):  # the paired path, and the general one
        dense = NTXentLoss(0.5, variant=variant)(views[0], views[1])
        for chunk_size, chunked in ((11, True), (12, False), (64, False)):
            sizes.clear()
            value = NTXentLoss(0.5, variant=variant, chunk_size=chunk_size)(views[0], views[1])
            assert sizes == ([chunk_size] if chunked else []), (variant, chunk_size)
            assert value.item() == pytest.approx(dense.item(), rel=1e-12)


@pytest.mark.parametrize("chunk_size", [None, 3])
@pytest.mark.parametrize("variant", ["ntxent", "dcl", "debiased", "hard"])
def test_gradcheck(variant: str, chunk_size: int | None) -> None:
    loss = NTXentLoss(0.5, variant=variant, chunk_size=chunk_size, tau_plus=0.1 if variant != "dcl" else None)
    views = make_views(n=4, d=3).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda v: loss(v), (views,), eps=1e-6, atol=1e-5)


def test_learnable_temperature_gradient_matches_between_paths() -> None:
    views = make_views().float()
    grads = []
    for chunk in (None, 4):
        loss = NTXentLoss(0.2, learnable_temperature=True, chunk_size=chunk)
        loss(views).backward()
        grads.append(loss.log_scale.grad)
    assert grads[0] is not None and grads[0].abs() > 0
    assert torch.allclose(grads[0], grads[1], atol=1e-5)


@pytest.mark.parametrize("n", [2, 5, 32])
def test_identical_embeddings_give_log_2n_minus_1(n: int) -> None:
    z = torch.ones(n, 8)
    assert NTXentLoss(0.1)(z, z).item() == pytest.approx(math.log(2 * n - 1), rel=1e-6)
    assert NTXentLoss(0.1, variant="dcl")(z, z).item() == pytest.approx(math.log(2 * n - 2), rel=1e-6, abs=1e-6)


def test_perfect_separation_approaches_zero() -> None:
    eye = torch.eye(4)
    assert NTXentLoss(0.01)(eye, eye).item() < 1e-30 + 1e-6


def test_invariant_to_input_scale_and_pair_permutation() -> None:
    views = make_views(n=8).float()
    loss = NTXentLoss(0.3)
    base = loss(views[0], views[1])
    assert torch.allclose(loss(views[0] * 7.5, views[1] * 0.01), base, atol=1e-6)
    perm = torch.randperm(8, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(loss(views[0][perm], views[1][perm]), base, atol=1e-6)
    assert torch.allclose(loss(views[1], views[0]), base, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("chunk_size", [None, 4])
def test_no_nan_under_half_precision_autocast(dtype: torch.dtype, chunk_size: int | None) -> None:
    orthogonal = torch.eye(16)[:8]
    identical = torch.ones(8, 16)
    for variant in ("ntxent", "dcl", "debiased", "hard"):
        loss = NTXentLoss(0.01, variant=variant, chunk_size=chunk_size)
        for a, b in ((orthogonal, orthogonal), (identical, identical), (orthogonal, identical)):
            x = a.clone().requires_grad_(True)
            with torch.autocast("cpu", dtype=dtype):
                value = loss(x.to(dtype), b.to(dtype))
            value.backward()
            assert value.dtype == torch.float32
            assert torch.isfinite(value) and torch.isfinite(x.grad).all(), (variant, dtype)


def test_zero_vectors_are_equidistant_and_finite() -> None:
    z = torch.zeros(4, 6, requires_grad=True)
    value = NTXentLoss(0.1)(z, z)
    value.backward()
    assert value.item() == pytest.approx(math.log(7), rel=1e-6)
    assert torch.isfinite(z.grad).all()


def test_learnable_temperature_is_clamped_to_inverse_100() -> None:
    loss = NTXentLoss(0.001, learnable_temperature=True)
    assert loss.scale.item() == pytest.approx(100.0)
    with torch.no_grad():
        loss.log_scale.fill_(10.0)
    assert loss.scale.item() == pytest.approx(100.0)


def test_anchors_without_negatives_are_left_out_with_a_zero_loss_that_has_a_graph() -> None:
    views = make_views(n=4).requires_grad_(True)
    same = torch.zeros(4, dtype=torch.long)  # one label: DCL has no negative for any anchor
    value = NTXentLoss(0.5, variant="dcl")(views[0], views[1], labels=same)
    assert value.item() == 0.0 and value.requires_grad
    value.backward()
    assert torch.count_nonzero(views.grad) == 0
    # with two labels, only the anchors that keep a negative count
    two = torch.tensor([0, 0, 0, 1])
    expected = reference(views.detach(), 0.5, "dcl", two)
    assert NTXentLoss(0.5, variant="dcl")(views[0], views[1], labels=two).item() == pytest.approx(expected)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(temperature=0.0),
        dict(temperature=-1.0),
        dict(variant="nope"),
        dict(tau_plus=1.0),
        dict(beta=-1),
        dict(chunk_size=0),
        dict(similarity_dtype=torch.int32),
    ],
)
def test_bad_arguments_are_refused(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        NTXentLoss(**kwargs)


def test_bad_shapes_are_refused() -> None:
    loss = NTXentLoss()
    with pytest.raises(ValueError):
        loss(torch.randn(4, 3), torch.randn(5, 3))
    with pytest.raises(ValueError):
        loss(torch.randn(4, 3))
    with pytest.raises(ValueError):
        loss(torch.randn(4, 3), torch.randn(4, 3), labels=torch.zeros(3))


def test_batch_indices_built_in_inference_mode_still_serve_training() -> None:
    """The loss builds its index tensors once per batch shape; a first call in inference mode (evaluation) must not
    leave it inference tensors, which autograd refuses to save for the next training step."""
    loss = NTXentLoss(0.2)
    a, b = torch.randn(13, 8), torch.randn(13, 8)
    with torch.inference_mode():
        expected = loss(a, b)
    a.requires_grad_(True)
    value = loss(a, b)
    value.backward()
    assert value.item() == pytest.approx(expected.item()) and a.grad is not None and a.grad.abs().sum() > 0


def _autograd_paired(x: torch.Tensor, log_scale: torch.Tensor, decoupled: bool) -> torch.Tensor:
    """The two-view loss as plain autograd operations: what core.losses.paired computes by hand."""
    m = x.shape[0]
    partner = (torch.arange(m) + m // 2) % m
    z = F.normalize(x, dim=1)
    s = (z @ z.T * log_scale.exp()).masked_fill(torch.eye(m, dtype=torch.bool), float("-inf"))
    if not decoupled:
        return F.cross_entropy(s, partner)
    positive = s[torch.arange(m), partner]
    s = s.masked_fill(F.one_hot(partner, m).bool(), float("-inf"))
    return (torch.logsumexp(s, dim=1) - positive).mean()


@pytest.mark.parametrize("chunk_size", [None, 3])
@pytest.mark.parametrize("learnable", [False, True])
@pytest.mark.parametrize("variant", ["ntxent", "dcl"])
def test_paired_loss_matches_autograd_in_value_and_every_gradient(
    variant: str, learnable: bool, chunk_size: int | None
) -> None:
    """One process, two views: the loss with the gradient written out (core.losses.paired, whole or in the
    chunked path's tiles) against autograd, in float64, with a zero vector and one shorter than F.normalize's
    epsilon among the embeddings."""
    views = make_views(n=7, d=5)
    views[0, 2] = 0.0
    views[1, 4] = 1e-14
    loss = NTXentLoss(0.3, variant=variant, learnable_temperature=learnable, chunk_size=chunk_size)
    x = views.clone().requires_grad_(True)
    value = loss(x)
    value.backward()
    x_ref = views.reshape(14, 5).clone().requires_grad_(True)
    log_scale = loss.log_scale.detach().double().requires_grad_(True)
    expected = _autograd_paired(x_ref, log_scale, variant == "dcl")
    expected.backward()
    assert value.item() == pytest.approx(expected.item(), rel=1e-6)
    assert torch.allclose(x.grad.reshape(14, 5), x_ref.grad, rtol=1e-5, atol=1e-9)
    if learnable:
        assert loss.log_scale.grad.item() == pytest.approx(log_scale.grad.item(), rel=1e-5)


def test_paired_loss_backward_twice_gives_the_same_gradient() -> None:
    """Backward reads the stored probabilities without changing them, so retain_graph=True is safe."""
    x = make_views(n=6).float().requires_grad_(True)
    value = NTXentLoss(0.2)(x)
    value.backward(retain_graph=True)
    first = x.grad.clone()
    x.grad = None
    value.backward()
    assert torch.equal(first, x.grad)


@pytest.mark.parametrize("variant", ["ntxent", "dcl"])
def test_a_single_pair_has_no_negative_and_gives_a_zero_loss_with_a_graph(variant: str) -> None:
    a = torch.randn(1, 4, requires_grad=True)
    value = NTXentLoss(0.1, variant=variant)(a, torch.randn(1, 4))
    assert value.item() == 0.0 and value.requires_grad
    value.backward()
    assert torch.count_nonzero(a.grad) == 0


SIMILARITY_CASES = [CASES[0], CASES[1], CASES[3], CASES[5], CASES[9]]  # paired ntxent, dcl; hard; SupCon; CLIP


@pytest.mark.parametrize("case", SIMILARITY_CASES, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
@pytest.mark.parametrize("chunk_size", [None, 16])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_narrow_similarity_products_stay_within_their_rounding_of_fp32(
    case: dict, chunk_size: int | None, dtype: torch.dtype
) -> None:
    """bf16/fp16 products: the loss within 1% of the fp32 loss and every gradient within a few % of its norm,
    the learned temperature's included; the loss itself comes back in fp32."""
    gen = torch.Generator().manual_seed(3)
    views = torch.randn(2, 48, 32, generator=gen)
    labels = torch.randint(0, 6, (48,), generator=gen) if case.get("labels") else None
    options = {k: case[k] for k in ("tau_plus", "beta") if k in case}
    results = []
    for product in (None, dtype):
        loss = NTXentLoss(
            0.1, variant=case["variant"], symmetric=case.get("symmetric", False), chunk_size=chunk_size,
            learnable_temperature=True, similarity_dtype=product, **options,
        )  # fmt: skip
        x = views.clone().requires_grad_(True)
        value = loss(x, labels=labels)
        value.backward()
        results.append((value, x.grad, loss.log_scale.grad))
    (exact, grad, grad_scale), (narrow, narrow_grad, narrow_grad_scale) = results
    assert narrow.dtype == torch.float32
    assert narrow.item() != exact.item()  # the products were rounded
    assert narrow.item() == pytest.approx(exact.item(), rel=1e-2)
    assert (narrow_grad - grad).norm() <= 0.05 * grad.norm()
    assert narrow_grad_scale.item() == pytest.approx(grad_scale.item(), rel=0.05, abs=1e-3)


@pytest.mark.parametrize("variant", ["ntxent", "hard"])
@pytest.mark.parametrize("chunk_size", [None, 16])
def test_similarity_dtype_sets_the_dtype_of_every_matrix_product(variant: str, chunk_size: int | None) -> None:
    """Every product of forward and backward (z z^T and its gradient's) runs in the similarity dtype: fp32 by
    default, even under bf16 autocast; bf16 when asked for, with or without autocast."""
    from torch.utils._python_dispatch import TorchDispatchMode

    products = {torch.ops.aten.mm.default, torch.ops.aten.addmm.default, torch.ops.aten.addmm_.default,
                torch.ops.aten.bmm.default}  # fmt: skip

    class ProductDtypes(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.seen: list[torch.dtype] = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
            if func in products:
                self.seen.append(args[-1].dtype)
            return func(*args, **(kwargs or {}))

    x = make_views(n=24, d=8).float()
    for product, autocast in ((None, True), (torch.bfloat16, False), (torch.bfloat16, True)):
        loss = NTXentLoss(0.1, variant=variant, chunk_size=chunk_size, similarity_dtype=product)
        leaf = x.clone().requires_grad_(True)
        with ProductDtypes() as mode:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                value = loss(leaf.to(torch.bfloat16) if autocast else leaf)
            value.backward()
        assert len(mode.seen) >= 3, mode.seen  # one forward product (one per tile) and two backward ones
        assert set(mode.seen) == {product or torch.float32}, (product, autocast, mode.seen)
