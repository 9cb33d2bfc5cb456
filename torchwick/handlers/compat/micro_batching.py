"""``ts.handler_utils.micro_batching.MicroBatching``: a batch split into micro-batches whose
``preprocess``, ``inference`` and ``postprocess`` overlap.

Use as TorchServe documents it: ``self.handle = MicroBatching(self)`` in a handler's
``__init__``; set ``micro_batch_size`` and ``parallelism`` (``{"preprocess": n, "inference":
n, "postprocess": n}``, 1 thread each by default) after ``initialize``. Calling it with
``(data, context)`` splits ``data`` into micro-batches of ``micro_batch_size`` and runs each
stage on its own thread pool, so micro-batch *k+1* is preprocessed while *k* runs inference.
Results come back in request order. Describe and explanation requests run unsplit.
``get_micro_batch_idx()`` tells a stage which micro-batch it is working on.

Failure mode: an exception in any stage of any micro-batch propagates from the call (the
service answers it for the whole batch).
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

STAGES = ("preprocess", "inference", "postprocess")


class MicroBatching:
    """See the module docstring."""

    def __init__(
        self,
        parent_handler: Any,
        micro_batch_size: int = 1,
        parallelism: dict[str, int] | None = None,
    ) -> None:
        self.handler = parent_handler
        self.micro_batch_size = micro_batch_size
        self.thread_local_data = threading.local()
        self._pools: dict[str, ThreadPoolExecutor] = {}
        self._parallelism: dict[str, int] = {}
        self.parallelism = parallelism or {}

    @property
    def parallelism(self) -> dict[str, int]:
        return dict(self._parallelism)

    @parallelism.setter
    def parallelism(self, value: dict[str, int]) -> None:
        unknown = set(value) - set(STAGES)
        if unknown:
            raise ValueError(f"unknown micro-batching stages {sorted(unknown)}; use {STAGES}")
        self.shutdown()
        self._parallelism = {stage: max(1, int(value.get(stage, 1))) for stage in STAGES}
        self._pools = {
            stage: ThreadPoolExecutor(count, thread_name_prefix=f"microbatch-{stage}")
            for stage, count in self._parallelism.items()
        }

    def shutdown(self) -> None:
        """Stop the stage threads (a later call builds new ones)."""
        for pool in self._pools.values():
            pool.shutdown(wait=True)
        self._pools = {}

    def get_micro_batch_idx(self) -> int | None:
        return getattr(self.thread_local_data, "micro_batch_idx", None)

    def _stage(self, stage: str, idx: int, upstream: Future[Any] | None, value: Any) -> Any:
        self.thread_local_data.micro_batch_idx = idx
        data = upstream.result() if upstream is not None else value
        return getattr(self.handler, stage)(data)

    def handle(self, data: list[Any]) -> list[Any]:
        """Run the three stages over micro-batches of ``data``; results in request order."""
        if not self._pools:
            self.parallelism = self._parallelism
        size = max(1, int(self.micro_batch_size))
        futures: list[Future[Any]] = []
        for idx, start in enumerate(range(0, len(data), size)):
            chunk: Future[Any] | None = None
            for stage in STAGES:
                value = data[start : start + size] if chunk is None else None
                chunk = self._pools[stage].submit(self._stage, stage, idx, chunk, value)
            assert chunk is not None
            futures.append(chunk)
        return [item for future in futures for item in future.result()]

    def __call__(self, data: list[Any], context: Any) -> list[Any]:
        started = time.perf_counter()
        handler = self.handler
        handler.context = context
        if handler._is_describe():
            output = [handler.describe_handle()]
        elif handler._is_explain():
            output = handler.explain_handle(handler.preprocess(data), data)
        else:
            output = self.handle(data)
        context.metrics.add_time("HandlerTime", round((time.perf_counter() - started) * 1e3, 2))
        return output
