"""The frontend's end of one worker connection: an ``asyncio.BufferedProtocol``.

The worker serves one operation at a time, so the channel tracks one pending operation
(``LOAD``, ``PREDICT`` or ``DESCRIBE``) by id. A result whose id does not match the pending
operation belongs to one the caller gave up on (cancelled or timed out) and is dropped.
``outstanding`` counts operations sent and not yet answered, abandoned ones included, so that
the heartbeat can tell a busy worker from a hung idle one.

Failure mode: when the connection drops, or the worker sends bytes that are not a valid frame,
the channel is closed for good and the pending operation fails at once with ``WorkerDied``. A
frame above ``max_response_size`` fails the pending operation with ``InternalError`` but keeps
the connection.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import Callable
from typing import Any, cast

from torchwick.handlers.messages import BatchTimings, MetricRecord, PredictResponse
from torchwick.server.errors import InternalError, WorkerDied

from .ipc import (
    RESULT_KINDS,
    Buffers,
    FrameTooLargeError,
    Kind,
    ProtocolError,
    decode_answer,
    decode_hello,
    decode_load_result,
    decode_metrics,
    decode_responses,
    encode_ping,
)
from .stream import FrameDecoder

logger = logging.getLogger(__name__)

MetricsHandler = Callable[[list[MetricRecord]], None]
IntermediateHandler = Callable[[PredictResponse], None]


class _Op:
    __slots__ = ("expect", "future", "on_intermediate", "op_id")

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
        self._op: _Op | None = None
        self._ping_seq = 0
        #: The worker's phase times from the last answer frame (None: it sent none).
        self.last_timings: BatchTimings | None = None

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
        self._op = _Op(op_id, expect, future, on_intermediate)
        self.outstanding += 1
        transport.writelines(buffers)
        return future

    def finish(self, future: asyncio.Future[Any]) -> None:
        """Forget the pending operation of ``future``; a late result will be dropped."""
        op = self._op
        if op is not None and op.future is future:
            self._op = None

    def send(self, buffers: Buffers) -> bool:
        """Send a frame that expects no result; ``False`` when the connection is closed."""
        if self.closed_reason is not None or self._transport is None:
            return False
        self._transport.writelines(buffers)
        return True

    def rebind(self, name: str, *, max_response_size: int, on_metrics: MetricsHandler) -> None:
        """Give this connected channel to a new owner (a warm spare adopted by a model).

        Only between frames: the spare sends nothing after its HELLO until it is sent LOAD.
        """
        self.name = name
        self._on_metrics = on_metrics
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
            self.outstanding -= 1
            batch_id, responses, self.last_timings = decode_answer(header, payload)
            self._resolve(kind, batch_id, responses)
        elif kind == Kind.INTERMEDIATE:
            batch_id, responses = decode_responses(header, payload)
            op = self._op
            if op is not None and op.op_id == batch_id and op.on_intermediate is not None:
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
            self.outstanding -= 1
            self._resolve(kind, 0, decode_load_result(header))
        else:
            raise ProtocolError(f"unexpected frame kind {kind} from a worker")

    def _resolve(self, kind: int, op_id: int, result: object) -> None:
        op = self._op
        if op is not None and op.op_id == op_id and op.expect == kind and not op.future.done():
            op.future.set_result(result)

    def _on_oversize(self, error: FrameTooLargeError) -> None:
        if error.kind in RESULT_KINDS:
            self.outstanding -= 1
        op = self._op
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
        op = self._op
        if op is not None and not op.future.done():
            op.future.set_exception(error)
        if not self.lost.done():
            self.lost.set_result(None)
