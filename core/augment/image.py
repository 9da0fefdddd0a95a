"""SimCLR's image views (Chen et al. 2020, appendix A), with kornia on the training device.

Random resized crop, horizontal flip, colour jitter (brightness, contrast, saturation 0.8s, hue 0.2s, applied
with probability ``jitter_prob``), random grayscale and Gaussian blur. Single-channel images get brightness
and contrast only (saturation and hue need colour).
"""

from __future__ import annotations

import kornia.augmentation as K
from torch import Tensor, nn

from core.config import ImageAugmentConfig


def build_image_views(config: ImageAugmentConfig, size: int, channels: int) -> nn.Module:
    """A kornia pipeline mapping (B, C, H, W) floats in [0, 1] to a (B, C, size, size) random view."""
    s = config.jitter_strength
    colour = channels == 3
    kernel = max(3, (size // 10) | 1)  # SimCLR blurs with a kernel of 10% of the image side, odd
    return K.AugmentationSequential(
        # "resample": one batched warp for every crop; kornia's default ("slice") crops and resizes each image in
        # a Python loop, ~8 operators per image, so a step's operators (kernel launches on a GPU) grew with the batch
        K.RandomResizedCrop((size, size), scale=(config.crop_scale_min, 1.0), cropping_mode="resample"),
        K.RandomHorizontalFlip(p=config.flip_prob),
        K.ColorJitter(0.8 * s, 0.8 * s, 0.8 * s if colour else 0.0, 0.2 * s if colour else 0.0, p=config.jitter_prob),
        K.RandomGrayscale(p=config.grayscale_prob) if colour else nn.Identity(),
        K.RandomGaussianBlur((kernel, kernel), (0.1, 2.0), p=config.blur_prob),
    )


class ImageViews:
    """Callable wrapper: (B, C, H, W) in [0, 1] -> one random view."""

    def __init__(self, config: ImageAugmentConfig, size: int, channels: int) -> None:
        self.pipeline = build_image_views(config, size, channels)

    def __call__(self, x: Tensor) -> Tensor:
        return self.pipeline(x)
