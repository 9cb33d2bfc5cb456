"""The frontend's end of one worker connection: an ``asyncio.BufferedProtocol``.

The channel tracks its pending operations (``LOAD``, ``PREDICT`` or ``DESCRIBE``) by id: one
at a time, or up to the model's ``pipeline_depth`` batches for a pipelined worker, which
answers them in the order they were sent. A result whose id matches no pending operation
belongs to one the caller gave up on (cancelled or timed out) and is dropped.
``outstanding`` counts operations sent and not yet answered, abandoned ones included, so that
the heartbeat can tell a busy worker from a hung idle one.

Failure mode: when the connection drops, or the worker sends bytes that are not a valid frame,
the channel is closed for good and every pending operation fails at once with ``WorkerDied``.
A frame above ``max_response_size`` fails the oldest pending operation (answers come in order)
with ``InternalError`` but keeps the connection.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections import deque
from collections.abc import Callable
from typing import Any, cast

from torchwick.handlers.messages import (
    BatchTimings,
    MetricRecord,
    PredictRequest,
    PredictResponse,
)
from torchwick.server.errors import InternalError, WorkerDied

from . import shm_frames
from .ipc import (
    RESULT_KINDS,
    Buffers,
    FrameTooLargeError,
    Kind,
    ProtocolError,
    decode_hello,
    decode_load_result,
    decode_metrics,
    decode_responses,
    encode_ping,
)
from .shm_lane import ShmLane, ShmSettings, send_with_fd
from .stream import FrameDecoder

logger = logging.getLogger(__name__)

MetricsHandler = Callable[[list[MetricRecord]], None]
IntermediateHandler = Callable[[PredictResponse], None]


class _Op:
    __slots__ = ("expect", "future", "on_intermediate", "op_id", "timings")

    def __init__(
        self,
        op_id: int,
        expect: Kind,
        future: asyncio.Future[Any],
        on_intermediate: IntermediateHandler | None,
    ) -> None:
        self.op_id = op_id
        self.expect = expect
        self.future = future
        self.on_intermediate = on_intermediate
        self.timings: BatchTimings | None = None


class WorkerChannel(asyncio.BufferedProtocol):
    """Frames in and out of one worker; see the module docstring for the failure rules."""

    def __init__(
        self,
        name: str,
        token: str,
        *,
        max_response_size: int,
        on_metrics: MetricsHandler,
        clock: Callable[[], float],
        shm: ShmSettings | None = None,
    ) -> None:
        self.name = name
        self._token = token
        self._on_metrics = on_metrics
        self._clock = clock
        self._decoder = FrameDecoder(
            self._on_frame, self._on_oversize, max_payload=max_response_size
        )
        self._transport: asyncio.Transport | None = None
        loop = asyncio.get_running_loop()
        #: Resolves to the worker's pid once its HELLO (with the right token) arrives.
        self.hello: asyncio.Future[int] = loop.create_future()
        #: Resolves when the connection is gone, for whatever reason.
        self.lost: asyncio.Future[None] = loop.create_future()
        self.closed_reason: str | None = None
        self.outstanding = 0
        self.last_seen = clock()
        self._ops: dict[int, _Op] = {}
        #: Ids of operations sent and not yet answered, oldest first, abandoned ones included
        #: (answers come in this order: an answer skipped unread belongs to the first).
        self._unanswered: deque[int] = deque()
        self._ping_seq = 0
        #: The worker's phase times from the last answer frame (None: it sent none).
        self.last_timings: BatchTimings | None = None
        #: The shared-memory lane to this worker (``shm_lane``); attached after a good LOAD.
        self.shm: ShmLane | None = ShmLane(shm) if shm is not None and shm.enabled else None

    # ---- asyncio.BufferedProtocol ----------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement the interface without subclassing asyncio.Transport.
        self._transport = cast(asyncio.Transport, transport)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._decoder.get_buffer(sizehint)

    def buffer_updated(self, nbytes: int) -> None:
        self.last_seen = self._clock()
        try:
            self._decoder.feed(nbytes)
        except ProtocolError as exc:
            self.abort(f"sent an invalid frame: {exc}")
        except Exception as exc:  # a bug in dispatch must not leave the channel half-alive
            logger.exception("worker %s: frame handling failed", self.name)
            self.abort(f"frame handling failed: {exc}")

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._close("closed its connection" if exc is None else f"connection failed: {exc}")

    # ---- operations ------------------------------------------------------------------------

    def start(
        self,
        buffers: Buffers,
        op_id: int,
        expect: Kind,
        on_intermediate: IntermediateHandler | None = None,
    ) -> asyncio.Future[Any]:
        """Send an operation's frame; the future resolves with its decoded result.

        Raises ``WorkerDied`` at once if the connection is already closed. The caller must
        call ``finish(future)`` when done with it (result, error or cancellation).
        """
        transport = self._transport
        if self.closed_reason is not None or transport is None:
            raise WorkerDied(f"Worker {self.name} died ({self.closed_reason or 'not connected'})")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._ops[op_id] = _Op(op_id, expect, future, on_intermediate)
        self._unanswered.append(op_id)
        self.outstanding += 1
        transport.writelines(buffers)
        return future

    def encode_requests(self, kind: Kind, batch_id: int, batch: list[PredictRequest]) -> Buffers:
        """The PREDICT/DESCRIBE frame for ``batch``: large values through shared memory when
        the lane is attached and has room, else all by socket."""
        return shm_frames.encode_requests(kind, batch_id, batch, self.shm)

    def finish(self, future: asyncio.Future[Any]) -> BatchTimings | None:
        """Forget the pending operation of ``future`` (a late result will be dropped); the
        worker's phase times of its answer, when it sent them."""
        for op_id, op in self._ops.items():
            if op.future is future:
                del self._ops[op_id]
                return op.timings
        return None

    def send(self, buffers: Buffers) -> bool:
        """Send a frame that expects no result; ``False`` when the connection is closed."""
        if self.closed_reason is not None or self._transport is None:
            return False
        self._transport.writelines(buffers)
        return True

    def rebind(
        self,
        name: str,
        *,
        max_response_size: int,
        on_metrics: MetricsHandler,
        shm: ShmSettings | None = None,
    ) -> None:
        """Give this connected channel to a new owner (a warm spare adopted by a model), with
        the owner's shared-memory settings (the lane attaches after its LOAD).

        Only between frames: the spare sends nothing after its HELLO until it is sent LOAD.
        """
        self.name = name
        self._on_metrics = on_metrics
        self.shm = ShmLane(shm) if shm is not None and shm.enabled else None
        self._decoder = FrameDecoder(
            self._on_frame, self._on_oversize, max_payload=max_response_size
        )

    def ping(self) -> bool:
        """Send a heartbeat probe; the PONG refreshes ``last_seen``."""
        self._ping_seq += 1
        return self.send(encode_ping(self._ping_seq))

    def abort(self, reason: str) -> None:
        """Drop the connection now and fail the pending operation with ``WorkerDied``."""
        self._close(reason)
        if self._transport is not None:
            self._transport.abort()

    # ---- frame dispatch --------------------------------------------------------------------

    def _on_frame(self, kind: int, header: memoryview, payload: memoryview) -> None:
        if not self.hello.done():
            if kind != Kind.HELLO:
                raise ProtocolError(f"frame kind {kind} before HELLO")
            token, pid = decode_hello(header)
            if not hmac.compare_digest(token.encode(), self._token.encode()):
                raise ProtocolError("HELLO with a wrong token")
            self.hello.set_result(pid)
            return
        if kind in (Kind.PREDICT_RESULT, Kind.DESCRIBE_RESULT):
            self._answered()
            lane = self.shm
            batch_id, responses, timings = shm_frames.decode_answer(header, payload, lane)
            if lane is not None:
                lane.settle(batch_id)  # bodies are copied out: the extent is free again
            self.last_timings = timings
            self._resolve(kind, batch_id, responses, timings)
        elif kind == Kind.INTERMEDIATE:
            batch_id, responses = decode_responses(header, payload)
            op = self._ops.get(batch_id)
            if op is not None and op.on_intermediate is not None:
                for response in responses:
                    try:
                        op.on_intermediate(response)
                    except Exception:
                        logger.exception("intermediate-response callback failed")
        elif kind == Kind.METRICS:
            records = decode_metrics(header)
            try:
                self._on_metrics(records)
            except Exception:
                logger.exception("metric sink failed")
        elif kind == Kind.PONG:
            pass  # buffer_updated already refreshed last_seen
        elif kind == Kind.LOAD_RESULT:
            self._answered()
            result = decode_load_result(header)
            if result[0] == 200 and self.shm is not None:
                self._attach_shm(self.shm)
            self._resolve(kind, 0, result)
        elif kind == Kind.SHM_ATTACH_RESULT:
            if self.shm is not None:
                self.shm.attached(*decode_load_result(header))
        else:
            raise ProtocolError(f"unexpected frame kind {kind} from a worker")

    def _resolve(
        self, kind: int, op_id: int, result: object, timings: BatchTimings | None = None
    ) -> None:
        op = self._ops.get(op_id)
        if op is not None and op.expect == kind and not op.future.done():
            op.timings = timings
            op.future.set_result(result)

    def _attach_shm(self, lane: ShmLane) -> None:
        # Right after LOAD_RESULT nothing else is queued to the worker (no batch is sent
        # before the load is done), so the descriptor-carrying frame cannot overtake one.
        try:
            lane.open()
            frame, fd = lane.attach_frame()
            send_with_fd(self._transport, frame, fd)
        except (OSError, ValueError) as exc:  # no memfd, or the socket was busy
            logger.warning("worker %s: shared memory not used: %s", self.name, exc)
            lane.close()
            if isinstance(exc, ConnectionError):
                self.abort(f"shared-memory attach failed: {exc}")
            return
        finally:
            if lane.arena is not None:
                lane.arena.close_fd()  # the worker has its copy (or none): the map suffices

    def _answered(self) -> int | None:
        """One answer arrived (or was skipped): the id of the operation it answers."""
        self.outstanding -= 1
        return self._unanswered.popleft() if self._unanswered else None

    def _on_oversize(self, error: FrameTooLargeError) -> None:
        op = None
        if error.kind in RESULT_KINDS:
            op_id = self._answered()
            if self.shm is not None and error.kind != Kind.LOAD_RESULT:
                self.shm.settle_oldest()
            # Answers come in the order operations were sent: the skipped one is the oldest
            # unanswered operation's (None when its caller already gave up on it).
            op = self._ops.get(op_id) if op_id is not None else None
        elif self._unanswered:  # an oversize chunk of the answer being streamed
            op = self._ops.get(self._unanswered[0])
        message = (
            f"Worker {self.name} sent a response of {error.size} bytes, more than "
            f"max_response_size ({error.limit} bytes)"
        )
        logger.warning("%s", message)
        if op is not None and not op.future.done():
            op.future.set_exception(InternalError(message))

    def _close(self, reason: str) -> None:
        if self.closed_reason is not None:
            return
        self.closed_reason = reason
        error = WorkerDied(f"Worker {self.name} died ({reason})")
        if not self.hello.done():
            self.hello.set_exception(error)
            self.hello.exception()  # retrieved here: nobody may be waiting on it any more
        for op in self._ops.values():
            if not op.future.done():
                op.future.set_exception(error)
        if self.shm is not None:
            self.shm.close()  # the worker is gone: nobody else maps the arena any more
        if not self.lost.done():
            self.lost.set_result(None)
