"""The worker process: ``python -P -m torchwick.server.workers.worker_main --socket PATH``.

It connects back to the frontend's socket, proves itself with the spawn token (from the
environment, removed before any handler code runs; see ``process`` for why not argv), then
serves frames one at a time on its main thread: LOAD once, then PREDICT/DESCRIBE batches
serially, PING between them, SHUTDOWN to exit. With ``handler.pipeline_depth`` >= 2 in the
model-config, batches run on the two threads of a ``pipelined.BatchPipeline`` instead and the
main thread reads on (PINGs are answered at once); SHUTDOWN and end of stream then first let
every batch received be answered. The LOAD frame (``LoadSpec``) carries every
setting: the worker applies its thread budget (``OMP_NUM_THREADS``/``MKL_NUM_THREADS``, then
torch's intra/inter-op threads; torch is first imported here, so OpenMP and MKL size their
pools from it; the OpenMP spin count goes into the environment first), its adaptive-threads
flag and its response size limit, then loads the model.
Nothing but frames goes over the socket; stdout and stderr (where the ``torchwick.model``
logger writes) are captured by the frontend. With ``--warm-threads N`` it is a warm spare
(``warm.py``): it applies that budget and imports the handler runtime before it connects, and
moves into the model folder at LOAD.

Failure modes: a load failure is answered with the load error's status (507 for
out-of-memory, else 500) and message, then the process exits with code 1. A handler failure
inside a batch is the model service's to turn into per-request statuses; anything escaping it
becomes a 500 (507 for ``MemoryError``) for every request of that batch, and the worker lives
on. A response body above the LOAD frame's ``max_response_size`` is replaced by a 500 for that
request only. A shared-memory descriptor it cannot resolve (``shm_frames``: arena not mapped,
range too small, extent freed or reused) fails that request alone with a 500 naming why; its
batch-mates run. The worker exits when the frontend closes the connection, and (on Linux) when
the frontend process dies.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, MutableMapping, Sequence
from dataclasses import replace
from functools import partial
from typing import Protocol

from torchwick.handlers.messages import (
    DEFAULT_MAX_RESPONSE_SIZE,
    BatchTimings,
    LoadSpec,
    MetricRecord,
    PredictRequest,
    PredictResponse,
)
from torchwick.handlers.redact import redact_paths
from torchwick.handlers.serving_options import serving_options

from . import shm_frames
from .cpu_share import RunDelayMeter
from .ipc import (
    TOKEN_ENV,
    Buffers,
    Kind,
    ProtocolError,
    decode_load,
    decode_seq,
    encode_hello,
    encode_load_result,
    encode_metrics,
    encode_pong,
    encode_responses,
)
from .pipelined import BatchPipeline, Job
from .sanitize import checked_metrics, checked_responses
from .sanitize import error_response as _error
from .shm import ShmMapping
from .stream import BlockingFrameSocket
from .threads import (
    AdaptiveThreads,
    apply_thread_budget,
    omp_wait_environment,
    set_intra_op_threads,
)
from .warm import warm_up

logger = logging.getLogger("torchwick.server.workers.worker")

_UNMEASURED = BatchTimings()

EmitIntermediate = Callable[[list[PredictResponse]], None]
EmitMetric = Callable[[MetricRecord], None]


class Service(Protocol):
    """What the worker needs of a loaded model service (``torchwick.handlers.service``)."""

    def predict(self, batch: Sequence[PredictRequest]) -> list[PredictResponse]: ...

    def describe(self, request: PredictRequest) -> PredictResponse: ...


ServiceLoader = Callable[[LoadSpec, EmitIntermediate, EmitMetric], Service]


def load_model_service(
    spec: LoadSpec, emit_intermediate: EmitIntermediate, emit_metric: EmitMetric
) -> Service:
    """The production loader: ``ModelService.load`` (raises ``HandlerLoadError``)."""
    from torchwick.handlers.service import ModelService

    return ModelService.load(spec, emit_intermediate=emit_intermediate, emit_metric=emit_metric)


def load_error_status(exc: BaseException) -> tuple[int, str]:
    """Status and message to answer a failed load with.

    ``HandlerLoadError`` carries both (``status``/``message``); a bare ``MemoryError`` is 507;
    anything else is 500 with the exception's type and text.
    """
    status = getattr(exc, "status", None)
    message = getattr(exc, "message", None)
    if type(status) is int and isinstance(message, str):
        return status, message
    if isinstance(exc, MemoryError):
        return 507, "System out of memory"
    return 500, f"{type(exc).__name__}: {exc}"


class WorkerLoop:
    """Serves one connection until SHUTDOWN or end of stream; ``run()`` returns the exit code.

    On LOAD it calls ``apply_threads(spec.threads)`` before loading the model (a failure there
    is a failed load) and, when ``spec.adaptive_threads`` and the budget exceeds one, adapts
    the intra-op threads per batch through ``set_intra_op``. Both are injectable so that tests
    need not change the threads of their own process. The OpenMP wait variables of
    ``spec.omp_spin_count`` go into ``environ`` (``os.environ`` by default) before
    ``apply_threads`` imports torch.
    """

    def __init__(
        self,
        conn: BlockingFrameSocket,
        load_service: ServiceLoader,
        *,
        apply_threads: Callable[[int], None] | None = None,
        set_intra_op: Callable[[int], None] | None = None,
        environ: MutableMapping[str, str] | None = None,
        chdir: bool = False,
    ) -> None:
        self._conn = conn
        #: A warm spare was started outside any model folder: it moves into it at LOAD.
        self._chdir = chdir
        self._threads: AdaptiveThreads | None = None
        self._apply_threads = apply_threads or apply_thread_budget
        self._set_intra_op = set_intra_op or set_intra_op_threads
        self._environ = os.environ if environ is None else environ
        self._load_service = load_service
        # Until LOAD says otherwise (the frontend sends LOAD first; earlier batches get 503s).
        self._max_response_size = DEFAULT_MAX_RESPONSE_SIZE
        self._service: Service | None = None
        self._batch_id = 0
        self._metrics: list[MetricRecord] = []
        self._metrics_lock = threading.Lock()
        #: The frontend's shared-memory arena once SHM_ATTACH mapped it (see ``shm_frames``),
        #: and the LOAD frame's threshold for answers through it (0: by socket).
        self._shm: ShmMapping | None = None
        self._shm_threshold = 0
        #: With ``handler.pipeline_depth`` >= 2: batches run on the pipeline's threads.
        self._pipeline: BatchPipeline | None = None

    def run(self) -> int:
        """Serve frames; 0 after SHUTDOWN or a closed connection, 1 after a failed load."""
        try:
            return self._frames()
        finally:
            if self._pipeline is not None:  # answers every batch already received
                self._pipeline.close()

    def _frames(self) -> int:
        conn = self._conn
        while True:
            frame = conn.recv()
            if frame is None:
                return 0
            kind, header, payload = frame
            if kind in (Kind.PREDICT, Kind.DESCRIBE):
                self._serve(kind, header, payload)
            elif kind == Kind.PING:
                conn.send(encode_pong(decode_seq(header)))
            elif kind == Kind.LOAD:
                if not self._load(decode_load(header)):
                    return 1
            elif kind == Kind.SHUTDOWN:
                return 0
            elif kind == Kind.SHM_ATTACH:
                self._shm, answer = shm_frames.attach(header, conn.take_fds())
                conn.send(answer)
            else:
                raise ProtocolError(f"unexpected frame kind {kind} from the frontend")

    def _load(self, spec: LoadSpec) -> bool:
        self._max_response_size = spec.max_response_size
        self._shm_threshold = spec.shm_threshold
        budget = max(1, spec.threads)
        try:
            # Checked first: a bad value fails the load before any model is loaded.
            pipelined = serving_options(spec.model_yaml_config).pipeline_depth > 1
            if self._chdir:
                os.chdir(spec.model_dir)
            self._environ.update(omp_wait_environment(spec.omp_spin_count, self._environ))
            self._apply_threads(budget)
            if spec.adaptive_threads and budget > 1:
                meter = RunDelayMeter()
                waits = meter.read if meter.available else None
                self._threads = AdaptiveThreads(budget, self._set_intra_op, waits=waits)
            self._service = self._load_service(spec, self._emit_intermediate, self._emit_metric)
        except Exception as exc:
            status, message = load_error_status(exc)
            logger.error("loading %s failed: %s", spec.model_name, message, exc_info=exc)
            # The log keeps the paths; the frontend (and describe's lastError) does not.
            self._send_with_metrics(encode_load_result(status, redact_paths(message)))
            return False
        if pipelined:
            observe = self._threads.observe if self._threads is not None else None
            self._pipeline = BatchPipeline(
                self._service, self._answer, self._run_whole, observe=observe
            )
        self._send_with_metrics(encode_load_result(200, f"loaded {spec.model_name}"))
        return True

    def _serve(self, kind: int, header: bytes, payload: bytes) -> None:
        received = time.perf_counter()
        decoded = shm_frames.decode_requests(header, payload, self._shm)
        batch = decoded.requests
        if decoded.refused:  # shared-memory inputs it cannot read: answered on their own
            batch = [r for r in batch if r.request_id not in decoded.refused]
        job = Job(kind, decoded.batch_id, batch, received, decoded)
        if self._pipeline is not None:
            self._pipeline.submit(job)
        else:
            self._answer(job, lambda: self._run_whole(job))

    def _run_whole(self, job: Job) -> list[PredictResponse]:
        service = self._service
        batch = list(job.batch)
        if not batch:
            return []
        if service is None:
            return [_error(r.request_id, 503, "Model is not loaded") for r in batch]
        if job.kind == Kind.DESCRIBE:
            return [service.describe(batch[0])]
        if self._threads is None:
            return service.predict(batch)
        return self._threads.run(partial(service.predict, batch), len(batch))

    def _answer(self, job: Job, run: Callable[[], list[PredictResponse]]) -> None:
        """Run one batch (``run``), map what escapes it to statuses, send its answer frame."""
        kind, batch_id, batch = job.kind, job.batch_id, job.batch
        self._batch_id = batch_id
        try:
            responses = run()
        except MemoryError:
            logger.exception("batch %d ran out of memory", batch_id)
            responses = [_error(r.request_id, 507, "System out of memory") for r in batch]
        except Exception as exc:
            logger.exception("batch %d failed outside the handler's error handling", batch_id)
            message = redact_paths(f"{type(exc).__name__}: {exc}")
            responses = [_error(r.request_id, 500, message) for r in batch]
        if len(responses) != len(batch):
            message = f"Model service returned {len(responses)} responses for {len(batch)} requests"
            logger.error("%s", message)
            responses = [_error(r.request_id, 500, message) for r in batch]
        decoded = job.decoded
        if decoded is not None and decoded.refused:
            responses = shm_frames.with_refused(decoded, responses)
        result = Kind.DESCRIBE_RESULT if kind == Kind.DESCRIBE else Kind.PREDICT_RESULT
        checked = checked_responses(responses, self._max_response_size)
        timings = None
        if kind == Kind.PREDICT:
            # The handler's phase times (when the service measured them) and the whole time
            # this batch spent in the worker: the frontend derives the IPC transfer from it.
            phases = getattr(self._service, "last_timings", None)
            if not isinstance(phases, BatchTimings):
                phases = _UNMEASURED
            timings = replace(phases, worker=time.perf_counter() - job.received)
        self._send_with_metrics(
            shm_frames.encode_answer(
                result,
                batch_id,
                checked,
                timings,
                region=decoded.region if decoded is not None else None,
                mapping=self._shm,
                threshold=self._shm_threshold,
            )
        )

    def _emit_intermediate(self, responses: list[PredictResponse]) -> None:
        chunks = [
            r if r.final is False else _replace_final(r)
            for r in checked_responses(list(responses), self._max_response_size)
        ]
        self._conn.send(encode_responses(Kind.INTERMEDIATE, self._batch_id, chunks))

    def _emit_metric(self, record: MetricRecord) -> None:
        with self._metrics_lock:
            self._metrics.append(record)

    def _send_with_metrics(self, frame: Buffers) -> None:
        # Metrics gathered since the last answer precede it in the same write: one syscall.
        with self._metrics_lock:
            records, self._metrics = self._metrics, []
        if records:
            try:
                metrics = encode_metrics(records)
            except (TypeError, ValueError):  # e.g. a NumPy scalar as the value
                metrics = encode_metrics(checked_metrics(records))
            frame = [*metrics, *frame]
        self._conn.send(frame)


def _replace_final(r: PredictResponse) -> PredictResponse:
    # A chunk sent through emit_intermediate is never the request's last word: the batch's
    # PREDICT_RESULT is.
    return PredictResponse(
        r.request_id, r.status, r.reason, r.content_type, r.headers, r.body, False
    )


def _die_with_parent() -> None:
    # Linux: SIGKILL this worker when the frontend dies, even mid-batch (the socket's end of
    # stream is only noticed between batches).
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, int(signal.SIGKILL), 0, 0, 0)
    except (OSError, AttributeError):
        pass


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    # Only what is needed to connect: every other setting arrives in the LOAD frame.
    parser = argparse.ArgumentParser(prog="torchwick-worker")
    parser.add_argument("--socket", required=True, help="unix socket the frontend listens on")
    parser.add_argument(
        "--warm-threads",
        type=int,
        default=0,
        help="a warm spare: import torch with this thread budget before connecting",
    )
    return parser.parse_args(argv)


def main(
    argv: Sequence[str] | None = None, load_service: ServiceLoader = load_model_service
) -> int:
    """Run a worker; returns the process exit code."""
    args = _parse(argv)
    _die_with_parent()
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s - %(message)s"
    )
    token = os.environ.pop(TOKEN_ENV, "")
    warm = args.warm_threads > 0
    if warm:
        warm_up(args.warm_threads, apply_thread_budget)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(args.socket)
    conn = BlockingFrameSocket(sock)
    try:
        conn.send(encode_hello(token, os.getpid()))
        return WorkerLoop(conn, load_service, chdir=warm).run()
    except (ProtocolError, OSError) as exc:
        logger.error("worker connection failed: %s", exc)
        return 2
    finally:
        conn.close()


if __name__ == "__main__":
    sys.exit(main())
