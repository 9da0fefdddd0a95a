"""The CUDA paths: losses against a float64 reference, bf16 autocast, and a bf16 training run on the GPU.

Skipped where no CUDA device is visible (CI has none); bench/RESULTS.md's "GPU" section says where they last
ran.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from core.data import Records
from core.encoders.image import squared
from core.inference import Embedder
from core.losses import NTXentLoss
from core.train.batches import DeviceData
from core.train.checkpoint import is_complete
from core.train.loop import fit
from tests.core.test_ntxent import CASES, _build
from tests.core.test_training import Recorder, digits, digits_config

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

CUDA = torch.device("cuda")


def _relative(out: torch.Tensor, ref: torch.Tensor) -> float:
    return float((out.double().cpu() - ref.double().cpu()).norm() / ref.double().norm())


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
@pytest.mark.parametrize("chunk_size", [None, 1, 4])
def test_every_variant_on_cuda_matches_the_float64_reference(case: dict, chunk_size: int | None) -> None:
    views, labels, loss, ref = _build(case, chunk_size=chunk_size)
    cpu_views = views.clone().requires_grad_(True)  # float64 on the CPU: the reference gradient
    (
        loss(cpu_views, labels=labels) if case.get("views") else loss(cpu_views[0], cpu_views[1], labels=labels)
    ).backward()
    x = views.float().to(CUDA).requires_grad_(True)
    gpu_labels = None if labels is None else labels.to(CUDA)
    loss = loss.to(CUDA)
    value = loss(x, labels=gpu_labels) if case.get("views") else loss(x[0], x[1], labels=gpu_labels)
    value.backward()
    assert value.item() == pytest.approx(ref, rel=1e-5)
    assert _relative(x.grad, cpu_views.grad) < 1e-5


@pytest.mark.parametrize("chunk_size", [None, 1000, 4096])
@pytest.mark.parametrize("variant", ["ntxent", "dcl", "hard"])
def test_a_large_batch_on_cuda_matches_float64_on_fresh_random_data(chunk_size: int | None, variant: str) -> None:
    a, b = torch.randn(2, 3000, 128, dtype=torch.float64)  # fresh draws: any valid input, not one seed's
    b = a + 0.5 * b
    ref_a, ref_b = a.clone().requires_grad_(True), b.clone().requires_grad_(True)
    ref_loss = NTXentLoss(0.1, variant=variant)
    expected = ref_loss(ref_a, ref_b)
    expected.backward()
    x_a, x_b = a.float().to(CUDA).requires_grad_(True), b.float().to(CUDA).requires_grad_(True)
    value = NTXentLoss(0.1, variant=variant, chunk_size=chunk_size).to(CUDA)(x_a, x_b)
    value.backward()
    assert value.item() == pytest.approx(expected.item(), rel=1e-5)
    assert _relative(x_a.grad, ref_a.grad) < 1e-4 and _relative(x_b.grad, ref_b.grad) < 1e-4


@pytest.mark.parametrize("chunk_size", [None, 512])
def test_under_bf16_autocast_the_loss_stays_fp32_on_bf16_embeddings(chunk_size: int | None) -> None:
    z = torch.randn(2, 2048, 128, device=CUDA).bfloat16()  # what an encoder gives under autocast
    loss = NTXentLoss(0.05, chunk_size=chunk_size).to(CUDA)
    x = z.clone().requires_grad_(True)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        value = loss(x[0], x[1])
    value.backward()
    y = z.float().requires_grad_(True)  # the same embeddings, upcast by hand, no autocast
    expected = loss(y[0], y[1])
    expected.backward()
    assert value.dtype == torch.float32 and x.grad.dtype == torch.bfloat16
    assert value.item() == pytest.approx(expected.item(), rel=1e-6)
    assert _relative(x.grad, y.grad) < 1e-2  # the gradient is rounded to bf16 on its way back to the encoder


@pytest.mark.parametrize("chunk_size", [None, 1000])
@pytest.mark.parametrize("variant", ["ntxent", "hard"])
def test_bf16_similarity_products_on_cuda_stay_within_their_rounding(chunk_size: int | None, variant: str) -> None:
    """``similarity_dtype=torch.bfloat16`` on the tensor cores: within 1% of the float64 loss, 5% in gradient."""
    a, b = torch.randn(2, 3000, 128, dtype=torch.float64)
    b = a + 0.5 * b
    ref_a, ref_b = a.clone().requires_grad_(True), b.clone().requires_grad_(True)
    expected = NTXentLoss(0.1, variant=variant)(ref_a, ref_b)
    expected.backward()
    x_a, x_b = a.float().to(CUDA).requires_grad_(True), b.float().to(CUDA).requires_grad_(True)
    loss = NTXentLoss(0.1, variant=variant, chunk_size=chunk_size, similarity_dtype=torch.bfloat16).to(CUDA)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        value = loss(x_a, x_b)
    value.backward()
    assert value.dtype == torch.float32
    assert value.item() == pytest.approx(expected.item(), rel=1e-2)
    assert _relative(x_a.grad, ref_a.grad) < 5e-2 and _relative(x_b.grad, ref_b.grad) < 5e-2


def test_a_bf16_training_run_on_cuda_learns_and_its_checkpoint_serves_on_the_cpu(tmp_path) -> None:
    train, val = digits().split(0.2, seed=0)
    config = digits_config(loss={"chunk_size": 128}, train={"device": "cuda", "precision": "bf16"})
    recorder = Recorder()
    result = fit(config, train, val, checkpoint_dir=tmp_path, callback=recorder)
    assert result.status == "completed" and is_complete(result.last_checkpoint)
    losses = [report.loss for report in recorder.steps]
    assert all(torch.isfinite(torch.tensor(losses)))
    assert sum(losses[-10:]) / 10 < sum(losses[:10]) / 10 - 0.3, losses  # it learns under bf16
    assert recorder.evals[-1].metrics["knn_top1"] > 0.9, recorder.evals[-1].metrics  # random init: 0.82 (CPU test)
    images = val.images[:64].astype("float32") / 255
    on_gpu = Embedder(result.last_checkpoint, device="cuda").embed(images)
    on_cpu = Embedder(result.last_checkpoint).embed(images)
    # one checkpoint serves on either device; cuDNN's convolutions may round through TF32, hence not 1e-6
    assert (on_gpu * on_cpu).sum(1).min() > 0.999


def test_large_images_are_held_and_squared_on_cuda_as_on_the_cpu() -> None:
    """The antialiased shrink of images larger than the model needs (core.train.batches, core.encoders.image) runs
    on the training device: on a GPU it must give the CPU's pixels, to rounding."""
    images = np.random.default_rng(0).integers(0, 256, size=(6, 3, 384, 512), dtype=np.uint8)
    on_gpu = DeviceData(Records("image", images=images), CUDA, image_size=32).tensor
    on_cpu = DeviceData(Records("image", images=images), torch.device("cpu"), image_size=32).tensor
    assert on_gpu.device.type == "cuda" and on_gpu.shape == on_cpu.shape == (6, 3, 64, 85)
    assert (on_gpu.cpu().int() - on_cpu.int()).abs().max() <= 1
    floats = torch.as_tensor(images[:2]).float() / 255
    torch.testing.assert_close(squared(floats.to(CUDA), 32).cpu(), squared(floats, 32), atol=1e-4, rtol=0)
