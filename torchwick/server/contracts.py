"""The data plane's typed inputs and outputs: what every protocol adapter speaks.

Nothing here knows HTTP or gRPC. The REST, gRPC and Open Inference Protocol adapters turn
their wire formats into these values and render these values back; the data plane never sees
a status line, a camelCase key or a protobuf message. A handler's own choices (its status,
content type, headers) travel as plain data inside ``InferenceResult``: they are the model's
answer, not a server error, and each adapter decides how its protocol shows them.

Failures are never values here: the data plane raises ``torchwick.server.errors`` types and
each adapter maps them through the one ``ERROR_TABLE``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol

from torchwick.handlers.messages import Header, InputParameter

__all__ = [
    "GpuUsage",
    "Header",
    "InferencePort",
    "InferenceRequest",
    "InferenceResult",
    "InputParameter",
    "ModelMetadata",
    "ModelPage",
    "ModelRef",
    "ModelStatus",
    "OperationResult",
    "Outcome",
    "TensorSpec",
    "WorkerRow",
]


@dataclass(frozen=True, slots=True)
class InferenceRequest:
    """One inference call, whatever protocol it came by.

    ``inputs`` are the named inputs (a form field, a whole body named ``body``, an OIP
    tensor's bytes). ``metadata`` holds the protocol's request metadata (HTTP headers or gRPC
    metadata), names lower-cased; the handler sees them as request headers. ``explain`` asks
    for an explanation instead of a prediction. ``path_suffix`` is extra path after the
    version (TorchServe's ``url_path``). ``received_at`` is the ``time.perf_counter()``
    reading when the request arrived (0.0: when the data plane first saw it), so that the
    latency the data plane records includes reading the request.
    """

    request_id: str
    inputs: tuple[InputParameter, ...] = ()
    metadata: tuple[Header, ...] = ()
    explain: bool = False
    path_suffix: str = ""
    received_at: float = 0.0

    def header(self, name: str) -> str | None:
        """The first metadata value named ``name`` (lower-case), or ``None``."""
        for key, value in self.metadata:
            if key == name:
                return value
        return None


@dataclass(frozen=True, slots=True)
class InferenceResult:
    """The model's answer to one request, or one intermediate chunk of a streamed answer.

    ``status`` is the handler's chosen status (HTTP numbering, 200 by default): a handler that
    rejects an input answers 400 here, and the adapter passes it on. ``content_type`` is
    ``None`` when the handler set none. ``model_version`` is the version that served it.
    ``final`` is False for an intermediate chunk.
    """

    request_id: str
    model_name: str
    model_version: str
    status: int = 200
    content_type: str | None = None
    headers: tuple[Header, ...] = ()
    body: bytes = b""
    reason: str = ""
    final: bool = True


class Outcome(StrEnum):
    """How a register/scale/unregister/set-default call ended (errors raise instead).

    ``DONE``: everything asked for is in place. ``ACCEPTED``: started, continuing in the
    background (the caller did not ask to wait). ``PARTIAL``: the caller waited, but fewer
    workers than asked for are ready yet; the rest keep starting.
    """

    DONE = "done"
    ACCEPTED = "accepted"
    PARTIAL = "partial"


@dataclass(frozen=True, slots=True)
class OperationResult:
    """A management call's outcome and TorchServe's message text for it."""

    outcome: Outcome
    message: str


@dataclass(frozen=True, slots=True)
class GpuUsage:
    """One GPU's device-wide usage as NVML reports it (what TorchServe's ``gpuUsage`` shows).

    ``utilization_gpu`` and ``utilization_memory`` are percent (compute and memory-controller
    busy share); ``memory_used_bytes`` is the memory used on the whole device.
    """

    gpu_id: int
    utilization_gpu: int
    utilization_memory: int
    memory_used_bytes: int


@dataclass(frozen=True, slots=True)
class WorkerRow:
    """One worker of a model version as the management API shows it.

    ``pid`` is ``None`` while no process runs; ``start_time`` is when the current (or last)
    process started, in UTC; ``memory_bytes`` is its resident set size (0 when not running).
    ``gpu_usage`` is the usage of the worker's GPU and ``gpu_memory_bytes`` the GPU memory
    its process holds (summed over GPUs); both ``None`` when NVML is absent or does not list
    the worker's GPU or process.
    """

    id: str
    pid: int | None
    status: str
    start_time: datetime | float | None
    gpu_id: int | None
    memory_bytes: int
    gpu_usage: GpuUsage | None = None
    gpu_memory_bytes: int | None = None


@dataclass(frozen=True, slots=True)
class ModelStatus:
    """One registered model version: its effective settings, workers and queue.

    ``state`` is ``READY``, ``SCALING``, ``STOPPED`` or ``CRASH_LOOPING``; ``last_error`` is
    the last worker failure the pool reported. ``customized`` is the handler's own metadata
    when it was asked for (``None`` otherwise). ``device_type`` is ``cpu`` or ``gpu`` as
    configured, or the device the workers actually got when the model said ``auto``.
    """

    name: str
    version: str
    url: str
    runtime: str
    is_default: bool
    min_workers: int
    max_workers: int
    batch_size: int
    max_batch_delay_ms: int
    response_timeout_s: int
    startup_timeout_s: int
    parallel_type: str
    parallel_level: int
    device_type: str
    device_ids: tuple[int, ...] | None
    loaded_at_startup: bool
    workers: tuple[WorkerRow, ...]
    queue_pending: int
    queue_capacity: int
    state: str
    last_error: str | None = None
    customized: Mapping[str, Any] | None = None
    #: The model's traffic policy with its live counters, when one is in force
    #: (``TrafficEngine.policy_status``).
    traffic: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class ModelRef:
    """A model in a list: its name and the URL its default version was registered from."""

    name: str
    url: str


@dataclass(frozen=True, slots=True)
class ModelPage:
    """One page of the model list; ``next_offset`` is ``None`` past the last page."""

    models: tuple[ModelRef, ...]
    next_offset: int | None


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """A declared input or output: name, Open Inference Protocol datatype (``FP32``,
    ``BYTES``, ...) and shape (``-1`` for a free dimension)."""

    name: str
    datatype: str
    shape: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class ModelMetadata:
    """What a model says about itself: the versions registered, the platform, and its
    declared inputs and outputs (empty when neither the archive nor the handler declares
    them)."""

    name: str
    versions: tuple[str, ...]
    platform: str
    inputs: tuple[TensorSpec, ...] = ()
    outputs: tuple[TensorSpec, ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)


class InferencePort(Protocol):
    """What every inference adapter (REST, gRPC) needs from the data plane (``DataPlane``)."""

    async def infer(
        self,
        model: str,
        version: str | None,
        request: InferenceRequest,
        *,
        on_intermediate: Callable[[InferenceResult], None] | None = None,
    ) -> InferenceResult:
        """Run one request on the model version (default when ``None``)."""
        ...

    def ready(self) -> bool:
        """Startup models tried and every default version healthy."""
        ...
