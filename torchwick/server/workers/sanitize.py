"""Worker-side checks on what a model service hands back, before it is framed.

Handler code is arbitrary: a header value may be an int, a body a ``str``, a metric value a
NumPy scalar. The frontend rejects a frame with wrong types as a broken worker, so the worker
repairs or replaces such values first; a problem then costs one request (or one metric), never
the worker. The common case, all well-typed and within the limit, allocates nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from torchwick.handlers.messages import MetricRecord, PredictResponse

logger = logging.getLogger("torchwick.server.workers.worker")


def error_response(request_id: str, status: int, message: str) -> PredictResponse:
    """A final error answer for one request (the message is also the reason phrase)."""
    return PredictResponse(request_id, status=status, reason=message)


def _well_typed(r: PredictResponse) -> bool:
    if type(r.status) is not int or type(r.reason) is not str or type(r.final) is not bool:
        return False
    if r.content_type is not None and type(r.content_type) is not str:
        return False
    for pair in r.headers:
        if type(pair) is not tuple or len(pair) != 2:
            return False
        if type(pair[0]) is not str or type(pair[1]) is not str:
            return False
    return True


def _repaired(r: PredictResponse, body: bytes) -> PredictResponse:
    headers = tuple((str(k), str(v)) for k, v in r.headers)
    content_type = None if r.content_type is None else str(r.content_type)
    status = r.status if type(r.status) is int else int(r.status)
    return PredictResponse(
        r.request_id, status, str(r.reason), content_type, headers, body, bool(r.final)
    )


def checked_responses(responses: list[PredictResponse], limit: int) -> list[PredictResponse]:
    """``responses`` with each oversize or unframeable answer replaced by a 500 of its own."""
    out = responses
    for i, r in enumerate(responses):
        body = r.body
        if type(body) is bytes and len(body) <= limit and _well_typed(r):
            continue
        if out is responses:
            out = list(responses)
        if isinstance(body, bytes | bytearray | memoryview):
            if len(body) > limit:
                message = f"Response of {len(body)} bytes exceeds max_response_size ({limit} bytes)"
                logger.error("request %s: %s", r.request_id, message)
                out[i] = error_response(r.request_id, 500, message)
                continue
            try:
                out[i] = _repaired(r, bytes(body))
                continue
            except (TypeError, ValueError, AttributeError) as exc:
                message = f"Response cannot be sent: {exc}"
        else:
            message = f"Response body is {type(body).__name__}, not bytes"
        logger.error("request %s: %s", r.request_id, message)
        out[i] = error_response(r.request_id, 500, message)
    return out


def checked_metrics(records: Sequence[MetricRecord]) -> list[MetricRecord]:
    """Records with plain field types; a record that cannot be converted is dropped."""
    out = []
    for m in records:
        try:
            dimensions = tuple((str(k), str(v)) for k, v in m.dimensions)
            request_id = None if m.request_id is None else str(m.request_id)
            out.append(
                MetricRecord(
                    str(m.name),
                    float(m.value),
                    str(m.unit),
                    str(m.metric_type),
                    dimensions,
                    request_id,
                )
            )
        except (TypeError, ValueError, AttributeError) as exc:
            logger.warning("dropping metric %r: %s", getattr(m, "name", m), exc)
    return out
