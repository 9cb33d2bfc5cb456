"""OpenTelemetry spans per phase (optional: ``pip install torchwick[tracing]``).

Off unless ``enable_tracing=true``; then, when ``opentelemetry-sdk`` is installed, every
inference call on a known model gives one ``torchwick.inference`` span (attributes
``model_name``, ``model_version``, ``request_id``, ``http.status_code``) whose parent is the
caller's W3C ``traceparent`` (REST header or gRPC metadata; a malformed one starts a new
trace), with child spans ``torchwick.queue_wait`` (enqueue to batch formation) and
``torchwick.worker`` (the batch's round trip to the worker), and inside that the handler's
``torchwick.preprocess`` / ``torchwick.inference_step`` / ``torchwick.postprocess`` /
``torchwick.encode`` with the durations the worker measured, laid out one after the other
from the worker span's start plus half the transfer time (the worker's clock offsets are
not sent, only durations). Handler phases that were not measured have no span.

Export follows OpenTelemetry's standard environment: ``OTEL_TRACES_EXPORTER`` (``otlp`` by
default, needing ``opentelemetry-exporter-otlp``; ``console`` writes spans to stdout),
``OTEL_EXPORTER_OTLP_ENDPOINT`` and the other ``OTEL_*`` variables, ``OTEL_SERVICE_NAME``
(default ``torchwick``). Spans are exported in batches by the SDK's background thread.

With tracing off (the default) or the SDK absent, ``build_tracing`` returns None and nothing
on the request path changes; with it enabled but not installed, one warning says so.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from typing import Any

from torchwick.handlers.messages import BatchTimings

logger = logging.getLogger(__name__)

_PHASES = (
    ("preprocess", "torchwick.preprocess"),
    ("inference", "torchwick.inference_step"),
    ("postprocess", "torchwick.postprocess"),
    ("encode", "torchwick.encode"),
)


def _wall_ns(monotonic_s: float) -> int:
    """A ``time.monotonic()``/``perf_counter()`` reading (the same clock on Linux) as epoch ns."""
    return time.time_ns() - int((time.monotonic() - monotonic_s) * 1e9)


class RequestTrace:
    """The span of one inference call; the batcher adds its phases (``Tracing.batch``)."""

    __slots__ = ("span",)

    def __init__(self, span: Any) -> None:
        self.span = span


class Tracing:
    """Creates the spans; built by ``build_tracing`` around a ``TracerProvider``."""

    def __init__(self, provider: Any, propagator: Any, trace_api: Any) -> None:
        self.provider = provider
        self._tracer = provider.get_tracer("torchwick")
        self._propagator = propagator
        self._context = trace_api  # ``opentelemetry.trace``: set_span_in_context

    def start(
        self,
        model: str,
        request_id: str,
        metadata: Sequence[tuple[str, str]],
        received_at: float,
    ) -> RequestTrace:
        """Open the request's span, child of the caller's ``traceparent`` when valid."""
        carrier = {k: v for k, v in metadata if k in {"traceparent", "tracestate"}}
        parent = self._propagator.extract(carrier) if carrier else None
        start = _wall_ns(received_at) if received_at else time.time_ns()
        span = self._tracer.start_span(
            "torchwick.inference",
            context=parent,
            start_time=start,
            attributes={"model_name": model, "request_id": request_id},
        )
        return RequestTrace(span)

    def batch(
        self,
        traces: Sequence[tuple[RequestTrace, float, float]],
        sent_at: float,
        done_at: float,
        timings: BatchTimings | None,
    ) -> None:
        """Add the queue, worker and handler spans of one batch to each traced request
        (``(trace, enqueued_at, formed_at)`` each; times from ``time.monotonic()``)."""
        for trace, enqueued_at, formed_at in traces:
            parent = self._context.set_span_in_context(trace.span)
            self._child("torchwick.queue_wait", parent, enqueued_at, formed_at)
            worker = self._tracer.start_span(
                "torchwick.worker", context=parent, start_time=_wall_ns(sent_at)
            )
            if timings is not None and timings.worker >= 0:
                inner = self._context.set_span_in_context(worker)
                cursor = sent_at + max(0.0, (done_at - sent_at) - timings.worker) / 2
                for attr, name in _PHASES:
                    seconds = getattr(timings, attr)
                    if seconds >= 0:
                        self._child(name, inner, cursor, cursor + seconds)
                        cursor += seconds
            worker.end(end_time=_wall_ns(done_at))

    def _child(self, name: str, parent: Any, start: float, end: float) -> None:
        span = self._tracer.start_span(name, context=parent, start_time=_wall_ns(start))
        span.end(end_time=_wall_ns(end))

    @staticmethod
    def finish(trace: RequestTrace, version: str, status: int) -> None:
        """Close the request's span with the served version and the status."""
        trace.span.set_attribute("model_version", version)
        trace.span.set_attribute("http.status_code", status)
        trace.span.end()

    def shutdown(self) -> None:
        """Flush and stop the exporter."""
        self.provider.shutdown()


def build_tracing(enabled: bool) -> Tracing | None:
    """``Tracing`` when enabled and the SDK is importable, else None (see the module docs)."""
    if not enabled:
        return None
    try:
        from opentelemetry import trace
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
    except ImportError:
        logger.warning("enable_tracing is set but opentelemetry-sdk is not installed: no spans")
        return None
    service = os.environ.get("OTEL_SERVICE_NAME", "torchwick")
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    kind = os.environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower()
    exporter: Any
    if kind == "console":
        exporter = ConsoleSpanExporter()
    elif kind == "none":
        exporter = None
    else:
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # type: ignore[import-not-found,unused-ignore]
                OTLPSpanExporter,
            )
        except ImportError:
            logger.warning(
                "OTEL_TRACES_EXPORTER=%s needs opentelemetry-exporter-otlp: spans are not exported",
                kind,
            )
            exporter = None
        else:
            exporter = OTLPSpanExporter()
    if exporter is not None:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    return Tracing(provider, TraceContextTextMapPropagator(), trace)
