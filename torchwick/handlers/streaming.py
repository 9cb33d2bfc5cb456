"""Streamed (intermediate) responses: ``send_intermediate_predict_response``.

A handler may send any number of partial results per request before it returns its final
list. Each one becomes a non-final ``PredictResponse`` with header ``ts_stream_next: true``
and goes straight to the worker's ``emit_intermediate`` callback; the service later marks the
final response of a streamed request with ``ts_stream_next: false``.

Failure mode: a context without an ``emit_intermediate`` channel, or a request id that is not
in the batch, raises ``RuntimeError``/``KeyError`` in the handler (answered 500).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .codec import encode_output
from .context import Context
from .messages import PredictResponse

STREAM_HEADER = "ts_stream_next"


def build_response(
    context: Context,
    idx: int,
    request_id: str,
    body: bytes,
    *,
    status: int | None = None,
    reason: str | None = None,
    final: bool,
    extra_headers: Mapping[str, str] | None = None,
) -> PredictResponse:
    """A response for batch slot ``idx`` carrying the status/headers the handler set."""
    code, phrase = context.get_response_status(idx)
    headers = dict(context.get_response_headers(idx))
    if extra_headers:
        headers.update(extra_headers)
    content_type = headers.pop("content-type", None)
    return PredictResponse(
        request_id=request_id,
        status=code if status is None else status,
        reason=phrase if reason is None else reason,
        content_type=content_type,
        headers=tuple(headers.items()),
        body=body,
        final=final,
    )


def send_intermediate_predict_response(
    ret: Sequence[Any],
    req_id_map: Mapping[int, str],
    message: str,
    code: int,
    context: Context,
) -> bool:
    """Send ``ret[idx]`` as a partial response for every ``idx`` in ``req_id_map``.

    ``code``/``message`` apply when ``code`` is not 200 (TorchServe fails the whole message
    with them); otherwise each request keeps the status the handler set on the context.
    Returns ``True`` once the responses were handed to the worker.
    """
    emit = context.emit_intermediate
    if emit is None:
        raise RuntimeError("this context has no channel for intermediate responses")
    responses = []
    for idx, request_id in req_id_map.items():
        if context.get_request_id(idx) != request_id:
            raise KeyError(f"request id {request_id!r} is not slot {idx} of this batch")
        override = code != 200
        responses.append(
            build_response(
                context,
                idx,
                request_id,
                encode_output(ret[idx]),
                status=code if override else None,
                reason=message if override else None,
                final=False,
                extra_headers={STREAM_HEADER: "true"},
            )
        )
        context.streamed.add(idx)
    emit(responses)
    return True
