"""The worker's batch pipeline (model-config ``handler.pipeline_depth`` of 2 or more).

With a pipeline the worker's main thread only reads frames: PREDICT and DESCRIBE batches go
to a two-thread pipeline, so that the next batch can arrive (the frontend sends up to
``pipeline_depth`` batches to a worker; see ``pool``) and be preprocessed while the current
one runs:

* the *preprocessing* thread takes batches in arrival order and runs the service's first
  stage (``ModelService.prepare_batch``: request decoding, image decode and resize, the
  copy to the GPU on its own stream);
* the *inference* thread takes prepared batches in the same order, runs the second stage
  (``complete_batch``: forward pass, postprocess, answers) and sends the answer frame.

So answers leave in the order batches arrived, each batch's errors stay its own (they are
mapped to statuses per request exactly as on the serial path, by the worker's ``answer``
callback), and at most one forward pass runs at a time. A batch whose prepared form is
``exclusive`` (a stageable handler run whole: describe, explain, an envelope) holds the
preprocessing thread until it is complete, so no first stage overlaps it. A service without
``prepare_batch``/``complete_batch`` runs every batch whole on the inference thread (the main
thread still reads ahead).

``close()`` lets every batch already received finish and be answered, then stops both threads
(SHUTDOWN and end of stream drain the pipeline before the worker exits).

Failure mode: an exception escaping a stage (outside the service's own error handling) is
handed to ``answer`` as that batch's failure: 500 (507 for ``MemoryError``) for each of its
requests; later batches run on. A failure to send (the frontend is gone) is logged; the main
thread then sees the end of stream and closes the pipeline.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from torchwick.handlers.messages import PredictRequest, PredictResponse

from .ipc import Kind
from .shm_frames import DecodedBatch

logger = logging.getLogger("torchwick.server.workers.worker")


@dataclass(frozen=True, slots=True)
class Job:
    """One PREDICT or DESCRIBE frame, decoded, with the time the worker received it.

    ``batch`` holds the requests the worker can run; ``decoded`` is the whole frame as
    ``shm_frames`` read it (requests refused for an unreadable shared-memory value, and the
    region its answers may use).
    """

    kind: int
    batch_id: int
    batch: Sequence[PredictRequest]
    received: float
    decoded: DecodedBatch | None = None


Run = Callable[[], list[PredictResponse]]
#: The worker's answer step: run ``run`` for ``job``, map its failures, send the frame.
Answer = Callable[[Job, Run], None]
#: The worker's serial path for one job (describe, or a service that cannot stage).
RunWhole = Callable[[Job], list[PredictResponse]]


@dataclass(slots=True)
class _Prepared:
    job: Job
    value: Any = None
    error: BaseException | None = None
    whole: bool = False
    exclusive: bool = False
    done: threading.Event = field(default_factory=threading.Event)


class BatchPipeline:
    """Two stages on two threads; see the module docstring."""

    def __init__(
        self,
        service: object,
        answer: Answer,
        run_whole: RunWhole,
        *,
        observe: Callable[[float], None] | None = None,
    ) -> None:
        prepare = getattr(service, "prepare_batch", None)
        complete = getattr(service, "complete_batch", None)
        staged = callable(prepare) and callable(complete)
        self._prepare: Callable[[Sequence[PredictRequest]], Any] | None = (
            prepare if staged else None
        )
        self._complete: Callable[[Any], list[PredictResponse]] | None = complete if staged else None
        self._answer = answer
        self._run_whole = run_whole
        self._observe = observe
        self._incoming: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._ready: queue.SimpleQueue[_Prepared | None] = queue.SimpleQueue()
        self._closed = False
        self._threads = [
            threading.Thread(target=self._preprocess_loop, name="pipeline-preprocess", daemon=True),
            threading.Thread(target=self._inference_loop, name="pipeline-inference", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    @property
    def staged(self) -> bool:
        """Whether batches are split in two stages (else each runs whole)."""
        return self._prepare is not None

    def submit(self, job: Job) -> None:
        """Queue a batch; its answer is sent after every earlier batch's."""
        if self._closed:
            raise RuntimeError("the batch pipeline is closed")
        self._incoming.put(job)

    def close(self) -> None:
        """Finish and answer every queued batch, then stop the threads."""
        if self._closed:
            return
        self._closed = True
        self._incoming.put(None)
        for thread in self._threads:
            thread.join()

    # ---- the preprocessing thread ------------------------------------------------------------

    def _preprocess_loop(self) -> None:
        while True:
            job = self._incoming.get()
            if job is None:
                self._ready.put(None)
                return
            prepared = self._prepared(job)
            self._ready.put(prepared)
            if prepared.exclusive:
                prepared.done.wait()

    def _prepared(self, job: Job) -> _Prepared:
        prepare = self._prepare
        if prepare is None or job.kind != Kind.PREDICT or not job.batch:
            # Describe (or no stages): the handler runs whole, alone.
            return _Prepared(job, whole=True, exclusive=job.kind != Kind.PREDICT)
        try:
            value = prepare(job.batch)
        except Exception as exc:
            return _Prepared(job, error=exc)
        return _Prepared(job, value, exclusive=bool(getattr(value, "exclusive", False)))

    # ---- the inference thread ----------------------------------------------------------------

    def _inference_loop(self) -> None:
        while True:
            prepared = self._ready.get()
            if prepared is None:
                return
            try:
                self._answer(prepared.job, lambda p=prepared: self._run(p))  # type: ignore[misc]
            except Exception:
                logger.exception("answering batch %d failed", prepared.job.batch_id)
            finally:
                prepared.done.set()

    def _run(self, prepared: _Prepared) -> list[PredictResponse]:
        if prepared.error is not None:
            raise prepared.error
        if prepared.whole or self._complete is None:
            return self._run_whole(prepared.job)
        started = time.perf_counter()
        responses = self._complete(prepared.value)
        if self._observe is not None:
            self._observe(time.perf_counter() - started)
        return responses
