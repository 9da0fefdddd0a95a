"""Traced inference passes answer as the eager pass does, and a trace that can't be trusted is not used."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from core.config import RunConfig
from core.data.records import InputSpec
from core.encoders import build_model
from core.inference import Embedder
from core.tracing import trace_checked
from core.train.checkpoint import TrainerState, save_checkpoint


def checkpoint(tmp_path: Path, config: dict, spec: InputSpec) -> Path:
    """A checkpoint of a freshly initialised model (tracing doesn't care whether it was trained)."""
    torch.manual_seed(0)
    run = RunConfig.model_validate(config)
    trainer = TrainerState(step=0, epoch=0, optimizer={"state": {}, "param_groups": []}, loss={}, scaler=None,
                           rng=torch.get_rng_state())  # fmt: skip
    return save_checkpoint(tmp_path / "ckpt", build_model(run, spec), run, spec, trainer)


TEXTS = [
    ["hello"],
    ["a short text", "a much longer text, which makes the first one padded to its length in the batch"],
    ["x"] * 7,  # no padding at all
    ["word " * 400, "and a short one"],  # cut at max_length
    ["naïve café — ünïcode", "tabs\tand\nnewlines", "12345 67890", "?!"],
]


@pytest.mark.parametrize("backbone", ["tiny-random-bert", "all-MiniLM-L6-v2"])
def test_a_traced_text_model_embeds_as_the_eager_one(tmp_path: Path, backbone: str) -> None:
    config = {"data": {"modality": "text"}, "model": {"kind": "transformer", "backbone": backbone, "max_length": 64}}
    path = checkpoint(tmp_path, config, InputSpec("text"))
    eager, traced = Embedder(path), Embedder(path, trace=True)
    assert traced.untraced_because is None
    assert traced.forward != traced.model.embed  # the trace is what runs
    for texts in TEXTS:
        want, want_tokens = eager.embed_with_usage(texts)
        got, got_tokens = traced.embed_with_usage(texts)
        assert got.shape == (len(texts), eager.dim)
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
        assert torch.equal(got_tokens, want_tokens)


def test_a_traced_vector_model_embeds_as_the_eager_one(tmp_path: Path) -> None:
    config = {"data": {"modality": "vectors"}, "model": {"kind": "mlp", "hidden_dim": 32, "output_dim": 16},
              "head": {"serve": "projection"}}  # fmt: skip
    path = checkpoint(tmp_path, config, InputSpec("vectors", features=12))
    eager, traced = Embedder(path), Embedder(path, trace=True)
    assert traced.untraced_because is None
    x = torch.randn(33, 12, generator=torch.Generator().manual_seed(1)).numpy()
    for rows in (x[:1], x[:3], x):
        torch.testing.assert_close(traced.embed(rows), eager.embed(rows), atol=1e-5, rtol=1e-4)


def test_image_models_stay_eager_and_say_so(tmp_path: Path) -> None:
    config = {"data": {"modality": "image"}, "model": {"kind": "resnet", "image_size": 8, "width": 8, "blocks": [1]}}
    embedder = Embedder(checkpoint(tmp_path, config, InputSpec("image", channels=1)), trace=True)
    assert embedder.untraced_because == "image models are not traced"
    assert embedder.forward == embedder.model.embed


class Branchy(torch.nn.Module):
    def infer(self, x: torch.Tensor) -> torch.Tensor:
        return x * 3 if x.shape[0] > 1 else x + 1  # a Python branch on the shape: the trace records one side

    def describe(self, x: torch.Tensor) -> str:
        return "not a tensor"


def test_a_trace_that_froze_a_branch_is_not_used() -> None:
    module = Branchy()
    fn, why = trace_checked(module, "infer", torch.ones(2, 3), [torch.ones(1, 3)])
    assert fn == module.infer
    assert why == "the trace differs from the eager pass on inputs of shape (1, 3)"
    fn, why = trace_checked(module, "infer", torch.ones(2, 3), [torch.ones(5, 3)])  # a probe on the same side
    assert why is None and fn != module.infer
    torch.testing.assert_close(fn(torch.ones(4, 3)), torch.full((4, 3), 3.0))


def test_a_method_that_cannot_be_traced_is_kept_with_the_reason() -> None:
    module = Branchy()
    fn, why = trace_checked(module, "describe", torch.ones(2), [])
    assert fn == module.describe
    assert why is not None and why.startswith("tracing failed: ")
