"""``Context``: what a handler knows about its model and about the batch in flight.

The public members are TorchServe's (``ts.context.Context``), so handlers written for
TorchServe run unchanged: ``model_name``, ``manifest``, ``system_properties``,
``model_yaml_config``, ``metrics``, ``request_ids``, per-request request headers, and
per-request response status, headers and content type. The service calls ``begin_batch``
before each batch, which resets every per-request value.

Failure mode: asking for an index outside the current batch raises ``IndexError`` (a handler
bug, answered 500 by the service).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .messages import MetricRecord, PredictResponse
from .metrics import MetricsCache

#: The server name and version TorchServe reports in ``system_properties``.
SERVER_NAME = "MMS"
SERVER_VERSION = "0.12.0"
SEQUENCE_ID_HEADER = "ts_request_sequence_id"


class RequestProcessor:
    """The per-request state of one batch slot: request headers in, status and headers out."""

    def __init__(self, request_header: Mapping[str, Any]) -> None:
        self._request_header = dict(request_header)
        self._status_code = 200
        self._reason_phrase = ""
        self._response_header: dict[str, str] = {}

    def get_request_property(self, key: str) -> Any:
        """A request header (case-insensitive) or a parameter's ``{"content-type": ...}``."""
        if key in self._request_header:
            return self._request_header[key]
        return self._request_header.get(key.lower())

    def get_request_properties(self) -> dict[str, Any]:
        """Every request header and parameter entry."""
        return dict(self._request_header)

    def report_status(self, code: int, reason_phrase: str = "") -> None:
        """Set this request's response status and reason phrase."""
        self._status_code = int(code)
        self._reason_phrase = reason_phrase

    def get_response_status_code(self) -> int:
        return self._status_code

    def get_response_status_phrase(self) -> str:
        return self._reason_phrase

    def add_response_property(self, key: str, value: Any) -> None:
        """Set a response header (stored as text; a later value replaces an earlier one)."""
        self._response_header[str(key)] = str(value)

    def get_response_header(self, key: str) -> str | None:
        return self._response_header.get(key)

    def get_response_headers(self) -> dict[str, str]:
        return dict(self._response_header)


class Context:
    """Model-level facts plus the per-request state of the current batch.

    The positional constructor arguments follow TorchServe's ``Context`` so that handler unit
    tests that build one by hand keep working; ``emit_metric`` and ``emit_intermediate`` are
    torchwick's channels back to the worker.
    """

    def __init__(  # noqa: PLR0917 - TorchServe's positional signature
        self,
        model_name: str,
        model_dir: str,
        manifest: dict[str, Any] | None,
        batch_size: int,
        gpu: int | None,
        mms_version: str = SERVER_VERSION,
        limit_max_image_pixels: bool = True,
        metrics: MetricsCache | None = None,
        model_yaml_config: dict[str, Any] | None = None,
        *,
        emit_metric: Callable[[MetricRecord], None] | None = None,
        emit_intermediate: Callable[[list[PredictResponse]], None] | None = None,
    ) -> None:
        self.model_name = model_name
        self.manifest: dict[str, Any] = manifest or {}
        self._system_properties: dict[str, Any] = {
            "model_dir": model_dir,
            "gpu_id": gpu,
            "batch_size": batch_size,
            "server_name": SERVER_NAME,
            "server_version": mms_version,
            "limit_max_image_pixels": limit_max_image_pixels,
        }
        self.model_yaml_config: dict[str, Any] = model_yaml_config or {}
        self._request_ids: dict[int, str] = {}
        self.request_processor: list[RequestProcessor] = []
        self.stopping_criteria: list[Callable[[Any], bool]] | None = None
        self._emit_intermediate = emit_intermediate
        # Which batch slots have streamed at least one intermediate response.
        self.streamed: set[int] = set()
        #: Seconds of the current batch in preprocess, inference and postprocess, added up by
        #: ``BaseHandler.handle`` (negative: not measured, e.g. a module-function handler).
        self.phase_seconds: list[float] = [-1.0, -1.0, -1.0]
        # Read here, not at import time: TorchServe lets this variable rename the header.
        self._sequence_header = os.environ.get("TS_REQUEST_SEQUENCE_ID", SEQUENCE_ID_HEADER)
        self._metrics = metrics or MetricsCache(
            model_name, emit_metric or (lambda _record: None), self._request_id_or_none
        )

    # Model-level facts -------------------------------------------------------------------

    @property
    def system_properties(self) -> dict[str, Any]:
        """``model_dir``, ``gpu_id`` (None on CPU), ``batch_size``, ``server_name``,
        ``server_version`` and ``limit_max_image_pixels``."""
        return self._system_properties

    @property
    def metrics(self) -> MetricsCache:
        """The custom-metrics API."""
        return self._metrics

    @metrics.setter
    def metrics(self, value: MetricsCache) -> None:
        self._metrics = value

    @property
    def emit_intermediate(self) -> Callable[[list[PredictResponse]], None] | None:
        """The worker's channel for streamed (non-final) responses, if it gave one."""
        return self._emit_intermediate

    # Per-batch state ---------------------------------------------------------------------

    def begin_batch(
        self, request_ids: Sequence[str], request_headers: Sequence[Mapping[str, Any]]
    ) -> None:
        """Reset per-request state for a new batch (called by the service)."""
        self._request_ids = dict(enumerate(request_ids))
        self.request_processor = [RequestProcessor(h) for h in request_headers]
        self.stopping_criteria = None
        self.streamed = set()
        self.phase_seconds = [-1.0, -1.0, -1.0]

    @property
    def request_ids(self) -> dict[int, str]:
        """``{batch_index: request_id}`` for the current batch."""
        return self._request_ids

    @request_ids.setter
    def request_ids(self, value: dict[int, str]) -> None:
        self._request_ids = value

    def _request_id_or_none(self, idx: int) -> str | None:
        return self._request_ids.get(idx)

    def get_request_id(self, idx: int = 0) -> str | None:
        return self._request_ids.get(idx)

    def get_request_header(self, idx: int, key: str) -> Any:
        """A request header (names are lower-case), or ``None``."""
        return self.request_processor[idx].get_request_property(key)

    def get_all_request_header(self, idx: int) -> dict[str, Any]:
        return self.request_processor[idx].get_request_properties()

    def get_sequence_id(self, idx: int) -> str | None:
        """The sequence id of a stateful request (header ``ts_request_sequence_id``)."""
        value = self.get_request_header(idx, self._sequence_header)
        return None if value is None else str(value)

    def set_response_content_type(self, idx: int, value: str) -> None:
        self.set_response_header(idx, "content-type", value)

    def get_response_content_type(self, idx: int) -> str | None:
        return self.get_response_headers(idx).get("content-type")

    def set_response_status(self, code: int = 200, phrase: str = "", idx: int = 0) -> None:
        self.request_processor[idx].report_status(code, phrase)

    def set_all_response_status(self, code: int = 200, phrase: str = "") -> None:
        for processor in self.request_processor:
            processor.report_status(code, phrase)

    def get_response_status(self, idx: int) -> tuple[int, str]:
        """``(status_code, reason_phrase)`` of request ``idx``."""
        processor = self.request_processor[idx]
        return processor.get_response_status_code(), processor.get_response_status_phrase()

    def set_response_header(self, idx: int, key: str, value: Any) -> None:
        # Header names are case-insensitive; keeping them lower-case lets content-type be
        # found however the handler spelt it.
        self.request_processor[idx].add_response_property(str(key).lower(), value)

    def get_response_headers(self, idx: int) -> dict[str, str]:
        return self.request_processor[idx].get_response_headers()
