"""``text_classifier``: ``{label: probability}`` over all classes for each text.

Input and tokenisation as ``TextHandler``. Model input convention (``handler: {text_input:
...}``):

* ``offsets`` (default for PyTorch models): ``model(ids, offsets)`` with ``ids`` the 1-D
  ``int64`` concatenation of every request's token ids and ``offsets`` the 1-D start index of
  each request in it, the ``nn.EmbeddingBag`` convention;
* ``padded`` (default for ONNX graphs with one input): ``model(ids)`` with an ``[N, L]``
  ``int64`` batch right-padded with the tokenizer's pad id (``L`` >= 1).

The model returns class scores ``[N, C]``; all classes are returned, softmaxed, labelled from
``index_to_name.json`` when present.

Failure mode: bad text -> 400 for that request; an unknown ``text_input`` -> ``RuntimeError``
at load; a model output that is not ``[N, C]`` -> ``RuntimeError`` (500 for the batch).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812 - the conventional alias

from ..context import Context
from ..labels import map_class_to_label
from ..runtimes import OnnxModel
from .image_classifier import class_scores
from .text import TextHandler

INPUT_CONVENTIONS = ("offsets", "padded")


class TextClassifier(TextHandler):
    """Softmax over all classes for each text."""

    def initialize(self, context: Context) -> None:
        super().initialize(context)
        single_input_onnx = isinstance(self.model, OnnxModel) and len(self.model.inputs) == 1
        default = "padded" if single_input_onnx else "offsets"
        self.text_input = str(self.handler_config.get("text_input", default))
        if self.text_input not in INPUT_CONVENTIONS:
            raise RuntimeError(
                f"handler.text_input must be one of {INPUT_CONVENTIONS}, got {self.text_input!r}"
            )

    def preprocess(self, data: list[dict[str, Any]]) -> Any:
        sequences = self.map_requests(data, self.ids_from_request)
        if not sequences:
            return None
        if self.text_input == "padded":
            width = max(1, *(len(s) for s in sequences))
            batch = torch.full((len(sequences), width), self.tokenizer.pad_id, dtype=torch.long)
            for row, ids in enumerate(sequences):
                batch[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            return batch
        lengths = torch.tensor([0] + [len(s) for s in sequences[:-1]], dtype=torch.long)
        flat = torch.tensor([i for s in sequences for i in s], dtype=torch.long)
        return flat, torch.cumsum(lengths, dim=0)

    def postprocess(self, data: Any) -> list[Any]:
        probabilities = F.softmax(class_scores(data).float(), dim=1)
        return map_class_to_label(probabilities.tolist(), self.mapping)
