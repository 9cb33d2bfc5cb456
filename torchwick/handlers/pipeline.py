"""Running a handler step once per shape group, synchronously or awaited.

``BaseHandler.preprocess`` returns either one stacked batch or ``ShapeGroups`` (requests whose
tensors differ in shape). ``per_group`` / ``per_group_async`` run a step (``inference`` then
``postprocess``, or ``get_insights``) per group and put the results back in request order.

Failure mode: when every group fails, the first group's exception propagates (the service
answers it); when only some fail, their requests get ``InvalidInput`` naming their shape.
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


class _Collector:
    def __init__(self, pre: ShapeGroups) -> None:
        self.pre = pre
        self.results: list[Any] = [None] * pre.total
        self.failures: list[tuple[list[int], torch.Size, Exception]] = []

    def done(self, positions: list[int], out: list[Any]) -> None:
        if len(out) != len(positions):
            raise RuntimeError(f"{len(out)} results for a group of {len(positions)}")
        for pos, item in zip(positions, out, strict=True):
            self.results[pos] = item

    def failed(self, positions: list[int], tensor: torch.Tensor, exc: Exception) -> None:
        self.failures.append((positions, tensor.shape, exc))

    def finish(self) -> list[Any]:
        if self.failures and len(self.failures) == len(self.pre.groups):
            raise self.failures[0][2]
        for positions, shape, failure in self.failures:
            logger.info("inputs of shape %s failed: %s", list(shape[1:]), failure)
            error = InvalidInput(
                f"input of shape {list(shape[1:])} does not fit the model: "
                f"{last_traceback_line(failure)}"
            )
            for pos in positions:
                self.results[pos] = error
        return self.results


def per_group(pre: Any, accepted: int, run: Step) -> list[Any]:
    """``run`` on the whole batch, or once per shape group (see the module docstring)."""
    if not isinstance(pre, ShapeGroups):
        return run(pre, list(range(accepted)))
    collector = _Collector(pre)
    for positions, tensor in pre.groups:
        try:
            out = run(tensor, positions)
        except Exception as exc:
            if not _keep(exc):
                raise
            collector.failed(positions, tensor, exc)
            continue
        collector.done(positions, out)
    return collector.finish()


async def per_group_async(pre: Any, accepted: int, run: AsyncStep) -> list[Any]:
    """``per_group`` for an awaited step; groups run one after another, in order."""
    if not isinstance(pre, ShapeGroups):
        return await run(pre, list(range(accepted)))
    collector = _Collector(pre)
    for positions, tensor in pre.groups:
        try:
            out = await run(tensor, positions)
        except Exception as exc:
            if not _keep(exc):
                raise
            collector.failed(positions, tensor, exc)
            continue
        collector.done(positions, out)
    return collector.finish()
