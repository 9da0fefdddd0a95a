"""Small ResNet for small images (He et al. 2016), with the CIFAR-style stem SimCLR uses for CIFAR-10."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from core.config import ResNetConfig


def resized(images: Tensor, size: tuple[int, int]) -> Tensor:
    """(B, C, H, W) float images resized to ``size`` (H, W), each pixel, where they shrink, the average of the area
    it covers (an antialiased filter, as Pillow's). Before, bilinear sampling read 4 pixels of that area, so that a
    384x512 photo's noise and fine texture came out as coarse noise."""
    if tuple(images.shape[-2:]) == size:
        return images
    wide = images if images.dtype in (torch.float32, torch.float64) else images.float()  # the filter has no bf16 on CPU
    out = F.interpolate(wide, size=size, mode="bilinear", antialias=True, align_corners=False)
    return out.to(images.dtype)


def squared(images: Tensor, size: int) -> Tensor:
    """(B, C, H, W) images as the model sees them, (B, C, size, size): stretched to the square (:func:`resized`)."""
    return resized(images, (size, size))


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection (projection shortcut when the shape changes)."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x), inplace=True)


class ResNetEncoder(nn.Module):
    """3x3 stem without max-pool, stages of basic blocks (width doubling, stride 2 after the first), avg-pool.

    Args:
        config: the encoder slice of the run config.
        channels: input channels (1 or 3).
    """

    def __init__(self, config: ResNetConfig, channels: int) -> None:
        super().__init__()
        self.image_size = config.image_size
        self.register_buffer("mean", torch.full((1, channels, 1, 1), 0.5))
        self.register_buffer("std", torch.full((1, channels, 1, 1), 0.25))
        self.stem = nn.Sequential(
            nn.Conv2d(channels, config.width, 3, 1, 1, bias=False), nn.BatchNorm2d(config.width), nn.ReLU(inplace=True)
        )
        stages, width = [], config.width
        for index, count in enumerate(config.blocks):
            out = config.width * 2**index
            for block in range(count):
                stages.append(BasicBlock(width, out, stride=2 if index > 0 and block == 0 else 1))
                width = out
        self.stages = nn.Sequential(*stages)
        self.output_dim = width

    def fit_normalisation(self, mean: Tensor, std: Tensor) -> None:
        """Set the per-channel standardisation from the training images' (1, C, 1, 1) mean and std, in [0, 1]."""
        self.mean.copy_(mean)
        self.std.copy_(std.clamp(min=1e-3))

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) float images in [0, 1], any size -> (B, output_dim)."""
        out = self.stages(self.stem((squared(x, self.image_size) - self.mean) / self.std))
        return out.mean(dim=(2, 3))
