"""Serving in bf16: embeddings within bf16's rounding of the fp32 pass's, traced or eager, products run in bf16."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from core.data.records import InputSpec
from core.inference import Embedder, native_bf16
from tests.core.test_tracing import checkpoint

MODELS = {
    "text": ({"data": {"modality": "text"}, "model": {"kind": "transformer", "backbone": "all-MiniLM-L6-v2",
                                                      "max_length": 64}},
             InputSpec("text")),
    "vectors": ({"data": {"modality": "vectors"}, "model": {"kind": "mlp", "hidden_dim": 64, "output_dim": 32}},
                InputSpec("vectors", features=24)),
    "image": ({"data": {"modality": "image"}, "model": {"kind": "resnet", "image_size": 16, "width": 8,
                                                        "blocks": [1, 1]}},
              InputSpec("image", channels=3)),
}  # fmt: skip


def inputs(modality: str, n: int = 9):  # noqa: ANN201 - what the modality's embed takes
    rng = np.random.default_rng(0)
    if modality == "text":
        return [f"text number {i}, " + "with more words " * (i % 4) for i in range(n)]
    if modality == "vectors":
        return rng.normal(size=(n, 24)).astype(np.float32)
    return rng.random((n, 3, 16, 16), dtype=np.float32)


@pytest.mark.parametrize("modality", list(MODELS))
def test_bf16_embeddings_stay_within_bf16_rounding_of_fp32_ones(tmp_path: Path, modality: str) -> None:
    config, spec = MODELS[modality]
    path, x = checkpoint(tmp_path, config, spec), inputs(modality)
    fp32 = Embedder(path, trace=True).embed(x)
    eager = Embedder(path, precision="bf16").embed(x)
    served = Embedder(path, trace=True, precision="bf16")
    got = served.embed(x)
    assert got.dtype == torch.float32 and got.shape == fp32.shape
    torch.testing.assert_close(got.norm(dim=-1), torch.ones(len(x)), atol=1e-5, rtol=0)
    assert (got * fp32).sum(-1).min() > 0.999  # within bf16's rounding of the fp32 pass
    assert (got - fp32).abs().max() > 1e-4  # and not the fp32 pass itself (a trace differs from eager by ~1e-7)
    if modality == "image":
        assert served.untraced_because == "image models are not traced"
    else:  # the trace was recorded under autocast: it runs the same bf16 pass as eager autocast, with no context
        assert served.untraced_because is None and served.forward != served.model.embed
        torch.testing.assert_close(got, eager, atol=1e-5, rtol=0)


@pytest.mark.parametrize("modality", ["text", "image"])
def test_precision_sets_the_dtype_of_every_product(tmp_path: Path, modality: str) -> None:
    products = {torch.ops.aten.linear.default, torch.ops.aten.addmm.default, torch.ops.aten.mm.default,
                torch.ops.aten.bmm.default, torch.ops.aten.conv2d.default}  # fmt: skip

    class ProductDtypes(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.seen: set[tuple[torch.dtype, torch.dtype]] = set()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
            if func in products:
                self.seen.add((args[0].dtype, args[1].dtype))
            return func(*args, **(kwargs or {}))

    config, spec = MODELS[modality]
    if modality == "text":
        config = {**config, "model": {**config["model"], "backbone": "tiny-random-bert"}}
    path = checkpoint(tmp_path, config, spec)
    for precision, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        with ProductDtypes() as mode:
            out = Embedder(path, precision=precision).embed(inputs(modality, 3))
        assert mode.seen == {(dtype, dtype)} and out.dtype == torch.float32, (precision, mode.seen)


def test_an_unknown_precision_is_refused(tmp_path: Path) -> None:
    config, spec = MODELS["vectors"]
    with pytest.raises(ValueError, match="precision must be one of"):
        Embedder(checkpoint(tmp_path, config, spec), precision="fp16")  # type: ignore[arg-type]


def test_a_bf16_trace_holds_its_weights_cast_once(tmp_path: Path) -> None:
    """Frozen: the trace holds its own (cast) copy of the weights; an fp32 trace shares the model's."""
    config, spec = MODELS["vectors"]
    path, x = checkpoint(tmp_path, config, spec), inputs("vectors")
    for precision, frozen in (("fp32", False), ("bf16", True)):
        served = Embedder(path, trace=True, precision=precision)
        before = served.embed(x)
        with torch.no_grad():
            for parameter in served.model.parameters():
                parameter.add_(torch.randn_like(parameter))
        assert torch.equal(served.embed(x), before) == frozen, precision


@pytest.mark.skipif(not Path("/proc/cpuinfo").exists(), reason="reads the CPU's flags from /proc/cpuinfo")
def test_native_bf16_follows_the_cpus_bf16_units() -> None:
    flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")).split()
    assert native_bf16(torch.device("cpu")) == ("avx512_bf16" in flags or "amx_bf16" in flags)
