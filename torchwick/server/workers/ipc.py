"""The framed protocol between the frontend and one worker process (no pickle).

A frame is a fixed 16-byte prefix, a msgpack header, then raw payload bytes::

    prefix  = magic b"TW" | version u8 | kind u8 | header_len u32 | payload_len u64  (little endian)
    header  = msgpack of a small tuple, layout fixed per kind (see the codecs below)
    payload = request or response bodies, concatenated; the header gives each length

Bodies are never re-encoded: the sender hands its ``bytes`` objects to the socket as separate
buffers, the receiver slices them out of one payload. Headers use positional tuples instead of
maps so that the hot path (``PREDICT``/``PREDICT_RESULT``) does no field-name work.

Failure modes: a malformed frame raises ``ProtocolError`` (the connection cannot be trusted any
more and is dropped); a frame whose payload exceeds the receiver's limit is skipped by the
decoder, which reports a ``FrameTooLargeError`` and keeps the stream in sync. Decoders copy what
they return, so the buffers they read may be reused afterwards.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from dataclasses import fields
from enum import IntEnum
from typing import Any, Final

import msgpack

from torchwick.handlers.messages import (
    BatchTimings,
    InputParameter,
    LoadSpec,
    MetricRecord,
    PredictRequest,
    PredictResponse,
)

MAGIC: Final = b"TW"
VERSION: Final = 1
PREFIX: Final = struct.Struct("<2sBBIQ")
PREFIX_SIZE: Final = PREFIX.size
#: Headers carry ids, header names and lengths only; anything bigger is a broken peer.
MAX_HEADER_SIZE: Final = 16 * 1024 * 1024
#: Environment variable carrying the spawn token to the worker (removed there on start). Not a
#: command-line argument: any user can read another's command line (``ps``), not its environment.
TOKEN_ENV: Final = "TORCHWICK_WORKER_TOKEN"
#: Frames below this size are joined before sending: one syscall beats a gather list there.
SMALL_FRAME: Final = 64 * 1024

Buffers = list[bytes | bytearray | memoryview]
Buffer = bytes | bytearray | memoryview


class Kind(IntEnum):
    """Frame kinds. ``F->W`` frames come from the frontend, ``W->F`` from the worker."""

    HELLO = 1  # W->F (token, pid): first frame, proves the peer is the spawned worker
    LOAD = 2  # F->W LoadSpec fields
    LOAD_RESULT = 3  # W->F (status, message)
    PREDICT = 4  # F->W (batch_id, requests) + parameter values
    PREDICT_RESULT = 5  # W->F (batch_id, responses[, timings]) + bodies
    INTERMEDIATE = 6  # W->F (batch_id, responses) + bodies: streamed chunks
    DESCRIBE = 7  # F->W like PREDICT with one request
    DESCRIBE_RESULT = 8  # W->F like PREDICT_RESULT with one response
    METRICS = 9  # W->F (records,)
    PING = 10  # F->W (seq,)
    PONG = 11  # W->F (seq,)
    SHUTDOWN = 12  # F->W ()
    SHM_ATTACH = 13  # F->W (arena_id, size) + the arena's memfd as SCM_RIGHTS (see shm_lane)
    SHM_ATTACH_RESULT = 14  # W->F (status, message)


#: Kinds that end an operation the frontend is waiting for.
RESULT_KINDS: Final = frozenset({Kind.LOAD_RESULT, Kind.PREDICT_RESULT, Kind.DESCRIBE_RESULT})


class ProtocolError(Exception):
    """The peer sent bytes that are not a valid frame; the connection must be dropped."""


class FrameTooLargeError(Exception):
    """A frame's payload exceeded the receiver's limit; the receiver skips that frame."""

    def __init__(self, kind: int, size: int, limit: int) -> None:
        super().__init__(f"frame of {size} bytes exceeds the limit of {limit} bytes")
        self.kind = kind
        self.size = size
        self.limit = limit


_packer = msgpack.Packer(use_bin_type=True)


def _frame(kind: Kind, header: object, payload: Sequence[Buffer] = (), size: int = 0) -> Buffers:
    head = _packer.pack(header)
    return [PREFIX.pack(MAGIC, VERSION, kind, len(head), size), head, *payload]


def parse_prefix(prefix: Buffer) -> tuple[int, int, int]:
    """``(kind, header_len, payload_len)`` of a frame prefix, or ``ProtocolError``."""
    magic, version, kind, header_len, payload_len = PREFIX.unpack(prefix)
    if magic != MAGIC or version != VERSION:
        raise ProtocolError(f"bad frame prefix (magic {magic!r}, version {version})")
    if header_len > MAX_HEADER_SIZE:
        raise ProtocolError(f"frame header of {header_len} bytes is too large")
    return kind, header_len, payload_len


def _unpack(header: Buffer, *, use_list: bool = False) -> Any:
    try:
        return msgpack.unpackb(header, use_list=use_list, strict_map_key=False)
    except Exception as exc:  # msgpack raises several unrelated types for bad input
        raise ProtocolError(f"undecodable frame header: {exc}") from exc


def _take(payload: Buffer, offset: int, size: int) -> bytes:
    # The common batch-of-one case: the payload is the only body, so no slice copy is needed.
    if offset == 0 and size == len(payload) and type(payload) is bytes:
        return payload
    return bytes(payload[offset : offset + size])


# ---- control frames ---------------------------------------------------------------------------


def encode_hello(token: str, pid: int) -> Buffers:
    """First frame a worker sends: the spawn token and its pid."""
    return _frame(Kind.HELLO, (token, pid))


def decode_hello(header: Buffer) -> tuple[str, int]:
    """``(token, pid)`` of a HELLO frame."""
    token, pid = _checked(header, 2)
    if type(token) is not str or type(pid) is not int:
        raise ProtocolError("malformed HELLO frame")
    return token, pid


def encode_ping(seq: int) -> Buffers:
    """A heartbeat probe; the worker answers with PONG carrying the same number."""
    return _frame(Kind.PING, (seq,))


def encode_pong(seq: int) -> Buffers:
    """The worker's answer to PING."""
    return _frame(Kind.PONG, (seq,))


def encode_shutdown() -> Buffers:
    """Asks the worker to exit once its current frame is handled."""
    return _frame(Kind.SHUTDOWN, ())


def decode_seq(header: Buffer) -> int:
    """The sequence number of a PING or PONG frame."""
    (seq,) = _checked(header, 1)
    if type(seq) is not int:
        raise ProtocolError("malformed PING/PONG frame")
    return seq


def encode_load_result(status: int, message: str) -> Buffers:
    """The worker's answer to LOAD: 200 on success, else the load error's status."""
    return _frame(Kind.LOAD_RESULT, (status, message))


def decode_load_result(header: Buffer) -> tuple[int, str]:
    """``(status, message)`` of a LOAD_RESULT frame."""
    status, message = _checked(header, 2)
    if type(status) is not int or type(message) is not str:
        raise ProtocolError("malformed LOAD_RESULT frame")
    return status, message


def _checked(header: Buffer, arity: int) -> tuple[Any, ...]:
    value = _unpack(header)
    if type(value) is not tuple or len(value) != arity:
        raise ProtocolError("frame header has the wrong shape")
    return value


# ---- load ---------------------------------------------------------------------------------------

#: The LOAD header is every ``LoadSpec`` field, in declaration order: a field added there is on
#: the wire without a second list to keep in step (both ends run the same code).
_LOAD_FIELDS: Final = tuple(f.name for f in fields(LoadSpec))


def _plain(value: object) -> object:
    # yaml configs may hold dates or other scalars msgpack has no type for; handlers get text.
    return str(value)


def encode_load(spec: LoadSpec) -> Buffers:
    """The LOAD frame; nested config values msgpack cannot carry are sent as strings."""
    header = msgpack.packb(
        tuple(getattr(spec, name) for name in _LOAD_FIELDS), default=_plain, use_bin_type=True
    )
    return [PREFIX.pack(MAGIC, VERSION, Kind.LOAD, len(header), 0), header]


def decode_load(header: Buffer) -> LoadSpec:
    """The LoadSpec of a LOAD frame (dict values keep msgpack's lists, not tuples)."""
    values = _unpack(header, use_list=True)
    if type(values) is not list or len(values) != len(_LOAD_FIELDS):
        raise ProtocolError("malformed LOAD frame")
    return LoadSpec(**dict(zip(_LOAD_FIELDS, values, strict=True)))


# ---- predict / describe: requests ---------------------------------------------------------------


def encode_requests(kind: Kind, batch_id: int, batch: Sequence[PredictRequest]) -> Buffers:
    """A PREDICT or DESCRIBE frame; parameter values travel as separate payload buffers."""
    items = []
    values: list[Buffer] = []
    size = 0
    for request in batch:
        params = []
        for param in request.parameters:
            value = param.value
            params.append((param.name, param.content_type, len(value)))
            values.append(value)
            size += len(value)
        items.append((request.request_id, request.headers, params))
    return _frame(kind, (batch_id, items), values, size)


def decode_requests(header: Buffer, payload: Buffer) -> tuple[int, list[PredictRequest]]:
    """``(batch_id, requests)`` of a PREDICT or DESCRIBE frame."""
    try:
        batch_id, items = _unpack(header)
        batch = []
        offset = 0
        for request_id, headers, params in items:
            parameters = []
            for name, content_type, size in params:
                parameters.append(InputParameter(name, _take(payload, offset, size), content_type))
                offset += size
            batch.append(PredictRequest(request_id, headers, tuple(parameters)))
    except (TypeError, ValueError) as exc:
        raise ProtocolError(f"malformed request frame: {exc}") from exc
    if offset != len(payload):
        raise ProtocolError("request frame lengths do not add up to its payload")
    return batch_id, batch


# ---- predict / describe / intermediate: responses -----------------------------------------------


def encode_responses(
    kind: Kind,
    batch_id: int,
    responses: Sequence[PredictResponse],
    timings: BatchTimings | None = None,
) -> Buffers:
    """A PREDICT_RESULT, DESCRIBE_RESULT or INTERMEDIATE frame; bodies are payload buffers.

    ``timings`` (answer frames only) become a third header element, the five phase seconds in
    ``BatchTimings`` field order; a header without it (an older worker) decodes the same way
    with no timings, so the field is compatible in both directions.
    """
    items = []
    bodies: list[Buffer] = []
    size = 0
    for r in responses:
        body = r.body
        items.append(
            (r.request_id, r.status, r.reason, r.content_type, r.headers, len(body), r.final)
        )
        bodies.append(body)
        size += len(body)
    if timings is None:
        return _frame(kind, (batch_id, items), bodies, size)
    t = timings
    phases = (t.preprocess, t.inference, t.postprocess, t.encode, t.worker)
    return _frame(kind, (batch_id, items, phases), bodies, size)


def _is_header_pairs(headers: object) -> bool:
    if type(headers) is not tuple:
        return False
    for pair in headers:
        if type(pair) is not tuple or len(pair) != 2:
            return False
        if type(pair[0]) is not str or type(pair[1]) is not str:
            return False
    return True


def decode_responses(header: Buffer, payload: Buffer) -> tuple[int, list[PredictResponse]]:
    """``(batch_id, responses)``; each field is type-checked because handler code is untrusted."""
    batch_id, responses, _ = decode_answer(header, payload)
    return batch_id, responses


def _timings(value: object) -> BatchTimings | None:
    # Advisory numbers: a malformed timings element is ignored, never a protocol error.
    if type(value) is not tuple or len(value) != len(_TIMING_FIELDS):
        return None
    if not all(type(v) in (int, float) for v in value):
        return None
    return BatchTimings(*(float(v) for v in value))


_TIMING_FIELDS: Final = tuple(f.name for f in fields(BatchTimings))


#: The reason of a response whose shared-memory body descriptor could not be honoured.
BAD_ANSWER: Final = "Worker answered with an invalid shared-memory descriptor"

#: ``(batch_id, at, size) -> body``, or ``None`` when the descriptor cannot be honoured.
SharedBodyReader = Callable[[int, Any, int], bytes | None]


def decode_answer(
    header: Buffer, payload: Buffer, read_shared: SharedBodyReader | None = None
) -> tuple[int, list[PredictResponse], BatchTimings | None]:
    """``(batch_id, responses, timings)``; ``timings`` is None when the frame has none.

    An entry with an eighth field has its body in shared memory at that place: it is read
    with ``read_shared`` (``shm_frames``); without a reader, or when the reader cannot
    honour it, that response alone becomes a 500 (``BAD_ANSWER``)."""
    timings = None
    try:
        head = _unpack(header)
        if type(head) is tuple and len(head) == 3:
            timings = _timings(head[2])
            head = head[:2]
        batch_id, items = head
        responses = []
        offset = 0
        for item in items:
            request_id, status, reason, content_type, headers, size, final = item[:7]
            if (
                type(request_id) is not str
                or type(status) is not int
                or type(reason) is not str
                or (content_type is not None and type(content_type) is not str)
                or (headers and not _is_header_pairs(headers))
                or type(size) is not int
                or size < 0
                or len(item) > 8
            ):
                raise ProtocolError("malformed response entry")
            if len(item) == 7:
                body = _take(payload, offset, size)
                offset += size
            else:
                shared = read_shared(batch_id, item[7], size) if read_shared else None
                if shared is None:
                    responses.append(PredictResponse(request_id, 500, BAD_ANSWER))
                    continue
                body = shared
            responses.append(
                PredictResponse(
                    request_id, status, reason, content_type, headers, body, final is True
                )
            )
    except (TypeError, ValueError) as exc:
        raise ProtocolError(f"malformed response frame: {exc}") from exc
    if type(batch_id) is not int or offset != len(payload):
        raise ProtocolError("response frame lengths do not add up to its payload")
    return batch_id, responses, timings


# ---- metrics ------------------------------------------------------------------------------------


def encode_metrics(records: Sequence[MetricRecord]) -> Buffers:
    """A METRICS frame carrying handler-emitted records."""
    items = [(m.name, m.value, m.unit, m.metric_type, m.dimensions, m.request_id) for m in records]
    return _frame(Kind.METRICS, (items,))


def decode_metrics(header: Buffer) -> list[MetricRecord]:
    """The records of a METRICS frame; entries of the wrong shape are dropped (metrics are
    advisory: a bad one must not cost the worker its connection)."""
    (items,) = _checked(header, 1)
    if type(items) is not tuple:
        raise ProtocolError("malformed METRICS frame")
    records = []
    for item in items:
        try:
            name, value, unit, metric_type, dimensions, request_id = item
        except (TypeError, ValueError):
            continue
        if (
            type(name) is str
            and type(value) in (int, float)
            and type(unit) is str
            and type(metric_type) is str
            and (not dimensions or _is_header_pairs(dimensions))
            and (request_id is None or type(request_id) is str)
        ):
            records.append(
                MetricRecord(name, float(value), unit, metric_type, dimensions, request_id)
            )
    return records
