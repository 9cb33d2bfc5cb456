"""How a request row becomes one sample tensor in ``BaseHandler`` (its default preprocessing).

Split out of ``base_handler.py`` as a mixin so that ``BaseHandler`` keeps every method name
TorchServe handlers call or override (``request_payload``, ``tensor_from_request``,
``check_sample_shape``, ``batch_tensors``). The handler sets ``sample_shape`` (``None``: any)
and ``input_dtype`` (``None``: float32) in ``initialize``.

``map_requests`` applies a per-request step; with ``handler: {preprocess_threads: N}`` (see
``serving_options``) it runs the step on a pool of N threads, in request order: image decoding
and resizing release the GIL, so the requests of a batch decode in parallel.

Failure mode: an input that cannot be a sample raises ``InvalidInput`` naming what was wrong
(that request answers 400; the rest of its batch runs). Any other exception of the step
propagates (the first one in request order), as it would without the pool.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import numpy as np
import torch

from .context import Context
from .errors import InvalidInput, PredictionException
from .pipeline import ShapeGroups

logger = logging.getLogger("torchwick.model")
T = TypeVar("T")


def _attempt(fn: Callable[[Any], T]) -> Callable[[Any], T | PredictionException]:
    def attempt(row: Any) -> T | PredictionException:
        try:
            return fn(row)
        except PredictionException as exc:
            return exc

    return attempt


class RequestTensors:
    """Row -> sample tensor; mixed into ``BaseHandler``."""

    sample_shape: tuple[int | None, ...] | None = None
    input_dtype: torch.dtype | None = None
    _rejected: dict[int, PredictionException]
    _accepted: list[int]
    #: Threads for ``map_requests`` (``None``: run the step inline).
    _preprocess_pool: ThreadPoolExecutor | None = None

    def start_preprocess_pool(self, threads: int) -> None:
        """Run ``map_requests`` steps on ``threads`` threads (0: inline, the default)."""
        if threads > 0 and self._preprocess_pool is None:
            self._preprocess_pool = ThreadPoolExecutor(threads, thread_name_prefix="preprocess")

    def map_requests(self, data: Sequence[Any], fn: Callable[[Any], T]) -> list[T]:
        """``fn`` per request; requests it rejects (``PredictionException``) are left out."""
        pool = self._preprocess_pool
        step = _attempt(fn)
        if pool is not None and len(data) > 1:
            outcomes = list(pool.map(step, data))
        else:
            outcomes = [step(row) for row in data]
        self._rejected = {}
        self._accepted = []
        results: list[T] = []
        for idx, value in enumerate(outcomes):
            if isinstance(value, PredictionException):
                logger.info("request %d rejected: %s", idx, value.message)
                self._rejected[idx] = value
                continue
            results.append(value)
            self._accepted.append(idx)
        return results

    @staticmethod
    def request_payload(row: Any) -> Any:
        """A request's input: its ``data`` parameter, else ``body`` (``InvalidInput`` if none)."""
        if not isinstance(row, dict):
            return row
        value = row.get("data")
        if value is None:
            value = row.get("body")
        if value is None:
            # An Open Inference Protocol request: its (first) input tensor.
            value = next((v for v in row.values() if isinstance(v, np.ndarray)), None)
        if value is None:
            raise InvalidInput("the request has no input: send a body or a 'data' field")
        if isinstance(value, (bytes, bytearray, str)) and len(value) == 0:
            raise InvalidInput("the request body is empty")
        return value

    def check_sample_shape(self, tensor: torch.Tensor) -> torch.Tensor:
        """``InvalidInput`` unless ``tensor`` matches ``sample_shape`` (when known)."""
        expected = self.sample_shape
        if expected is None:
            return tensor
        shape = tuple(tensor.shape)
        fits = len(shape) == len(expected) and all(
            e is None or e == s for e, s in zip(expected, shape, strict=True)
        )
        if not fits:
            wanted = ["any" if e is None else e for e in expected]
            raise InvalidInput(f"input has shape {list(shape)}, the model expects {wanted}")
        return tensor

    @staticmethod
    def batch_tensors(tensors: Sequence[torch.Tensor]) -> torch.Tensor | ShapeGroups:
        """One stacked batch, or ``ShapeGroups`` when the samples differ in shape."""
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for pos, tensor in enumerate(tensors):
            by_shape.setdefault(tuple(tensor.shape), []).append(pos)
        if len(by_shape) <= 1:
            return torch.stack(list(tensors)) if tensors else torch.empty(0)
        groups = [(pos, torch.stack([tensors[p] for p in pos])) for pos in by_shape.values()]
        return ShapeGroups(groups, len(tensors))

    def tensor_from_request(self, row: Any) -> torch.Tensor:
        """One sample from a JSON (nested) list of numbers."""
        value = self.request_payload(row)
        if isinstance(value, np.ndarray):
            return self._tensor_from_array(value)
        if isinstance(value, (bytes, bytearray)):
            try:
                value = json.loads(bytes(value).decode("utf-8"))
            except RecursionError:
                raise InvalidInput("the JSON body nests too deeply") from None
            except (UnicodeDecodeError, ValueError):
                raise InvalidInput(
                    "the body is not JSON: expected a (nested) list of numbers"
                ) from None
        if isinstance(value, str):
            raise InvalidInput("expected a (nested) list of numbers, got text")
        dtype = self.input_dtype or torch.float32
        try:
            tensor = _float32_tensor(value) if dtype is torch.float32 else None
            if tensor is None:
                tensor = torch.tensor(value, dtype=dtype)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise InvalidInput(
                f"expected a (nested) list of numbers with a regular shape: {exc}"
            ) from None
        return self.check_sample_shape(tensor)

    def _tensor_from_array(self, array: np.ndarray[Any, Any]) -> torch.Tensor:
        """One sample from an OIP input tensor: its array (copied: the frame is read-only),
        cast to ``input_dtype`` (float32 for floating inputs when none is set). A leading
        dimension of 1 that the model's known sample shape lacks is a batch of one, dropped."""
        if array.dtype.kind not in "biuf":
            raise InvalidInput(f"expected a numeric tensor, got {array.dtype} data")
        dtype = self.input_dtype or (torch.float32 if array.dtype.kind == "f" else None)
        tensor = torch.from_numpy(np.array(array))
        if dtype is not None:
            tensor = tensor.to(dtype)
        expected = self.sample_shape
        if expected is not None and tensor.dim() == len(expected) + 1 and tensor.shape[0] == 1:
            tensor = tensor[0]
        return self.check_sample_shape(tensor)


def _float32_tensor(value: Any) -> torch.Tensor | None:
    """A float32 tensor from a (nested) list of numbers through numpy, which converts about
    3x faster than ``torch.tensor``; ``None`` when the list holds anything but numbers
    (``null``, strings, objects), so that ``torch.tensor`` rejects it with its own error
    instead of numpy turning ``null`` into NaN or ``"1"`` into 1.0."""
    array = np.asarray(value)
    if array.dtype.kind not in "fiub":
        return None
    return torch.from_numpy(array.astype(np.float32, copy=False))


def dtype_named(name: Any) -> torch.dtype | None:
    """The torch dtype called ``name`` (``handler.input_dtype``); ``None`` for none."""
    if name is None:
        return None
    found = getattr(torch, str(name), None)
    if not isinstance(found, torch.dtype):
        raise RuntimeError(f"handler.input_dtype {name!r} is not a torch dtype name")
    return found


def phase_slots(context: Any) -> list[float]:
    """The context's ``phase_seconds`` reset for this batch; a throwaway list for a context
    built by hand without it (TorchServe-style unit tests)."""
    slots = [-1.0, -1.0, -1.0]
    if isinstance(context, Context):
        context.phase_seconds = slots
    return slots
