"""``handler: {cuda_graphs: true}``: replay a captured CUDA graph per input shape.

A graph is captured for each distinct ``(shape, dtype)`` of a single-tensor input (after
three warm-up runs on a side stream, as CUDA graph capture requires), up to ``max_graphs``
shapes; other shapes, and calls with more than one argument, run the model directly. A replay
copies the input into the graph's static input and returns a clone of its static output (the
next replay overwrites it). Only on CUDA: ``wrap_cuda_graphs`` returns the model unchanged
(with a warning) on any other device.

Failure mode: a capture that fails raises, and ``BaseHandler.inference`` then falls back to
the eager model for good (``LoadedModel.eager_model``), logging a warning.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import torch

#: torch.cuda's Stream and Event constructors are untyped; called through ``Any``.
_CUDA: Any = torch.cuda

logger = logging.getLogger("torchwick.model")

_WARMUP_RUNS = 3


def _clone(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.clone()
    if isinstance(value, (list, tuple)):
        return type(value)(_clone(v) for v in value)
    if isinstance(value, dict):
        return {k: _clone(v) for k, v in value.items()}
    return value


class GraphedModule:
    """Calls ``model``, through a captured CUDA graph for shapes seen before."""

    def __init__(self, model: Any, device: torch.device, max_graphs: int = 8) -> None:
        self.model = model
        self.device = device
        self.max_graphs = max_graphs
        self._graphs: dict[tuple[tuple[int, ...], torch.dtype], tuple[Any, Any, Any]] = {}
        self._lock = threading.Lock()

    @property
    def captured(self) -> int:
        """Shapes with a captured graph."""
        return len(self._graphs)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if kwargs or len(args) != 1 or not isinstance(args[0], torch.Tensor):
            return self.model(*args, **kwargs)
        x = args[0]
        if x.device.type != "cuda":
            return self.model(x)
        key = (tuple(x.shape), x.dtype)
        with self._lock:
            entry = self._graphs.get(key)
            if entry is None:
                if len(self._graphs) >= self.max_graphs:
                    return self.model(x)
                entry = self._capture(x)
                self._graphs[key] = entry
            static_in, static_out, graph = entry
            static_in.copy_(x)
            graph.replay()
            return _clone(static_out)

    def _capture(self, x: torch.Tensor) -> tuple[Any, Any, Any]:
        static_in = x.clone()
        side = _CUDA.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            for _ in range(_WARMUP_RUNS):
                self.model(static_in)
        torch.cuda.current_stream(self.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_out = self.model(static_in)
        logger.info("captured a CUDA graph for input shape %s", list(x.shape))
        return static_in, static_out, graph


def wrap_cuda_graphs(model: Any, device: torch.device) -> Any:
    """``GraphedModule(model)`` on CUDA; ``model`` itself elsewhere (with a warning)."""
    if device.type != "cuda":
        logger.warning("handler.cuda_graphs needs a CUDA device; running without graphs")
        return model
    if not isinstance(model, torch.nn.Module) and not callable(model):
        return model
    return GraphedModule(model, device)
