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
* ``service.describe(request)`` runs the handler with header ``describe: True`` (never
  through the envelope).
* ``async def`` handlers: when the entry point (or ``initialize``) returns an awaitable it is
  run to completion on the worker's handler event loop (``torchwick.handlers.aio``) before
  ``load``/``predict`` return; ``predict`` stays synchronous and batches still run one at a
  time.
* ``spec.service_envelope`` (``body``/``json``/``kserve``/``kservev2``) unwraps each request
  before the handler and wraps its answer after (``torchwick.handlers.envelopes``); a request
  whose body does not fit the envelope is answered 400 on its own, the others run.
* ``spec.metrics_config``: the ``model_metrics`` of that metrics.yaml (TorchServe's default
  ``HandlerTime``/``PredictionTime`` without one) are pre-registered in ``context.metrics``;
  a file that cannot be used fails the load (500) naming the file.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .aio import resolve
from .batch_pipeline import Decoded, PreparedBatch, complete, merge_answers, prepare
from .codec import UnsupportedOutputError, decode_request, encode_output, error_body
from .compat import install_ts_compat
from .context import Context
from .envelopes import BaseEnvelope, Parsed, envelope_class
from .envelopes.formatter import EnvelopeFormatter
from .errors import (
    HandlerLoadError,
    PredictionException,
    is_out_of_memory,
    last_traceback_line,
)
from .loader import EntryPoint, resolve_entry_point
from .messages import BatchTimings, LoadSpec, MetricRecord, PredictRequest, PredictResponse
from .metrics_config import MetricsConfigError, load_metrics_config, preregister
from .oip_answers import OIP_MARKER, DecodeError, declared_outputs, kservev2_document, tensor_answer
from .redact import redact_paths
from .serving_options import memory_fraction, serving_options
from .streaming import STREAM_HEADER, build_response

__all__ = ["HandlerLoadError", "ModelService"]

logger = logging.getLogger("torchwick.model")


def error_response(request_id: str, code: int, message: str, type_name: str) -> PredictResponse:
    """A final JSON error answer for one request (absolute paths in ``message`` redacted)."""
    message = redact_paths(message)
    return PredictResponse(
        request_id=request_id,
        status=code,
        reason=message,
        content_type="application/json",
        body=error_body(code, type_name, message),
    )


class ModelService:
    """A handler bound to its ``Context``; build it with ``ModelService.load``."""

    def __init__(
        self,
        spec: LoadSpec,
        context: Context,
        entry: EntryPoint,
        envelope: BaseEnvelope | None = None,
    ) -> None:
        self.spec = spec
        self.context = context
        self.entry = entry
        self.envelope = envelope
        self._declared = declared_outputs(spec.model_yaml_config)
        #: The handler takes raw values as buffers (``zero_copy_inputs = True`` on its class or
        #: entry function): no ``bytearray`` copy; see ``codec.decode_value``.
        self._buffers = getattr(entry.instance or entry.handle, "zero_copy_inputs", False) is True
        #: The phase times of the last batch ``predict`` ran (``worker`` is the worker's to
        #: fill in); reset to unmeasured at the start of every batch.
        self.last_timings = BatchTimings()

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
        envelope: BaseEnvelope | None = None
        if spec.service_envelope:
            try:
                envelope = envelope_class(spec.service_envelope)()
            except ValueError as exc:
                raise HandlerLoadError(str(exc)) from exc
        try:
            metrics_config = load_metrics_config(spec.metrics_config)
        except MetricsConfigError as exc:
            raise HandlerLoadError(f"metrics_config: {exc}") from exc
        # Appended, as TorchServe's PYTHONPATH does, so an archive's files cannot shadow the
        # standard library; the handler file itself is imported by path, not by this entry.
        for path in (spec.model_dir, *spec.extra_paths):
            if path not in sys.path:
                sys.path.append(path)
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
        # torchwick's input limits, next to TorchServe's ``limit_max_image_pixels``.
        context.system_properties["max_image_pixels"] = spec.max_image_pixels
        preregister(context.metrics, metrics_config)
        _cap_gpu_memory(spec)
        try:
            entry = resolve_entry_point(spec.handler, model_dir)
            resolve(entry.initialize(context))
        except HandlerLoadError:
            raise
        except Exception as exc:
            logger.exception("loading handler %r of model %s failed", spec.handler, spec.model_name)
            status = 507 if is_out_of_memory(exc) else 500
            raise HandlerLoadError(
                f"failed to load handler {spec.handler!r}: {last_traceback_line(exc)}", status
            ) from exc
        logger.info("model %s loaded with handler %s", spec.model_name, entry.description)
        return cls(spec, context, entry, envelope)

    def predict(self, batch: Sequence[PredictRequest]) -> list[PredictResponse]:
        """Run one batch; one final response per request, in order.

        A request whose input cannot be decoded (an OIP tensor whose bytes do not fit its
        shape, JSON nested deeper than ``max_json_depth``) is answered 400 on its own; the
        rest of the batch runs."""
        self.last_timings = BatchTimings()
        if not batch:
            return []
        failed, kept, decoded = self.decode_batch(batch)
        if failed:
            answered = self.predict_decoded(kept, decoded) if kept else []
            return merge_answers(batch, failed, answered)
        return self.predict_decoded(kept, decoded)

    def decode_batch(self, batch: Sequence[PredictRequest]) -> Decoded:
        """``(failed, kept, decoded)``: 400 answers by request id for inputs that cannot be
        decoded, and the other requests with their ``(row, headers)``."""
        failed: dict[str, PredictResponse] = {}
        kept: list[PredictRequest] = []
        decoded = []
        for request in batch:
            try:
                decoded.append(
                    decode_request(
                        request,
                        self.spec.decode_input_request,
                        self.spec.max_json_depth,
                        buffers=self._buffers,
                    )
                )
            except DecodeError as exc:
                failed[request.request_id] = error_response(
                    request.request_id, 400, exc.message, "BadRequestException"
                )
                continue
            kept.append(request)
        return failed, kept, decoded

    def prepare_batch(self, batch: Sequence[PredictRequest]) -> PreparedBatch:
        """The first stage of a pipelined batch (``handlers.batch_pipeline``)."""
        return prepare(self, batch)

    def complete_batch(self, prepared: PreparedBatch) -> list[PredictResponse]:
        """The second stage: the same answers ``predict`` gives for that batch."""
        return complete(self, prepared)

    def predict_decoded(
        self, batch: Sequence[PredictRequest], decoded: list[tuple[dict[str, Any], dict[str, Any]]]
    ) -> list[PredictResponse]:
        """``predict`` for requests already decoded into handler rows."""
        describe = any(str(h.get("describe")).lower() == "true" for _, h in decoded)
        if self.envelope is None or describe:
            ids = [r.request_id for r in batch]
            return self._run(ids, [row for row, _ in decoded], [h for _, h in decoded])
        return self._predict_enveloped(self.envelope, batch, decoded)

    def _predict_enveloped(
        self,
        envelope: BaseEnvelope,
        batch: Sequence[PredictRequest],
        decoded: list[tuple[dict[str, Any], dict[str, Any]]],
    ) -> list[PredictResponse]:
        answers: dict[str, PredictResponse] = {}
        accepted: list[tuple[str, Parsed, dict[str, Any]]] = []
        for request, (row, header) in zip(batch, decoded, strict=True):
            explain = str(header.get("explain")).lower() == "true"
            given = row
            if envelope.name == "kservev2" and OIP_MARKER in header:
                given = kservev2_document(row, request.request_id)
            try:
                parsed = envelope.parse_request(given, explain)
            except PredictionException as exc:
                logger.info("request %s rejected by the envelope: %s", request.request_id, exc)
                answers[request.request_id] = error_response(
                    request.request_id, exc.error_code, exc.message, exc.type_name
                )
                continue
            parsed.meta["request_id"] = request.request_id
            accepted.append((request.request_id, parsed, header))
        if accepted:
            items = [item for _, parsed, _ in accepted for item in parsed.items]
            ids = [rid for rid, _, _ in accepted]
            formatter = EnvelopeFormatter(envelope, [p for _, p, _ in accepted], self.context)
            responses = self._run(ids, items, [h for _, _, h in accepted], formatter)
            answers.update((r.request_id, r) for r in responses)
        return [answers[r.request_id] for r in batch]

    def _run(
        self,
        ids: list[str],
        rows: list[Any],
        headers: list[dict[str, Any]],
        formatter: EnvelopeFormatter | None = None,
        call: Callable[[], Any] | None = None,
    ) -> list[PredictResponse]:
        # ``call`` (a staged batch's second stage) replaces the handler's ``handle``.
        self.context.begin_batch(ids, headers)
        started = time.perf_counter()
        try:
            output = call() if call is not None else resolve(self.entry.handle(rows, self.context))
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
        encoding = time.perf_counter()
        if formatter is None:
            responses = self._responses(ids, output)
        else:
            responses = self._enveloped_responses(ids, len(rows), output, formatter)
        pre, inf, post = self.context.phase_seconds
        self.last_timings = BatchTimings(pre, inf, post, time.perf_counter() - encoding)
        return responses

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

    @staticmethod
    def _shape_error(ids: list[str], output: Any, expected: int) -> list[PredictResponse] | None:
        if not isinstance(output, list):
            msg = (
                f"Invalid model predict output: the handler returned "
                f"{type(output).__name__}, expected a list of {expected}"
            )
        elif len(output) != expected:
            msg = (
                f"number of batch response mismatched: the handler returned {len(output)} "
                f"item(s) for {expected} input(s)"
            )
        else:
            return None
        logger.error(msg)
        return [error_response(i, 500, msg, "InternalServerException") for i in ids]

    def _enveloped_responses(
        self, ids: list[str], count: int, output: Any, formatter: EnvelopeFormatter
    ) -> list[PredictResponse]:
        failed = self._shape_error(ids, output, count)
        if failed is not None:
            return failed
        return [
            self._one(idx, rid, item)
            for idx, (rid, item) in enumerate(zip(ids, formatter.answers(output), strict=True))
        ]

    def _responses(self, ids: list[str], output: Any) -> list[PredictResponse]:
        failed = self._shape_error(ids, output, len(ids))
        if failed is not None:
            return failed
        return [
            self._one(idx, rid, item)
            for idx, (rid, item) in enumerate(zip(ids, output, strict=True))
        ]

    def _one(self, idx: int, request_id: str, item: Any) -> PredictResponse:
        if isinstance(item, PredictionException):
            return error_response(request_id, item.error_code, item.message, item.type_name)
        extra: dict[str, str] = {}
        if idx in self.context.streamed:
            extra[STREAM_HEADER] = "false"
        if self.context.get_request_header(idx, OIP_MARKER) is not None:
            answer = tensor_answer(
                self.context, idx, request_id, item, declared=self._declared, extra_headers=extra
            )
            if answer is not None:
                return answer
            message = "The model's answer cannot be sent as Open Inference Protocol tensors"
            return error_response(request_id, 500, message, "InternalServerException")
        try:
            body = encode_output(item)
        except UnsupportedOutputError as exc:
            logger.error("request %s: %s", request_id, exc)
            return error_response(request_id, 500, str(exc), "InternalServerException")
        return build_response(self.context, idx, request_id, body, final=True, extra_headers=extra)


def _cap_gpu_memory(spec: LoadSpec) -> None:
    """``handler.gpu_memory_fraction`` applied before the handler allocates anything."""
    try:
        option = serving_options(spec.model_yaml_config).gpu_memory_fraction
    except ValueError as exc:
        raise HandlerLoadError(str(exc)) from exc
    fraction = memory_fraction(option, spec.gpu_workers)
    if fraction is not None and spec.gpu_id is not None:
        from .runtimes.feeder import apply_memory_fraction

        if apply_memory_fraction(spec.gpu_id, fraction):
            logger.info("GPU %d memory capped at %.3f of the device", spec.gpu_id, fraction)
