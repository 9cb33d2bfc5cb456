"""A handler's batch split in two stages, so that a worker can overlap them across batches.

``BaseHandler.handle`` runs ``preprocess`` -> ``inference`` -> ``postprocess`` in one call. For
a pipelined worker (``handler: {pipeline_depth: 2}``) the same work is split:

* ``stage_preprocess(handler, rows)`` runs ``preprocess`` (image decode and resize) and, on
  CUDA, issues the batch's copy to the GPU on the copy stream (``DeviceFeeder.prefetch``). It
  runs on the worker's preprocessing thread, while an earlier batch is in the forward pass.
* ``stage_finish(handler, staged, context)`` runs ``inference`` and ``postprocess`` on the
  inference thread, and merges the requests ``preprocess`` rejected back in request order,
  exactly as ``handle`` would, from the staged batch's own record (never from the handler's
  attributes, which the next batch's preprocessing is already rewriting).

Only handlers whose steps are known to keep no other per-batch state may be split:
``stageable`` requires that the class defining each step (and ``handle``) declares
``pipeline_safe = True`` in its own body (the built-in ``BaseHandler``, ``VisionHandler`` and
``ImageClassifier`` do), and that no step is ``async``. Any other handler runs whole.

Failure mode: exceptions propagate from either stage unchanged; the service maps them to
statuses as for ``handle``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch

from .aio import is_async_callable, resolve
from .base_handler import BaseHandler
from .context import Context
from .errors import PredictionException
from .pipeline import per_group
from .request_tensors import phase_slots
from .runtimes import Prefetched

_STEPS = ("handle", "preprocess", "inference", "postprocess", "_model_input")


def _declares_safe(cls: type, name: str) -> bool:
    for klass in cls.__mro__:
        if name in vars(klass):
            return bool(vars(klass).get("pipeline_safe", False))
    return False


def stageable(handler: object) -> bool:
    """Whether ``handler``'s batches may be split into the two stages (module docstring)."""
    if not isinstance(handler, BaseHandler):
        return False
    cls = type(handler)
    if not all(_declares_safe(cls, name) for name in _STEPS):
        return False
    return not any(is_async_callable(getattr(handler, name, None)) for name in _STEPS)


@dataclass(frozen=True, slots=True)
class StagedBatch:
    """A preprocessed batch: its model input and which requests ``preprocess`` accepted."""

    pre: Any
    rejected: dict[int, PredictionException]
    accepted: list[int]
    count: int
    seconds: float


def stage_preprocess(handler: BaseHandler, rows: list[Any]) -> StagedBatch:
    """``preprocess`` of one batch, its tensor copy to the device issued (see above)."""
    started = time.perf_counter()
    handler._rejected = {}
    handler._accepted = list(range(len(rows)))
    pre = resolve(handler.preprocess(rows))
    rejected, accepted = dict(handler._rejected), list(handler._accepted)
    feeder = handler.feeder
    if feeder is not None and accepted and isinstance(pre, torch.Tensor):
        # One stacked batch (shape groups are copied group by group at inference).
        pre = feeder.prefetch(pre)
    return StagedBatch(pre, rejected, accepted, len(rows), time.perf_counter() - started)


def stage_finish(handler: BaseHandler, staged: StagedBatch, context: Context) -> list[Any]:
    """``inference`` and ``postprocess`` of a staged batch; one item per request."""
    started = time.perf_counter()
    handler.context = context
    phases = phase_slots(context)
    phases[0] = staged.seconds
    pre = staged.pre
    if isinstance(pre, Prefetched) and handler.feeder is not None:
        # On this (the inference) thread: the compute stream waits for the copy here.
        pre = handler.feeder.ready(pre)
    if not staged.accepted:
        output: list[Any] = []
    else:
        fitted = getattr(handler, "_fitted", None)  # absent if __init__ was not chained
        output = per_group(pre, len(staged.accepted), handler.forward_step(phases), fitted)
    merged = handler._merge(output, staged.count, staged.rejected, staged.accepted)
    elapsed = staged.seconds + time.perf_counter() - started
    context.metrics.add_time("HandlerTime", round(elapsed * 1e3, 2))
    result: list[Any] = merged
    return result
