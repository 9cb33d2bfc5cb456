"""``ts.torch_handler.densenet_handler.DenseNetHandler``: tensors in, model output out.

Each request's ``data``/``body`` is a ``torch.save``d tensor; the tensors are stacked, run
through the model under ``torch.no_grad`` and the whole output tensor is returned as the one
result (``[output]``), as TorchServe's handler does (so it serves batches of one). The model is
loaded as ``BaseHandler`` loads models (eager with ``--model-file``, else TorchScript).

Unlike TorchServe, request tensors are read with ``torch.load(weights_only=True)``: a request
can carry tensors, never pickled code. Failure mode: a body that is not a saved tensor ->
``InvalidInput`` (400) for the batch; no serialized file -> ``RuntimeError`` at load.
"""

from __future__ import annotations

import io
import pickle
import time
from typing import Any

import torch

from ..base_handler import BaseHandler
from ..context import Context
from ..errors import InvalidInput
from .ts_util import list_classes_from_module

__all__ = ["DenseNetHandler", "list_classes_from_module"]


class DenseNetHandler(BaseHandler):
    """See the module docstring."""

    def initialize(self, context: Context) -> None:
        if not (context.manifest.get("model") or {}).get("serializedFile"):
            raise RuntimeError("Missing the model.pt file")
        super().initialize(context)

    def inference(self, data: Any, *args: Any, **kwargs: Any) -> Any:
        with torch.no_grad():
            return self.model(data.to(self.device), *args, **kwargs)

    def handle(self, data: Any, context: Context) -> Any:
        started = time.perf_counter()
        self.context = context
        if data is None:
            return None
        values = []
        for row in data:
            raw = (row.get("data") or row.get("body")) if isinstance(row, dict) else row
            if not isinstance(raw, (bytes, bytearray)):
                raise InvalidInput("the request is not a torch.save()d tensor")
            try:
                tensor = torch.load(io.BytesIO(bytes(raw)), weights_only=True)
            except (pickle.UnpicklingError, RuntimeError, EOFError, TypeError, ValueError):
                raise InvalidInput("the request is not a torch.save()d tensor") from None
            if not isinstance(tensor, torch.Tensor):
                raise InvalidInput("the request is not a torch.save()d tensor")
            values.append(tensor)
        output = self.inference(torch.stack(values))
        context.metrics.add_time("HandlerTime", round((time.perf_counter() - started) * 1e3, 2))
        return [output]
