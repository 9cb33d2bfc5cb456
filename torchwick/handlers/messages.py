"""The values that cross between the server and a model service inside a worker.

These are plain frozen dataclasses so that the worker's IPC layer can encode them without
pickle, and so that the handler package can be driven in-process by tests. The server never
imports handler code; it only builds ``PredictRequest`` values and reads ``PredictResponse``
values.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

Header = tuple[str, str]

#: The largest answer frame a worker sends by default (TorchServe's ``max_response_size``).
DEFAULT_MAX_RESPONSE_SIZE = 6553500


@dataclass(frozen=True, slots=True)
class InputParameter:
    """One named input of a request: a form field, or the whole body named ``body``.

    ``content_type`` is the MIME type without parameters, or ``None`` when unknown.
    ``value`` is ``bytes``, or inside a worker a read-only ``memoryview`` of the frontend's
    shared memory (values of at least ``LoadSpec.shm_threshold`` bytes): valid only until the
    worker has answered the batch (see ``torchwick.server.workers.shm``).
    """

    name: str
    value: bytes | memoryview
    content_type: str | None = None


@dataclass(frozen=True, slots=True)
class PredictRequest:
    """One client request inside a batch.

    ``headers`` are the HTTP headers (names lower-cased) plus the server-added ``explain``
    and ``url_path`` entries.
    """

    request_id: str
    headers: tuple[Header, ...] = ()
    parameters: tuple[InputParameter, ...] = ()


@dataclass(frozen=True, slots=True)
class PredictResponse:
    """The answer to one request: a status, optional content type and headers, and a body.

    ``final`` is ``False`` for an intermediate (streamed) chunk; the last chunk of a request,
    or its only response, has ``final=True``.
    """

    request_id: str
    status: int = 200
    reason: str = ""
    content_type: str | None = None
    headers: tuple[Header, ...] = ()
    body: bytes = b""
    final: bool = True


@dataclass(frozen=True, slots=True)
class MetricRecord:
    """A metric a handler emitted through ``context.metrics``."""

    name: str
    value: float
    unit: str
    metric_type: str = "counter"
    dimensions: tuple[Header, ...] = ()
    request_id: str | None = None


@dataclass(frozen=True, slots=True)
class BatchTimings:
    """Seconds one batch spent in each phase inside the worker (the answer frame's timings).

    ``preprocess``/``inference``/``postprocess`` are measured by ``BaseHandler.handle`` around
    its steps; a handler that is not a ``BaseHandler`` (a module function) leaves them at
    ``UNMEASURED``. ``encode`` is the time spent turning the handler's outputs into response
    bodies; ``worker`` is the whole time the worker held the batch (decode to answer).
    """

    preprocess: float = -1.0
    inference: float = -1.0
    postprocess: float = -1.0
    encode: float = -1.0
    worker: float = -1.0


#: The value of a ``BatchTimings`` field the worker did not measure.
UNMEASURED = -1.0


@dataclass(frozen=True, slots=True)
class LoadSpec:
    """Everything a worker needs to load and serve one model version: the LOAD frame.

    The server derives it in one place, ``ModelVersionConfig.load_spec``; no worker setting
    travels on the command line or in the environment (only the socket path and the spawn
    token do). ``handler`` is the manifest's handler (or the registration override): a built-in
    name, ``module``, ``module:function`` or ``file.py[:function]`` relative to ``model_dir``.
    ``gpu_id`` is ``None`` for CPU. ``threads`` is the worker's torch/OpenMP/MKL thread budget;
    with ``adaptive_threads`` the worker may drop to one thread while batches are tiny or its
    cores are contended. ``omp_spin_count`` is the ``GOMP_SPINCOUNT`` the worker sets before
    torch is imported (unless its environment has a wait policy already); -1 sets none.
    ``max_response_size`` caps each response body and each answer frame.
    ``service_envelope`` is ``body``, ``json``, ``kserve``, ``kservev2`` or ``None``
    (config.properties ``service_envelope``). ``metrics_config`` is the path of the
    metrics.yaml whose ``model_metrics`` are pre-registered for the handler (config.properties
    ``metrics_config``), ``None`` for TorchServe's default metrics.
    """

    model_name: str
    model_version: str
    model_dir: str
    handler: str
    batch_size: int = 1
    gpu_id: int | None = None
    manifest: dict[str, Any] = field(default_factory=dict)
    model_yaml_config: dict[str, Any] = field(default_factory=dict)
    limit_max_image_pixels: bool = True
    decode_input_request: bool = True
    service_envelope: str | None = None
    threads: int = 1
    adaptive_threads: bool = False
    omp_spin_count: int = -1
    max_response_size: int = DEFAULT_MAX_RESPONSE_SIZE
    metrics_config: str | None = None
    #: Folders appended to the worker's ``sys.path`` after ``model_dir``: the per-model pip
    #: target of ``install_py_dep_per_model`` (empty otherwise).
    extra_paths: list[str] = field(default_factory=list)
    #: Deepest JSON nesting of a decoded input, and the most pixels of a decoded image in the
    #: built-in vision handlers (config.properties ``max_json_depth``, ``max_image_pixels``).
    max_json_depth: int = 64
    max_image_pixels: int = 50_000_000
    #: Request values and answer bodies of at least this many bytes travel through a
    #: shared-memory arena of ``shm_size`` bytes per worker instead of the socket
    #: (config.properties ``ipc_shm_threshold``/``ipc_shm_size``); 0 turns that off.
    shm_threshold: int = 0
    shm_size: int = 0
    #: Workers placed on this worker's GPU when it was started (this one included), which
    #: ``handler: {gpu_memory_fraction: auto}`` divides the GPU's memory by; 1 on CPU.
    gpu_workers: int = 1
