"""Encoded test images made with PIL (random pixels, deterministic per seed)."""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image


def image_bytes(width: int, height: int, fmt: str = "PNG", seed: int = 0) -> bytes:
    """A ``width`` x ``height`` RGB image of random pixels, encoded as ``fmt``."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buffer, format=fmt)
    return buffer.getvalue()


def image_base64(width: int, height: int, fmt: str = "PNG", seed: int = 0) -> str:
    """The same image as base64 text."""
    return base64.b64encode(image_bytes(width, height, fmt, seed)).decode("ascii")
