"""The benchmark's model handler: one file, archived unchanged for TorchServe and for torchwick.

A TorchServe-style handler (a subclass of ``ts.torch_handler.base_handler.BaseHandler``), so it
runs on real TorchServe 0.12 and, through torchwick's ``ts.*`` compatibility aliases, inside
torchwick's workers. ``BaseHandler.initialize`` loads the TorchScript file; ``inference`` is
BaseHandler's. This handler adds only the tensor decoding and a small JSON answer:

- a request body is either a JSON list of numbers (sent as ``application/json``, which both
  servers decode before the handler sees it; JSON text as ``text/*`` is parsed here) or, as
  bytes, raw little-endian float32; it is reshaped to the model's input shape, read from
  ``input_shape.json`` in the archive;
- an Open Inference Protocol row (torchwick only: ``{input name: numpy array}``, no ``data`` or
  ``body``) gives its first array, reshaped the same way;
- the answer is the list of logits when there are at most 10, else the top-5 classes and scores;
  for an OIP row the same values as named tensors (``logits``, or ``classes`` and ``scores``).

It is not imported by the benchmark process itself (``ts`` need not be importable there).
"""

import json
import os

import torch
from ts.torch_handler.base_handler import BaseHandler  # type: ignore[import-not-found]

TOP_K = 5


class TensorHandler(BaseHandler):  # type: ignore[misc]
    """Raw float32 bytes or a JSON list in, logits (or top-5) out."""

    def initialize(self, context):  # type: ignore[no-untyped-def]
        super().initialize(context)
        model_dir = context.system_properties.get("model_dir")
        with open(os.path.join(model_dir, "input_shape.json"), encoding="utf-8") as file:
            self.input_shape = tuple(json.load(file)["shape"])

    def preprocess(self, data):  # type: ignore[no-untyped-def]
        rows = []
        self.tensor_rows = []
        for row in data:
            value = row.get("data") or row.get("body")
            self.tensor_rows.append(value is None)
            if value is None:
                # An OIP row: its first input's array (read-only: copied).
                rows.append(torch.tensor(next(iter(row.values()))).reshape(self.input_shape))
                continue
            if isinstance(value, str):
                value = json.loads(value)
            if isinstance(value, (bytes, bytearray)):
                # Not sent as JSON: raw float32. frombuffer wants a writable buffer.
                buffer = value if isinstance(value, bytearray) else bytearray(value)
                tensor = torch.frombuffer(buffer, dtype=torch.float32)
            else:
                tensor = torch.tensor(value, dtype=torch.float32)
            rows.append(tensor.reshape(self.input_shape))
        return torch.stack(rows)

    def postprocess(self, data):  # type: ignore[no-untyped-def]
        tensors = getattr(self, "tensor_rows", [False] * len(data))
        if data.shape[-1] <= 10 and not any(tensors):
            return data.tolist()
        if data.shape[-1] <= 10:
            return [
                {"logits": row} if tensor else row.tolist()
                for row, tensor in zip(data, tensors, strict=True)
            ]
        scores, classes = torch.topk(torch.softmax(data, dim=-1), TOP_K, dim=-1)
        return [
            {"classes": c, "scores": s} if tensor else {"classes": c.tolist(), "scores": s.tolist()}
            for c, s, tensor in zip(classes, scores, tensors, strict=True)
        ]
