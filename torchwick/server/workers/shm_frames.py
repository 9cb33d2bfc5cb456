"""PREDICT/DESCRIBE frames whose large values and answers travel through shared memory.

The layout extends ``ipc``'s (same prefix, same msgpack tuples) in a way the plain decoders
would reject rather than misread:

* request header ``(batch_id, items, lane)``; a parameter is ``(name, content_type, size)`` when
  its value is in the payload, or ``(name, content_type, size, (offset, generation, at))`` when
  its ``size`` bytes are at ``at`` inside the extent whose stamp is at ``offset``; ``lane`` is
  ``(arena_id, offset, generation, out_at, out_size)``: the arena, the batch's extent and its
  answer region (``out_size`` 0: none).
* answer items gain an eighth element ``at`` when the body's ``size`` bytes were written at
  ``at`` in the batch's answer region instead of the payload.

``encode_requests`` (frontend) copies each value of at least the lane's threshold into the
batch's extent; ``decode_requests`` (worker) turns descriptors into read-only views of the
mapped memory and reports, per request, those it could not resolve: the worker answers them
500 on their own and runs the rest. ``encode_answer`` (worker) places bodies of at least the
threshold into the answer region while they fit; ``decode_answer`` (frontend) copies them out,
so nothing it returns refers to shared memory.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field

from torchwick.handlers.messages import (
    BatchTimings,
    InputParameter,
    PredictRequest,
    PredictResponse,
)

from . import ipc
from .ipc import (
    Buffer,
    Buffers,
    Kind,
    ProtocolError,
    _frame,
    _take,
    _unpack,
    encode_responses,
)
from .ipc import (
    encode_requests as plain_requests,
)
from .sanitize import error_response
from .shm import SharedMemoryError, ShmMapping, missing
from .shm_lane import ShmLane

Value = bytes | memoryview


@dataclass(slots=True)
class AnswerRegion:
    """The worker's view of one batch's answer region: a bump cursor over ``[at, at+size)``."""

    at: int
    size: int
    used: int = 0
    placed: list[tuple[int, int]] = field(default_factory=list)

    def take(self, size: int) -> int | None:
        """Where a body of ``size`` bytes goes, or ``None`` when it does not fit any more."""
        if self.used + size > self.size:
            return None
        at = self.at + self.used
        # Keep every body 64-byte aligned: cheap, and the frontend may view it as an array.
        self.used += (size + 63) // 64 * 64
        return at


# ---- frontend: requests -----------------------------------------------------------------------


def encode_requests(
    kind: Kind, batch_id: int, batch: Sequence[PredictRequest], lane: ShmLane | None
) -> Buffers:
    """A PREDICT or DESCRIBE frame; through ``lane`` when it is active and has room."""
    if lane is None or not lane.active:
        return plain_requests(kind, batch_id, batch)
    threshold = lane.threshold
    inputs = 0
    for request in batch:
        for param in request.parameters:
            if len(param.value) >= threshold:
                inputs += (len(param.value) + 63) // 64 * 64
    reservation = lane.reserve(batch_id, len(batch), inputs)
    if reservation is None:
        return plain_requests(kind, batch_id, batch)
    extent = reservation.extent
    cursor = extent.data
    items = []
    values: list[Buffer] = []
    size = 0
    for request in batch:
        params: list[tuple[object, ...]] = []
        for param in request.parameters:
            value = param.value
            if len(value) >= threshold:
                lane.write(cursor, value)
                where = (extent.offset, extent.generation, cursor)
                params.append((param.name, param.content_type, len(value), where))
                cursor += (len(value) + 63) // 64 * 64
            else:
                params.append((param.name, param.content_type, len(value)))
                values.append(value)
                size += len(value)
        items.append((request.request_id, request.headers, params))
    assert lane.arena is not None
    head = (
        lane.arena.arena_id,
        extent.offset,
        extent.generation,
        reservation.out_at,
        reservation.out_size,
    )
    return _frame(kind, (batch_id, items, head), values, size)


# ---- worker: requests -------------------------------------------------------------------------


@dataclass(slots=True)
class DecodedBatch:
    """A decoded request frame: the requests the worker can run, those it cannot (request id
    -> why, in frame order), and the batch's answer region (``None``: answers by socket)."""

    batch_id: int
    requests: list[PredictRequest]
    refused: dict[str, str]
    region: AnswerRegion | None


def decode_requests(header: Buffer, payload: Buffer, mapping: ShmMapping | None) -> DecodedBatch:
    """Decode a PREDICT or DESCRIBE frame, with or without shared-memory descriptors.

    A descriptor that cannot be resolved (``SharedMemoryError``) refuses its request only; a
    frame whose shape is wrong raises ``ProtocolError`` as ``ipc.decode_requests`` does.
    """
    try:
        head = _unpack(header)
        lane = head[2] if len(head) == 3 else None
        batch_id, items = head[0], head[1]
        arena_id = lane[0] if lane is not None else None
        batch: list[PredictRequest] = []
        refused: dict[str, str] = {}
        offset = 0
        for request_id, headers, params in items:
            parameters = []
            problem: str | None = None
            for param in params:
                if len(param) not in (3, 4):
                    raise ProtocolError("malformed request parameter")
                name, content_type, size = param[0], param[1], param[2]
                if len(param) == 3:
                    value: Value = _take(payload, offset, size)
                    offset += size
                else:
                    extent, generation, at = param[3]
                    try:
                        if mapping is None or arena_id is None:
                            raise missing(arena_id or 0)
                        value = mapping.view(arena_id, extent, generation, at, size)
                    except SharedMemoryError as exc:
                        problem = problem or f"input {name!r}: {exc.message}"
                        continue
                parameters.append(InputParameter(name, value, content_type))
            if problem is not None:
                refused[request_id] = problem
            batch.append(PredictRequest(request_id, headers, tuple(parameters)))
        region = None
        if lane is not None and mapping is not None and lane[4] > 0:
            _, extent, generation, out_at, out_size = lane
            try:
                mapping.check(lane[0], extent, generation, out_at, out_size)
                region = AnswerRegion(out_at, out_size)
            except SharedMemoryError:
                region = None  # answers go by socket; the values were checked on their own
    except (TypeError, ValueError, IndexError) as exc:
        raise ProtocolError(f"malformed request frame: {exc}") from exc
    if type(batch_id) is not int or offset != len(payload):
        raise ProtocolError("request frame lengths do not add up to its payload")
    return DecodedBatch(batch_id, batch, refused, region)


def with_refused(
    decoded: DecodedBatch, answered: Sequence[PredictResponse]
) -> list[PredictResponse]:
    """The batch's answers in frame order: ``answered`` (one per request that ran) with a 500
    naming the shared-memory problem in the place of each refused request."""
    answers = iter(answered)
    out = []
    for request in decoded.requests:
        why = decoded.refused.get(request.request_id)
        if why is None:
            out.append(next(answers))
        else:
            out.append(error_response(request.request_id, 500, f"Shared memory: {why}"))
    return out


# ---- worker: answers --------------------------------------------------------------------------


def encode_answer(
    kind: Kind,
    batch_id: int,
    responses: Sequence[PredictResponse],
    timings: BatchTimings | None,
    *,
    region: AnswerRegion | None,
    mapping: ShmMapping | None,
    threshold: int,
) -> Buffers:
    """A PREDICT_RESULT/DESCRIBE_RESULT frame; bodies of at least ``threshold`` bytes go into
    ``region`` while they fit (the rest, and everything without a region, by socket)."""
    if region is None or mapping is None or threshold <= 0:
        return encode_responses(kind, batch_id, responses, timings)
    items: list[tuple[object, ...]] = []
    bodies: list[Buffer] = []
    size = 0
    for r in responses:
        body = r.body
        n = len(body)
        at = region.take(n) if n >= threshold else None
        entry = (r.request_id, r.status, r.reason, r.content_type, r.headers, n, r.final)
        if at is None:
            items.append(entry)
            bodies.append(body)
            size += n
        else:
            mapping.write(at, body)
            items.append((*entry, at))
    if timings is None:
        return _frame(kind, (batch_id, items), bodies, size)
    t = timings
    phases = (t.preprocess, t.inference, t.postprocess, t.encode, t.worker)
    return _frame(kind, (batch_id, items, phases), bodies, size)


# ---- frontend: answers ------------------------------------------------------------------------


def decode_answer(
    header: Buffer, payload: Buffer, lane: ShmLane | None
) -> tuple[int, list[PredictResponse], BatchTimings | None]:
    """``(batch_id, responses, timings)`` of an answer frame (``ipc.decode_answer``); bodies
    in shared memory are copied out of ``lane`` (a descriptor outside the batch's answer
    region turns that response into a 500: the worker is broken, the other answers stand)."""

    def read_shared(batch_id: int, at: object, size: int) -> bytes | None:
        if lane is None or type(at) is not int:
            return None
        return lane.read_body(batch_id, at, size)

    return ipc.decode_answer(header, payload, read_shared)


# ---- attach -----------------------------------------------------------------------------------


def attach(header: Buffer, fds: list[int]) -> tuple[ShmMapping | None, Buffers]:
    """Worker side of SHM_ATTACH: map the arena passed with the frame (``fds`` holds what
    arrived with it; all are consumed). Returns the mapping (``None`` on failure) and the
    SHM_ATTACH_RESULT frame to answer with: 200, or 500 naming why."""
    try:
        arena_id, size = _unpack(header)
        if type(arena_id) is not int or type(size) is not int or size <= 0:
            raise ProtocolError("malformed SHM_ATTACH frame")
    except (TypeError, ValueError, ProtocolError) as exc:
        for fd in fds:
            os.close(fd)
        return None, _frame(Kind.SHM_ATTACH_RESULT, (500, f"bad SHM_ATTACH frame: {exc}"))
    if not fds:
        message = "SHM_ATTACH arrived without a descriptor"
        return None, _frame(Kind.SHM_ATTACH_RESULT, (500, message))
    fd, extra = fds[0], fds[1:]
    for other in extra:
        os.close(other)
    try:
        mapping = ShmMapping(fd, size, arena_id)
    except (OSError, ValueError, SharedMemoryError) as exc:
        return None, _frame(Kind.SHM_ATTACH_RESULT, (500, f"cannot map the arena: {exc}"))
    return mapping, _frame(Kind.SHM_ATTACH_RESULT, (200, f"mapped {size} bytes"))
