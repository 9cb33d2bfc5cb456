"""The GPU benchmark's model and inputs: a ResNet-50-shaped network and JPEG request bodies.

``ResNet50`` is the torchvision ResNet-50 layout (stem, bottleneck stages [3, 4, 6, 3],
1000-way head) written by hand with random weights; ``width`` scales every stage's channels
(64 is ResNet-50 itself, about 4.1 GFLOPs at 224x224; ``--quick`` uses 16 so that a CPU run
finishes in seconds). Nothing is downloaded.
"""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image
from torch import nn


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3, 1x1 expand (x4), with a projected shortcut where the shape changes."""

    def __init__(self, in_ch: int, mid_ch: int, stride: int) -> None:
        super().__init__()
        out_ch = mid_ch * 4
        self.body = nn.Sequential(
            nn.Conv2d(in_ch, mid_ch, 1, bias=False),
            nn.BatchNorm2d(mid_ch),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid_ch, mid_ch, 3, stride, 1, bias=False),
            nn.BatchNorm2d(mid_ch),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid_ch, out_ch, 1, bias=False),
            nn.BatchNorm2d(out_ch),
        )
        self.shortcut = nn.Identity()
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), nn.BatchNorm2d(out_ch)
            )
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.relu(self.body(x) + self.shortcut(x))
        return out


class ResNet50(nn.Module):
    """ResNet-50 layout; ``width`` is the stem's channel count (64 for the real thing)."""

    def __init__(self, width: int = 64, classes: int = 1000) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, width, 7, 2, 3, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2, 1),
        )
        blocks: list[nn.Module] = []
        in_ch = width
        for scale, count, stride in ((1, 3, 1), (2, 4, 2), (4, 6, 2), (8, 3, 2)):
            mid = width * scale
            for index in range(count):
                blocks.append(Bottleneck(in_ch, mid, stride if index == 0 else 1))
                in_ch = mid * 4
        self.layers = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_ch, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.fc(torch.flatten(self.pool(self.layers(self.stem(x))), 1))
        return out


def scripted_resnet50(path: str, width: int, seed: int = 0) -> None:
    """Save a TorchScript ResNet-50 with seeded random weights (both servers load it)."""
    torch.manual_seed(seed)
    model = ResNet50(width).eval()
    torch.jit.script(model).save(path)  # type: ignore[no-untyped-call]


def jpeg_body(width: int, height: int, seed: int = 0, quality: int = 90) -> bytes:
    """A photo-like JPEG: smooth colour gradients plus noise (so it does not compress to
    nothing and decodes at a realistic cost)."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack(
        [
            128 + 100 * np.sin(xs / (17 + 3 * c) + ys / (29 + 5 * c) + c) * np.cos(ys / 41)
            for c in range(3)
        ],
        axis=-1,
    )
    pixels = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(out, "JPEG", quality=quality)
    return out.getvalue()
