"""Running a handler step once per shape group, synchronously or awaited.

``BaseHandler.preprocess`` returns either one stacked batch or ``ShapeGroups`` (requests whose
tensors differ in shape). ``per_group`` / ``per_group_async`` run a step (``inference`` then
``postprocess``, or ``get_insights``) per group and put the results back in request order.

Failure mode: when only some groups fail, their requests get ``InvalidInput`` naming their
shape. When every group fails (or the one batch does), the first exception propagates (the
service answers it 500) unless ``ShapeEvidence`` blames the inputs: the per-sample shapes this
handler has already run successfully show that the model works and none of the failing shapes
is among them, or (before the model ever ran) its shape probe (``shape_probe``) fails on the
failing inputs' shapes alone. Then they get ``InvalidInput`` (400) too.
``PredictionException`` and out-of-memory errors always propagate. A step returning the wrong
number of results for a group raises ``RuntimeError``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass
from typing import Any

import torch

from .errors import InvalidInput, PredictionException, is_out_of_memory, last_traceback_line
from .shape_probe import ShapeProbe

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


def _sample_shape(tensor: Any) -> tuple[int, ...] | None:
    return tuple(tensor.shape[1:]) if isinstance(tensor, torch.Tensor) else None


class ShapeEvidence:
    """What a handler knows about the input shapes its model accepts.

    ``fitted`` holds the per-sample shapes the model has run on; ``probe`` (optional) says
    whether the model fails on an input's shape alone (used only while ``fitted`` is empty).
    """

    def __init__(self, probe: ShapeProbe | None = None) -> None:
        self.fitted: set[tuple[int, ...]] = set()
        self.probe = probe

    def record(self, tensor: Any) -> None:
        """The model ran on ``tensor``: remember its per-sample shape."""
        shape = _sample_shape(tensor)
        if shape is not None and len(self.fitted) < _FITTED_MAX:
            self.fitted.add(shape)

    def misfit(self, tensor: Any) -> bool:
        """Whether the model's failure on ``tensor`` is the input's fault."""
        shape = _sample_shape(tensor)
        if shape is None:
            return False
        if self.fitted:
            return shape not in self.fitted
        return self.probe is not None and self.probe(tensor)


def _misfit(evidence: ShapeEvidence | None, tensor: Any) -> bool:
    return evidence is not None and evidence.misfit(tensor)


def _shape_error(shape: tuple[int, ...], failure: Exception) -> InvalidInput:
    return InvalidInput(
        f"input of shape {list(shape)} does not fit the model: {last_traceback_line(failure)}"
    )


class _Collector:
    def __init__(self, pre: ShapeGroups, evidence: ShapeEvidence | None) -> None:
        self.pre = pre
        self.evidence = evidence
        self.results: list[Any] = [None] * pre.total
        self.failures: list[tuple[list[int], torch.Tensor, Exception]] = []

    def done(self, positions: list[int], tensor: torch.Tensor, out: list[Any]) -> None:
        if len(out) != len(positions):
            raise RuntimeError(f"{len(out)} results for a group of {len(positions)}")
        if self.evidence is not None:
            self.evidence.record(tensor)
        for pos, item in zip(positions, out, strict=True):
            self.results[pos] = item

    def failed(self, positions: list[int], tensor: torch.Tensor, exc: Exception) -> None:
        self.failures.append((positions, tensor, exc))

    def finish(self) -> list[Any]:
        every_group_failed = self.failures and len(self.failures) == len(self.pre.groups)
        if every_group_failed and not all(_misfit(self.evidence, t) for _, t, _ in self.failures):
            raise self.failures[0][2]
        for positions, tensor, failure in self.failures:
            shape = tuple(tensor.shape[1:])
            logger.info("inputs of shape %s failed: %s", list(shape), failure)
            error = _shape_error(shape, failure)
            for pos in positions:
                self.results[pos] = error
        return self.results


def _one_batch_failed(pre: Any, evidence: ShapeEvidence | None, exc: Exception) -> Exception:
    """What a failure of the whole (single-shape) batch becomes; see the module docs."""
    shape = _sample_shape(pre)
    if _keep(exc) and shape is not None and _misfit(evidence, pre):
        logger.info("inputs of shape %s failed: %s", list(shape), exc)
        return _shape_error(shape, exc)
    return exc


#: What a run of one step gave back to ``_plan``: its results, or the exception it raised.
_Reply = tuple[list[Any] | None, Exception | None]
#: ``_plan`` yields the ``(input, positions)`` to run next and returns the merged results.
_Plan = Generator[tuple[Any, list[int]], _Reply, list[Any]]


def _plan(pre: Any, accepted: int, evidence: ShapeEvidence | None) -> _Plan:
    """The per-group logic, free of how a step is called (the drivers below call it,
    synchronously or awaited, and send back what it gave)."""
    if not isinstance(pre, ShapeGroups):
        out, exc = yield pre, list(range(accepted))
        if exc is not None:
            error = _one_batch_failed(pre, evidence, exc)
            if error is exc:
                raise exc
            raise error from exc
        if evidence is not None:
            evidence.record(pre)
        assert out is not None
        return out
    collector = _Collector(pre, evidence)
    for positions, tensor in pre.groups:
        out, exc = yield tensor, positions
        if exc is not None:
            if not _keep(exc):
                raise exc
            collector.failed(positions, tensor, exc)
            continue
        assert out is not None
        collector.done(positions, tensor, out)
    return collector.finish()


def per_group(
    pre: Any, accepted: int, run: Step, evidence: ShapeEvidence | None = None
) -> list[Any]:
    """``run`` on the whole batch, or once per shape group (see the module docstring)."""
    plan = _plan(pre, accepted, evidence)
    try:
        step = next(plan)
        while True:
            try:
                reply: _Reply = (run(*step), None)
            except Exception as exc:
                reply = (None, exc)
            step = plan.send(reply)
    except StopIteration as finished:
        result: list[Any] = finished.value
        return result


async def per_group_async(
    pre: Any, accepted: int, run: AsyncStep, evidence: ShapeEvidence | None = None
) -> list[Any]:
    """``per_group`` for an awaited step; groups run one after another, in order."""
    plan = _plan(pre, accepted, evidence)
    try:
        step = next(plan)
        while True:
            try:
                reply: _Reply = (await run(*step), None)
            except Exception as exc:
                reply = (None, exc)
            step = plan.send(reply)
    except StopIteration as finished:
        result: list[Any] = finished.value
        return result
