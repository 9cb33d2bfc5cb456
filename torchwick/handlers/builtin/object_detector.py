"""``object_detector``: labelled boxes above a score threshold.

Input as ``VisionHandler`` but with no resize, crop or normalisation (the image is only
converted to a [0, 1] tensor), as detection models expect. Images of different sizes run as
separate forwards. The model output may be torchvision-style (one dict per image with
``boxes [K, 4]``, ``labels [K]``, ``scores [K]``), or batched tensors under those names (a dict,
as an ONNX graph with outputs named ``boxes``/``labels``/``scores`` returns), or a
``(boxes, labels, scores)`` tuple of batched tensors.

Each request gets a list of ``{label: [x1, y1, x2, y2], "score": s}`` for the detections with
``s >= threshold`` (0.5 by default; ``handler: {threshold: t}``), labels from
``index_to_name.json`` when present.

Failure mode: bad images -> 400 for that request; an unrecognised model output ->
``RuntimeError`` (500 for the batch).
"""

from __future__ import annotations

from typing import Any

import torch

from ..context import Context
from ..labels import label_for
from .vision import VisionHandler

_KEYS = ("boxes", "labels", "scores")


def per_image_detections(output: Any) -> list[dict[str, torch.Tensor]]:
    """Normalise the accepted output layouts to one ``{boxes, labels, scores}`` per image."""
    if isinstance(output, list) and all(isinstance(d, dict) for d in output):
        return output
    if isinstance(output, dict) and all(k in output for k in _KEYS):
        batched = [output[k] for k in _KEYS]
    elif isinstance(output, (tuple, list)) and len(output) == 3:
        batched = list(output)
    else:
        raise RuntimeError(
            "expected detections as a list of {boxes, labels, scores} dicts or batched "
            f"tensors, got {type(output).__name__}"
        )
    boxes, labels, scores = batched
    return [
        {"boxes": boxes[i], "labels": labels[i], "scores": scores[i]} for i in range(boxes.shape[0])
    ]


class ObjectDetector(VisionHandler):
    """Thresholded, labelled bounding boxes per image."""

    resize_size = None
    crop_size = None
    normalize = False
    threshold = 0.5

    def initialize(self, context: Context) -> None:
        super().initialize(context)
        self.threshold = float(self.handler_config.get("threshold", self.threshold))

    def postprocess(self, data: Any) -> list[Any]:
        results = []
        for detection in per_image_detections(data):
            boxes = detection["boxes"].float().tolist()
            labels = detection["labels"].tolist()
            scores = detection["scores"].float().tolist()
            results.append(
                [
                    {label_for(int(label), self.mapping): box, "score": score}
                    for box, label, score in zip(boxes, labels, scores, strict=True)
                    if score >= self.threshold
                ]
            )
        return results
