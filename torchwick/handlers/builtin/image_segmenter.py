"""``image_segmenter``: a per-pixel class map.

Input as ``VisionHandler``. The model returns per-pixel logits ``[N, C, H, W]``, directly or
torchvision-style as ``{"out": logits}``. Each request gets an ``[H, W, 2]`` nested list:
for every pixel ``[class_index, probability]`` of its most likely class (TorchServe's shape;
the class index is written as a float because both values share one tensor).

Failure mode: bad images -> 400 for that request; a model output of another shape ->
``RuntimeError`` (500 for the batch).
"""

from __future__ import annotations

from typing import Any

import torch

from .vision import VisionHandler


class ImageSegmenter(VisionHandler):
    """Softmax per pixel, then the best class and its probability."""

    def postprocess(self, data: Any) -> list[Any]:
        logits = data["out"] if isinstance(data, dict) and "out" in data else data
        if not isinstance(logits, torch.Tensor) or logits.dim() != 4:
            shape = list(logits.shape) if isinstance(logits, torch.Tensor) else type(logits)
            raise RuntimeError(f"expected segmentation logits [N, C, H, W], got {shape}")
        probabilities, classes = torch.softmax(logits.float(), dim=1).max(dim=1)
        pixel_map = torch.stack((classes.float(), probabilities), dim=-1)
        return [sample.tolist() for sample in pixel_map]
