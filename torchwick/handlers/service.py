"""``ModelService``: one loaded handler, driven batch by batch by the worker process.

Contract (see ``docs/internal-contracts.md``, section *handlers*):

* ``ModelService.load(spec, emit_intermediate=..., emit_metric=...)`` puts ``model_dir`` on
  ``sys.path``, makes ``ts.*`` importable, resolves the handler and initialises it. It raises
  ``HandlerLoadError`` (507 for out-of-memory, else 500) with the cause's last traceback line.
* ``service.predict(batch)`` returns exactly one final ``PredictResponse`` per request, in
  order, and never raises for handler failures:

  - ``PredictionException`` raised by the handler -> its ``error_code`` for every request;
  - a ``PredictionException`` (e.g. ``InvalidInput``) *returned* in a request's slot -> that
    request only;
  - ``MemoryError`` / ``torch.cuda.OutOfMemoryError`` -> 507 "Out of resources";
  - any other exception -> 500 "Prediction failed" (traceback logged on ``torchwick.model``);
  - not a list, or the wrong number of items -> 500 for every request, naming the problem;
  - an item that cannot be serialised -> 500 for that request.

  Error responses carry ``content_type="application/json"`` and the body
  ``{"code", "type", "message"}``; ``reason`` holds the message.
* ``service.describe(request)`` runs the handler with header ``describe: True``.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .codec import UnsupportedOutputError, decode_request, encode_output, error_body
from .compat import install_ts_compat
from .context import Context
from .errors import (
    HandlerLoadError,
    PredictionException,
    is_out_of_memory,
    last_traceback_line,
)
from .loader import EntryPoint, resolve_entry_point
from .messages import LoadSpec, MetricRecord, PredictRequest, PredictResponse
from .streaming import STREAM_HEADER, build_response

__all__ = ["HandlerLoadError", "ModelService"]

logger = logging.getLogger("torchwick.model")


def error_response(request_id: str, code: int, message: str, type_name: str) -> PredictResponse:
    """A final JSON error answer for one request."""
    return PredictResponse(
        request_id=request_id,
        status=code,
        reason=message,
        content_type="application/json",
        body=error_body(code, type_name, message),
    )


class ModelService:
    """A handler bound to its ``Context``; build it with ``ModelService.load``."""

    def __init__(self, spec: LoadSpec, context: Context, entry: EntryPoint) -> None:
        self.spec = spec
        self.context = context
        self.entry = entry

    @classmethod
    def load(
        cls,
        spec: LoadSpec,
        *,
        emit_intermediate: Callable[[list[PredictResponse]], None],
        emit_metric: Callable[[MetricRecord], None],
    ) -> ModelService:
        """Load and initialise the handler described by ``spec``."""
        model_dir = Path(spec.model_dir)
        if not model_dir.is_dir():
            raise HandlerLoadError(f"model directory {spec.model_dir!r} does not exist")
        install_ts_compat()
        if spec.service_envelope:
            logger.warning(
                "service envelope %r is not supported; requests reach the handler unwrapped",
                spec.service_envelope,
            )
        # Appended, as TorchServe's PYTHONPATH does, so an archive's files cannot shadow the
        # standard library; the handler file itself is imported by path, not by this entry.
        if spec.model_dir not in sys.path:
            sys.path.append(spec.model_dir)
        context = Context(
            spec.model_name,
            spec.model_dir,
            spec.manifest,
            spec.batch_size,
            spec.gpu_id,
            limit_max_image_pixels=spec.limit_max_image_pixels,
            model_yaml_config=spec.model_yaml_config,
            emit_metric=emit_metric,
            emit_intermediate=emit_intermediate,
        )
        try:
            entry = resolve_entry_point(spec.handler, model_dir)
            entry.initialize(context)
        except HandlerLoadError:
            raise
        except Exception as exc:
            logger.exception("loading handler %r of model %s failed", spec.handler, spec.model_name)
            status = 507 if is_out_of_memory(exc) else 500
            raise HandlerLoadError(
                f"failed to load handler {spec.handler!r}: {last_traceback_line(exc)}", status
            ) from exc
        logger.info("model %s loaded with handler %s", spec.model_name, entry.description)
        return cls(spec, context, entry)

    def predict(self, batch: Sequence[PredictRequest]) -> list[PredictResponse]:
        """Run one batch; one final response per request, in order."""
        if not batch:
            return []
        ids = [r.request_id for r in batch]
        rows: list[dict[str, Any]] = []
        headers: list[dict[str, Any]] = []
        for request in batch:
            row, header = decode_request(request, self.spec.decode_input_request)
            rows.append(row)
            headers.append(header)
        self.context.begin_batch(ids, headers)
        started = time.perf_counter()
        try:
            output = self.entry.handle(rows, self.context)
        except PredictionException as exc:
            logger.warning("handler raised PredictionException: %s", exc)
            return [error_response(i, exc.error_code, exc.message, exc.type_name) for i in ids]
        except Exception as exc:
            if is_out_of_memory(exc):
                logger.exception("out of memory during inference")
                msg = f"Out of resources: {last_traceback_line(exc)}"
                return [error_response(i, 507, msg, "InternalServerException") for i in ids]
            logger.exception("handler failed on a batch of %d", len(ids))
            return [
                error_response(i, 500, "Prediction failed", "InternalServerException") for i in ids
            ]
        finally:
            self._emit_prediction_time(started)
        return self._responses(ids, output)

    def describe(self, request: PredictRequest) -> PredictResponse:
        """The handler's ``describe_handle`` answer (TorchServe's ``?customized=true``)."""
        headers = tuple(h for h in request.headers if h[0].lower() != "describe")
        marked = PredictRequest(
            request.request_id, (*headers, ("describe", "True")), request.parameters
        )
        return self.predict([marked])[0]

    def _emit_prediction_time(self, started: float) -> None:
        elapsed_ms = (time.perf_counter() - started) * 1000.0
        try:
            self.context.metrics.add_time("PredictionTime", round(elapsed_ms, 2))
        except Exception:  # a metrics sink failure must not fail the batch
            logger.exception("could not emit PredictionTime")

    def _responses(self, ids: list[str], output: Any) -> list[PredictResponse]:
        if not isinstance(output, list):
            msg = (
                f"Invalid model predict output: the handler returned "
                f"{type(output).__name__}, expected a list of {len(ids)}"
            )
            logger.error(msg)
            return [error_response(i, 500, msg, "InternalServerException") for i in ids]
        if len(output) != len(ids):
            msg = (
                f"number of batch response mismatched: the handler returned {len(output)} "
                f"item(s) for {len(ids)} request(s)"
            )
            logger.error(msg)
            return [error_response(i, 500, msg, "InternalServerException") for i in ids]
        return [
            self._one(idx, rid, item)
            for idx, (rid, item) in enumerate(zip(ids, output, strict=True))
        ]

    def _one(self, idx: int, request_id: str, item: Any) -> PredictResponse:
        if isinstance(item, PredictionException):
            return error_response(request_id, item.error_code, item.message, item.type_name)
        try:
            body = encode_output(item)
        except UnsupportedOutputError as exc:
            logger.error("request %s: %s", request_id, exc)
            return error_response(request_id, 500, str(exc), "InternalServerException")
        extra: dict[str, str] = {}
        if idx in self.context.streamed:
            extra[STREAM_HEADER] = "false"
        return build_response(self.context, idx, request_id, body, final=True, extra_headers=extra)
