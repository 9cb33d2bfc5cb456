"""``image_classifier``: top-k ``{label: probability}`` per image.

Input as ``VisionHandler`` (resize 256, centre crop 224, ImageNet normalisation by default).
The model returns class scores ``[N, C]``; they are softmaxed and the ``topk`` best (5 by
default; ``handler: {topk: N}`` in the model-config) are returned as a dict ordered by
probability, labelled from ``index_to_name.json`` when present (else the class index).

Failure mode: bad images -> 400 for that request (see ``VisionHandler``); a model output that
is not a 2-D score tensor -> ``RuntimeError`` (500 for the batch).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812 - the conventional alias

from ..context import Context
from ..labels import map_class_to_label
from .vision import VisionHandler


def class_scores(output: Any) -> torch.Tensor:
    """The ``[N, C]`` score tensor of a classifier output (tensor or ``{"out": ...}``)."""
    if isinstance(output, dict) and "out" in output:
        output = output["out"]
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        output = output[0]
    if not isinstance(output, torch.Tensor) or output.dim() != 2:
        shape = list(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
        raise RuntimeError(f"expected class scores of shape [batch, classes], got {shape}")
    return output


class ImageClassifier(VisionHandler):
    """Softmax top-k classification of images."""

    #: ``postprocess`` keeps no per-batch state (see ``handlers.staged``).
    pipeline_safe = True

    topk = 5

    def initialize(self, context: Context) -> None:
        super().initialize(context)
        self.set_max_result_classes(int(self.handler_config.get("topk", self.topk)))

    def set_max_result_classes(self, topk: int) -> None:
        if topk < 1:
            raise ValueError(f"topk must be at least 1, got {topk}")
        self.topk = topk

    def get_max_result_classes(self) -> int:
        return self.topk

    def postprocess(self, data: Any) -> list[Any]:
        probabilities = F.softmax(class_scores(data).float(), dim=1)
        k = min(self.topk, probabilities.shape[1])
        values, classes = torch.topk(probabilities, k, dim=1)
        return map_class_to_label(values.tolist(), self.mapping, classes.tolist())
