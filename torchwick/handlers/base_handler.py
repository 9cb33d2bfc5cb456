"""``BaseHandler``: TorchServe's handler contract, and the ``base_handler`` default handler.

Life cycle: the service builds the class without arguments, calls ``initialize(context)``
once, then ``handle(data, context)`` per batch. ``handle`` runs ``preprocess`` ->
``inference`` -> ``postprocess`` (or ``explain_handle`` when header ``explain`` is ``True``,
or ``describe_handle`` when header ``describe`` is ``True``) and emits ``HandlerTime``.

Per-request validation: ``map_requests(data, fn)`` applies ``fn`` to each request; a request
for which ``fn`` raises ``PredictionException`` (``InvalidInput`` for bad input) is left out
of the forward pass and answered with that error, while the others carry on. Requests whose
tensors differ in shape are run as separate forwards (``ShapeGroups``); when some shapes run
and others fail, the failing requests get 400 naming their shape. A batch that fails whole
gets 400 when the model ran before on other shapes only, or, before it ever ran, when the
same forward on shape-only tensors fails too (``shape_probe``); otherwise 500.

As a default handler (``handler: base_handler``) each request is one sample: a JSON (nested)
list of numbers in ``data``/``body``; the answer is that sample's model output as a list.
``handler: {input_shape: [..]}`` (sample shape without the batch dimension, ``null`` for a
free dimension) and ``handler: {input_dtype: "float32"|"int64"|...}`` tighten validation;
ONNX graphs supply both themselves.

Failure mode: ``initialize`` raises ``RuntimeError`` for models it cannot load; errors in
``handle`` propagate to the service, which maps them to statuses.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch

from .aio import is_async_callable, resolve
from .context import Context
from .errors import PredictionException, is_out_of_memory, last_traceback_line
from .explain import integrated_gradients
from .labels import MAPPING_FILE, load_label_mapping
from .pipeline import ShapeEvidence, per_group, per_group_async
from .request_tensors import RequestTensors, dtype_named, phase_slots
from .runtimes import (
    DeviceFeeder,
    LoadedModel,
    Prefetched,
    handler_config,
    load_eager,
    load_model,
    load_torchscript,
    manifest_model_files,
    select_device,
)
from .serving_options import serving_options
from .shape_probe import shape_probe

logger = logging.getLogger("torchwick.model")
T = TypeVar("T")

#: TorchServe's flag for writing ``torch.profiler`` traces (``ENABLE_TORCH_PROFILER``);
#: torchwick does not write them, so it is always False.
PROFILER_AVAILABLE = False
_ASYNC_STEPS = ("preprocess", "inference", "postprocess", "explain_handle", "describe_handle")


class BaseHandler(RequestTensors):
    """TorchServe-compatible base class for handlers (see the module docstring)."""

    #: This class's own ``preprocess``/``inference``/``postprocess`` keep no per-batch state
    #: beyond ``_rejected``/``_accepted``, so batches may be staged (``handlers.staged``).
    #: Only counts where the class that defines a step sets it in its own body.
    pipeline_safe = True

    def __init__(self) -> None:
        self.model: Any = None
        self.mapping: dict[str, str] | None = None
        self.device: torch.device | None = None
        self.initialized = False
        self.context: Context | None = None
        self.manifest: dict[str, Any] | None = None
        self.map_location: str | None = None
        self.model_pt_path: str | None = None
        self.model_yaml_config: dict[str, Any] = {}
        self.handler_config: dict[str, Any] = {}
        self.explain = False
        self.target = 0
        self.loaded: LoadedModel | None = None
        self.sample_shape: tuple[int | None, ...] | None = None
        self.input_dtype: torch.dtype | None = None
        self._rejected: dict[int, PredictionException] = {}
        #: Whether a shape the model fails on is the input's fault (400), not the model's
        #: (the shapes it ran on and a shape-only probe; see ``pipeline``, ``shape_probe``).
        self._shape_evidence = ShapeEvidence()
        self._accepted: list[int] = []
        #: Host-to-device transfer (pinned staging on CUDA); set by ``initialize``.
        self.feeder: DeviceFeeder | None = None

    # Loading -----------------------------------------------------------------------------

    def initialize(self, context: Context) -> None:
        """Pick the device, load the model (eager/TorchScript/ONNX) and the label mapping."""
        self.context = context
        properties = context.system_properties
        self.manifest = context.manifest
        self.model_yaml_config = context.model_yaml_config
        self.handler_config = handler_config(self.model_yaml_config)
        self.device = select_device(properties.get("gpu_id"))
        self.map_location = self.device.type
        model_dir = Path(properties["model_dir"])
        _, serialized = manifest_model_files(self.manifest)
        self.model_pt_path = str(model_dir / serialized) if serialized else None
        self.loaded = load_model(model_dir, self.manifest, self.device, self.model_yaml_config)
        self.model = self.loaded.model
        shape = self.handler_config.get("input_shape")
        self.sample_shape = (
            tuple(None if d is None else int(d) for d in shape)
            if isinstance(shape, list)
            else self.loaded.sample_shape
        )
        self.input_dtype = dtype_named(self.handler_config.get("input_dtype")) or (
            self.loaded.input_dtype
        )
        self.mapping = load_label_mapping(model_dir / MAPPING_FILE)
        probe = shape_probe(
            self.loaded.eager_model or self.loaded.model,
            self.loaded.runtime,
            Path(self.model_pt_path) if self.model_pt_path else None,
        )
        if probe is not None:
            self._shape_evidence = ShapeEvidence(lambda x: probe(self._model_input(x)))
        options = serving_options(self.model_yaml_config)
        self.feeder = DeviceFeeder(
            self.device, pin_memory=options.pin_memory, buffers=options.pipeline_depth + 2
        )
        self.start_preprocess_pool(options.preprocess_threads)
        self.initialized = True
        logger.info("%s model loaded on %s", self.loaded.runtime, self.device)

    def _load_pickled_model(self, model_dir: str, model_file: str, model_pt_path: str) -> Any:
        """TorchServe-named helper: eager class from ``model_file`` + weights (weights only)."""
        device = self.device or torch.device("cpu")
        return load_eager(Path(model_dir), model_file, Path(model_pt_path).name, device)

    def _load_torchscript_model(self, model_pt_path: str) -> Any:
        """TorchServe-named helper: ``torch.jit.load`` onto this handler's device."""
        return load_torchscript(Path(model_pt_path), self.device or torch.device("cpu"))

    # The pipeline ------------------------------------------------------------------------

    def preprocess(self, data: list[dict[str, Any]]) -> Any:
        """Per-request tensors, validated, stacked (or grouped by shape)."""
        return self.batch_tensors(self.map_requests(data, self.tensor_from_request))

    def _model_input(self, value: Any) -> Any:
        feeder = self.feeder
        if isinstance(value, Prefetched) and feeder is not None:
            value = feeder.ready(value)
        if isinstance(value, torch.Tensor):
            if feeder is not None:
                value = feeder.to_device(value)
            elif self.device is not None:
                value = value.to(self.device)
            if self.loaded is not None and self.loaded.half and value.is_floating_point():
                value = value.half()
            return value
        if isinstance(value, (list, tuple)):
            return type(value)(self._model_input(v) for v in value)
        if isinstance(value, dict):
            return {k: self._model_input(v) for k, v in value.items()}
        return value

    def _model_output(self, value: Any) -> Any:
        if isinstance(value, torch.Tensor):
            return value.float() if value.dtype == torch.float16 else value
        if isinstance(value, (list, tuple)):
            return type(value)(self._model_output(v) for v in value)
        if isinstance(value, dict):
            return {k: self._model_output(v) for k, v in value.items()}
        return value

    def _call_model(self, inputs: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(inputs, tuple):
            return self.model(*inputs, *args, **kwargs)
        return self.model(inputs, *args, **kwargs)

    def inference(self, data: Any, *args: Any, **kwargs: Any) -> Any:
        """The forward pass under ``torch.inference_mode`` on the handler's device.

        A tuple is passed as positional arguments. If a ``torch.compile``d model fails but the
        uncompiled one succeeds on the same input, a warning is logged and the handler keeps
        the uncompiled model.
        """
        with torch.inference_mode():
            inputs = self._model_input(data)
            try:
                output = self._call_model(inputs, *args, **kwargs)
            except Exception as exc:
                eager = self.loaded.eager_model if self.loaded is not None else None
                if eager is None or self.model is eager or is_out_of_memory(exc):
                    raise
                try:
                    self.model, compiled = eager, self.model
                    output = self._call_model(inputs, *args, **kwargs)
                except Exception:
                    self.model = compiled
                    raise exc from None
                logger.warning(
                    "compiled model failed (%s); running uncompiled from now on",
                    last_traceback_line(exc),
                )
        return self._model_output(output)

    def postprocess(self, data: Any) -> list[Any]:
        """Model output -> one JSON-able item per sample (``tolist()``)."""
        if isinstance(data, torch.Tensor):
            result: list[Any] = data.tolist()
            return result
        if isinstance(data, list):
            return data
        raise TypeError(f"cannot postprocess a model output of type {type(data).__name__}")

    def _per_group(self, pre: Any, run: Callable[[Any, list[int]], list[Any]]) -> list[Any]:
        return per_group(pre, len(self._accepted), run, getattr(self, "_shape_evidence", None))

    def handle(self, data: list[dict[str, Any]] | None, context: Context) -> Any:
        """Run one batch; returns one item per request (exceptions mark rejected requests).

        When a subclass defines any of ``preprocess``/``inference``/``postprocess``/
        ``explain_handle``/``describe_handle`` with ``async def``, this returns a coroutine
        that awaits each step (the service runs it on its event loop; an ``async def handle``
        may ``await super().handle(...)``). A step that is synchronous but returns an awaitable
        has it resolved on the handler loop.
        """
        started = time.perf_counter()
        self.context = context
        if data is None:  # TorchServe's module-level init convention; nothing to run
            return None
        if any(is_async_callable(getattr(self, name, None)) for name in _ASYNC_STEPS):
            return self._handle_async(data, context, started)
        if self._is_describe():
            return [resolve(self.describe_handle())]
        self._rejected = {}
        self._accepted = list(range(len(data)))
        # Phase times for the server's histograms (sent in the answer frame, never logged).
        phases = phase_slots(context)
        pre = resolve(self.preprocess(data))
        phases[0] = time.perf_counter() - started
        if not self._accepted:
            output: list[Any] = []
        elif self._is_explain():
            output = resolve(self.explain_handle(pre, data))
        else:
            output = self._per_group(pre, self.forward_step(phases))
        return self._finish(output, len(data), context, started)

    def forward_step(self, phases: list[float]) -> Callable[[Any, list[int]], list[Any]]:
        """``inference`` then ``postprocess`` of one (shape group of a) batch, timed into
        ``phases[1]``/``phases[2]``: the step ``per_group`` runs."""

        def run(x: Any, _pos: list[int]) -> list[Any]:
            mark = time.perf_counter()
            inferred = resolve(self.inference(x))
            done = time.perf_counter()
            result: list[Any] = resolve(self.postprocess(inferred))
            phases[1] = max(phases[1], 0.0) + done - mark
            phases[2] = max(phases[2], 0.0) + time.perf_counter() - done
            return result

        return run

    async def _handle_async(
        self, data: list[dict[str, Any]], context: Context, started: float
    ) -> Any:
        if self._is_describe():
            return [await _awaited(self.describe_handle())]
        self._rejected = {}
        self._accepted = list(range(len(data)))
        phases = phase_slots(context)
        pre = await _awaited(self.preprocess(data))
        phases[0] = time.perf_counter() - started
        if not self._accepted:
            output: list[Any] = []
        elif self._is_explain():
            output = await _awaited(self.explain_handle(pre, data))
        else:

            async def run(x: Any, _pos: list[int]) -> list[Any]:
                mark = time.perf_counter()
                inferred = await _awaited(self.inference(x))
                done = time.perf_counter()
                result: list[Any] = await _awaited(self.postprocess(inferred))
                phases[1] = max(phases[1], 0.0) + done - mark
                phases[2] = max(phases[2], 0.0) + time.perf_counter() - done
                return result

            output = await per_group_async(
                pre, len(self._accepted), run, getattr(self, "_shape_evidence", None)
            )
        return self._finish(output, len(data), context, started)

    def _finish(self, output: Any, count: int, context: Any, started: float) -> Any:
        output = self._merge(output, count)
        context.metrics.add_time("HandlerTime", round((time.perf_counter() - started) * 1e3, 2))
        return output

    def _merge(
        self,
        output: Any,
        count: int,
        rejected: dict[int, PredictionException] | None = None,
        accepted: list[int] | None = None,
    ) -> Any:
        # ``rejected``/``accepted`` of a staged batch (``handlers.staged``), else this batch's.
        rejected = self._rejected if rejected is None else rejected
        accepted = self._accepted if accepted is None else accepted
        if not rejected:
            return output
        if not isinstance(output, list) or len(output) != len(accepted):
            return output  # the service reports the count mismatch
        merged: list[Any] = [None] * count
        for idx, error in rejected.items():
            merged[idx] = error
        for idx, item in zip(accepted, output, strict=True):
            merged[idx] = item
        return merged

    # Describe and explain ----------------------------------------------------------------

    def _header_is_true(self, name: str) -> bool:
        # Also works with hand-built contexts (TorchServe's MockContext has no
        # request_processor and answers get_request_header itself).
        if self.context is None:
            return False
        try:
            value = self.context.get_request_header(0, name)
        except (IndexError, AttributeError):
            return False
        return str(value).lower() == "true"

    def _is_describe(self) -> bool:
        return self._header_is_true("describe")

    def _is_explain(self) -> bool:
        return self._header_is_true("explain")

    def describe_handle(self) -> Any:
        """Custom metadata for describe ``?customized=true``; ``None`` unless overridden."""
        return None

    def explain_handle(self, data_preprocess: Any, raw_data: list[dict[str, Any]]) -> list[Any]:
        """Attributions per request (integrated gradients; target from field ``target``)."""
        rows = [raw_data[i] for i in self._accepted]
        targets = [self._target_of(row) for row in rows]

        def run(tensor: Any, positions: list[int]) -> list[Any]:
            result: list[Any] = self.get_insights(
                tensor, [rows[p] for p in positions], [targets[p] for p in positions]
            )
            return result

        return self._per_group(data_preprocess, run)

    @staticmethod
    def _target_of(row: Any) -> int:
        value = row.get("target", 0) if isinstance(row, dict) else 0
        if isinstance(value, (bytes, bytearray)):
            value = bytes(value).decode("utf-8", "replace").strip() or 0
        try:
            return int(value or 0)
        except (TypeError, ValueError):
            raise PredictionException(
                f"explanation target {value!r} is not an integer", 400
            ) from None

    def get_insights(self, tensor_data: Any, raw_data: Any, target: Any = 0) -> list[Any]:
        """Integrated-gradient attributions for ``tensor_data`` (one nested list per sample)."""
        if not isinstance(tensor_data, torch.Tensor):
            raise PredictionException("this handler does not support explanations", 400)
        inputs = self._model_input(tensor_data).detach()
        targets = target if isinstance(target, list) else [int(target)] * inputs.shape[0]
        attributions = integrated_gradients(self.model, inputs, targets)
        result: list[Any] = attributions.float().cpu().tolist()
        return result


async def _awaited(value: Any) -> Any:
    """``value``, awaited when it is awaitable (async steps; sync steps pass through)."""
    if inspect.isawaitable(value):
        return await value
    return value
