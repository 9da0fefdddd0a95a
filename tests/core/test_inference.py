"""The offline embedder takes images as users hold them, as the upload and the embeddings route read them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from core.data.records import InputSpec
from core.inference import Embedder
from tests.core.test_tracing import checkpoint


@pytest.mark.parametrize("channels", [1, 3])
def test_an_image_model_embeds_pixels_in_each_layout_an_npz_takes(tmp_path: Path, channels: int) -> None:
    config = {"data": {"modality": "image"}, "model": {"kind": "resnet", "image_size": 8, "width": 8, "blocks": [1]}}
    embedder = Embedder(checkpoint(tmp_path, config, InputSpec("image", channels=channels)))
    pixels = np.random.default_rng(0).integers(0, 256, size=(4, channels, 8, 8), dtype=np.uint8)  # (B, C, H, W)
    pixels[0, 0, 0, :2] = 0, 255
    want = embedder.embed(torch.from_numpy(pixels).float() / 255)  # what the docstring always asked for
    same = {
        "uint8 NCHW": pixels,  # before: read as floats in [0, 255], embedded as noise without a word
        "uint8 NHWC": pixels.transpose(0, 2, 3, 1),  # before: a convolution's shape error
        "uint16 NCHW": pixels.astype(np.uint16) * 257,  # 16-bit, scaled as a 16-bit PNG is
        "float NHWC": pixels.transpose(0, 2, 3, 1) / 255.0,
        "uint8 tensor": torch.from_numpy(pixels),
    }
    if channels == 1:
        same["uint8 NHW"] = pixels[:, 0]
    for name, images in same.items():
        torch.testing.assert_close(embedder.embed(images), want, atol=1e-5, rtol=1e-4, msg=name)
    other = np.repeat(pixels, 3, axis=1) if channels == 1 else pixels.mean(1, keepdims=True).round().astype(np.uint8)
    assert embedder.embed(other).shape == want.shape  # the other channel count, as the embeddings route takes it
    with pytest.raises(ValueError, match=r"range over \[0, 255\]; give floats in \[0, 1\], or the pixels as uint8"):
        embedder.embed(pixels.astype(np.float32))
    with pytest.raises(ValueError, match=r"images must be \(N, H, W\), \(N, H, W, C\) or \(N, C, H, W\)"):
        embedder.embed(np.zeros((2, 8, 8, 5), dtype=np.uint8))


def test_photos_of_different_sizes_embed_in_one_call_as_each_alone(tmp_path: Path) -> None:
    """A folder of photos comes in several sizes; before, a list of them failed in numpy ("inhomogeneous shape").
    Each is brought to the model's square as /v1/embeddings brings its inputs, so each embeds as it does alone."""
    from PIL import Image

    config = {"data": {"modality": "image"}, "model": {"kind": "resnet", "image_size": 8, "width": 8, "blocks": [1]}}
    embedder = Embedder(checkpoint(tmp_path, config, InputSpec("image", channels=3)))
    rng = np.random.default_rng(0)
    photos = [rng.integers(0, 256, size=(48, 64, 3), dtype=np.uint8), rng.integers(0, 256, size=(30, 20, 3),
              dtype=np.uint8), rng.integers(0, 256, size=(16, 16), dtype=np.uint8)]  # fmt: skip
    alone = torch.cat([embedder.embed(photo[None]) for photo in photos])
    torch.testing.assert_close(embedder.embed(photos), alone, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(embedder.embed([Image.fromarray(photo) for photo in photos]), alone, atol=1e-5,
                               rtol=1e-4)  # fmt: skip
    torch.testing.assert_close(embedder.embed(photos, batch_size=2), alone, atol=1e-5, rtol=1e-4)


def test_an_image_of_another_aspect_is_cropped_to_the_training_images_aspect(tmp_path: Path) -> None:
    """A model trained on 12x16 landscapes (4:3) embeds a 16x12 portrait as its centre 9x12, as the dataset would
    have held it, and a 12x32 panorama as its centre 12x16. Before, both were stretched to the square whole; a
    checkpoint that does not record its images' size (written before it did) still stretches them."""
    config = {"data": {"modality": "image"}, "model": {"kind": "resnet", "image_size": 8, "width": 8, "blocks": [1]}}
    embedder = Embedder(checkpoint(tmp_path / "new", config, InputSpec("image", channels=3, height=12, width=16)))
    rng = np.random.default_rng(0)
    portrait = rng.integers(0, 256, size=(16, 12, 3), dtype=np.uint8)
    wide = rng.integers(0, 256, size=(12, 32, 3), dtype=np.uint8)
    torch.testing.assert_close(embedder.embed(portrait[None]), embedder.embed(portrait[3:12][None]))
    torch.testing.assert_close(embedder.embed(wide[None]), embedder.embed(wide[:, 8:24][None]))
    torch.testing.assert_close(embedder.embed([portrait, wide]), embedder.embed([portrait[3:12], wide[:, 8:24]]))
    older = Embedder(checkpoint(tmp_path / "old", config, InputSpec("image", channels=3)))
    assert (older.embed(portrait[None]) - older.embed(portrait[3:12][None])).abs().max() > 1e-3


def test_a_string_alone_is_one_text_and_vectors_of_another_width_are_refused(tmp_path: Path) -> None:
    config = {"data": {"modality": "text"}, "model": {"kind": "transformer", "backbone": "tiny-random-bert"}}
    text = Embedder(checkpoint(tmp_path / "t", config, InputSpec("text")))
    one = text.embed("a text")  # before: six embeddings, one per character
    torch.testing.assert_close(one, text.embed(["a text"]))
    assert one.shape == (1, text.dim)
    config = {"data": {"modality": "vectors"}, "model": {"kind": "mlp", "hidden_dim": 8, "output_dim": 4}}
    vectors = Embedder(checkpoint(tmp_path / "v", config, InputSpec("vectors", features=5)))
    assert vectors.embed(np.zeros((3, 5))).shape == (3, vectors.dim)
    for wrong in (np.zeros((3, 4)), np.zeros(5)):  # before: torch's "mat1 and mat2 shapes cannot be multiplied"
        with pytest.raises(ValueError, match=r"vectors must be \(n, 5\) for this model"):
            vectors.embed(wrong)
