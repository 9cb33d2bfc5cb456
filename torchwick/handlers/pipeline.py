"""Running a handler step once per shape group, synchronously or awaited.

``BaseHandler.preprocess`` returns either one stacked batch or ``ShapeGroups`` (requests whose
tensors differ in shape). ``per_group`` / ``per_group_async`` run a step (``inference`` then
``postprocess``, or ``get_insights``) per group and put the results back in request order.

Failure mode: when only some groups fail, their requests get ``InvalidInput`` naming their
shape. When every group fails (or the one batch does), the first exception propagates (the
service answers it 500) unless ``fitted``, the per-sample shapes this handler has already run
successfully, shows that the model works and none of the failing shapes is among them: then
the inputs are what is wrong, and they get ``InvalidInput`` (400) too.
``PredictionException`` and out-of-memory errors always propagate. A step returning the wrong
number of results for a group raises ``RuntimeError``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import torch

from .errors import InvalidInput, PredictionException, is_out_of_memory, last_traceback_line

logger = logging.getLogger("torchwick.model")

Step = Callable[[Any, list[int]], list[Any]]
AsyncStep = Callable[[Any, list[int]], Awaitable[list[Any]]]


@dataclass(frozen=True, slots=True)
class ShapeGroups:
    """Accepted requests split by tensor shape: ``(positions, stacked_tensor)`` per shape.

    ``positions`` index the accepted requests (in order); ``total`` is how many there are.
    """

    groups: list[tuple[list[int], torch.Tensor]]
    total: int


def _keep(exc: Exception) -> bool:
    """Whether a group's failure is recorded (True) or must propagate (False)."""
    return not isinstance(exc, PredictionException) and not is_out_of_memory(exc)


#: Shapes remembered per handler (a hostile client must not grow the set without bound).
_FITTED_MAX = 64

Fitted = set[tuple[int, ...]]


def _sample_shape(tensor: Any) -> tuple[int, ...] | None:
    return tuple(tensor.shape[1:]) if isinstance(tensor, torch.Tensor) else None


def _record(fitted: Fitted | None, tensor: Any) -> None:
    shape = _sample_shape(tensor)
    if fitted is not None and shape is not None and len(fitted) < _FITTED_MAX:
        fitted.add(shape)


def _misfit(fitted: Fitted | None, shape: tuple[int, ...] | None) -> bool:
    """The model ran before on other shapes, never on this one: the input is wrong."""
    return bool(fitted) and shape is not None and shape not in (fitted or ())


def _shape_error(shape: tuple[int, ...], failure: Exception) -> InvalidInput:
    return InvalidInput(
        f"input of shape {list(shape)} does not fit the model: {last_traceback_line(failure)}"
    )


class _Collector:
    def __init__(self, pre: ShapeGroups, fitted: Fitted | None) -> None:
        self.pre = pre
        self.fitted = fitted
        self.results: list[Any] = [None] * pre.total
        self.failures: list[tuple[list[int], tuple[int, ...], Exception]] = []

    def done(self, positions: list[int], tensor: torch.Tensor, out: list[Any]) -> None:
        if len(out) != len(positions):
            raise RuntimeError(f"{len(out)} results for a group of {len(positions)}")
        _record(self.fitted, tensor)
        for pos, item in zip(positions, out, strict=True):
            self.results[pos] = item

    def failed(self, positions: list[int], tensor: torch.Tensor, exc: Exception) -> None:
        self.failures.append((positions, tuple(tensor.shape[1:]), exc))

    def finish(self) -> list[Any]:
        every_group_failed = self.failures and len(self.failures) == len(self.pre.groups)
        if every_group_failed and not all(_misfit(self.fitted, s) for _, s, _ in self.failures):
            raise self.failures[0][2]
        for positions, shape, failure in self.failures:
            logger.info("inputs of shape %s failed: %s", list(shape), failure)
            error = _shape_error(shape, failure)
            for pos in positions:
                self.results[pos] = error
        return self.results


def _one_batch_failed(pre: Any, fitted: Fitted | None, exc: Exception) -> Exception:
    """What a failure of the whole (single-shape) batch becomes; see the module docs."""
    shape = _sample_shape(pre)
    if _keep(exc) and shape is not None and _misfit(fitted, shape):
        logger.info("inputs of shape %s failed: %s", list(shape), exc)
        return _shape_error(shape, exc)
    return exc


def per_group(pre: Any, accepted: int, run: Step, fitted: Fitted | None = None) -> list[Any]:
    """``run`` on the whole batch, or once per shape group (see the module docstring)."""
    if not isinstance(pre, ShapeGroups):
        try:
            out = run(pre, list(range(accepted)))
        except Exception as exc:
            error = _one_batch_failed(pre, fitted, exc)
            if error is exc:
                raise
            raise error from exc
        _record(fitted, pre)
        return out
    collector = _Collector(pre, fitted)
    for positions, tensor in pre.groups:
        try:
            out = run(tensor, positions)
        except Exception as exc:
            if not _keep(exc):
                raise
            collector.failed(positions, tensor, exc)
            continue
        collector.done(positions, tensor, out)
    return collector.finish()


async def per_group_async(
    pre: Any, accepted: int, run: AsyncStep, fitted: Fitted | None = None
) -> list[Any]:
    """``per_group`` for an awaited step; groups run one after another, in order."""
    if not isinstance(pre, ShapeGroups):
        try:
            out = await run(pre, list(range(accepted)))
        except Exception as exc:
            error = _one_batch_failed(pre, fitted, exc)
            if error is exc:
                raise
            raise error from exc
        _record(fitted, pre)
        return out
    collector = _Collector(pre, fitted)
    for positions, tensor in pre.groups:
        try:
            out = await run(tensor, positions)
        except Exception as exc:
            if not _keep(exc):
                raise
            collector.failed(positions, tensor, exc)
            continue
        collector.done(positions, tensor, out)
    return collector.finish()
