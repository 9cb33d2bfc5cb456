"""Helpers for handler tests: load a ``ModelService`` from a model directory, build requests."""

from __future__ import annotations

import json
import textwrap
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torchwick.handlers.messages import (
    InputParameter,
    LoadSpec,
    MetricRecord,
    PredictRequest,
    PredictResponse,
)
from torchwick.handlers.service import ModelService


@dataclass
class Harness:
    """A loaded service plus everything it emitted."""

    service: ModelService
    metrics: list[MetricRecord] = field(default_factory=list)
    intermediates: list[PredictResponse] = field(default_factory=list)

    def predict(self, *requests: PredictRequest) -> list[PredictResponse]:
        return self.service.predict(list(requests))

    def metric(self, name: str) -> list[MetricRecord]:
        return [m for m in self.metrics if m.name == name]


def load_service(spec: LoadSpec) -> Harness:
    metrics: list[MetricRecord] = []
    intermediates: list[PredictResponse] = []
    service = ModelService.load(
        spec, emit_intermediate=intermediates.extend, emit_metric=metrics.append
    )
    return Harness(service, metrics, intermediates)


def make_request(
    body: Any = b"",
    content_type: str | None = None,
    *,
    name: str = "body",
    headers: Sequence[tuple[str, str]] = (),
    extra: Sequence[InputParameter] = (),
) -> PredictRequest:
    """One request; ``body`` may be bytes, str (utf-8) or a JSON-able value."""
    if isinstance(body, (bytes, bytearray)):
        raw = bytes(body)
    elif isinstance(body, str):
        raw = body.encode("utf-8")
        content_type = content_type or "text/plain"
    else:
        raw = json.dumps(body).encode("utf-8")
        content_type = content_type or "application/json"
    params = (InputParameter(name, raw, content_type), *extra)
    return PredictRequest(str(uuid.uuid4()), tuple(headers), params)


def body_json(response: PredictResponse) -> Any:
    return json.loads(response.body.decode("utf-8"))


def write_handler(model_dir: Path, source: str, name: str = "handler.py") -> None:
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / name).write_text(textwrap.dedent(source))
