"""Which value wins for each setting of a model version: TorchServe's registration rules.

``resolve_version_config`` is the only producer of ``ModelVersionConfig``. Its sources: the
archive's ``model-config.yaml`` (``torchwick.archiver.ModelConfig``), the ``models=`` JSON
(``Settings.models``), the registration parameters (``RegisterRequest``) and server settings.

- ``batchSize`` / ``maxBatchDelay``: the API value when given; else the archive's
  ``model-config.yaml`` value when > 0; else the ``models=`` JSON value (> 0); else 1 / 100 ms.
- ``responseTimeout`` / ``startupTimeout``: a value set in the archive's yaml wins; else the
  ``models=`` JSON (> 0); else the API value; else the server default. (TorchServe also lets a
  yaml *without* these keys force 120 s over the API value; torchwick knowingly does not.)
- workers: ``initial_workers`` (default ``default_workers_per_model``, else 0); for a startup
  model the startup default, then the ``models=`` JSON ``minWorkers``/``maxWorkers``; a yaml with
  ``minWorkers > 0`` and ``maxWorkers >= minWorkers`` overrides all of these. A version
  restored from a config snapshot gets the snapshot's counts exactly (0 for a version that was
  scaled to zero), over the yaml: the snapshot is the state the operator left.
- ``jobQueueSize``, device and parallelism settings come from the yaml, else server defaults.
- ``handler.pipeline_depth`` (and the other serving options of ``serving_options``) come from
  the yaml only; an invalid value is a ``BadRequest``.
- ``max_response_size``, ``limit_max_image_pixels`` and ``decode_input_request`` are the
  server settings at registration time; ``service_envelope`` is the model-config's
  ``service_envelope`` (a torchwick addition: TorchServe reads it only from
  config.properties) when it sets one, else the server setting.

Invalid input raises ``BadRequest`` with the message the client sees.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from torchwick.handlers.serving_options import ServingOptions, serving_options
from torchwick.server.errors import BadRequest
from torchwick.server.model_version import ModelVersionConfig
from torchwick.server.settings import Settings

from .types import RegisterRequest

DEFAULT_BATCH_SIZE = 1
DEFAULT_MAX_BATCH_DELAY_MS = 100
#: Runtimes a torchwick worker can run (``LSP``, TorchServe's C++ backend, is refused).
SUPPORTED_RUNTIMES = ("python", "python3")
_KNOWN_RUNTIMES = (*SUPPORTED_RUNTIMES, "LSP")


class YamlConfig(Protocol):
    """The fields of the archive's ``model-config.yaml`` read here (``None`` = not set)."""

    @property
    def min_workers(self) -> int | None: ...
    @property
    def max_workers(self) -> int | None: ...
    @property
    def batch_size(self) -> int | None: ...
    @property
    def max_batch_delay(self) -> int | None: ...
    @property
    def response_timeout(self) -> int | None: ...
    @property
    def startup_timeout(self) -> int | None: ...
    @property
    def job_queue_size(self) -> int | None: ...
    @property
    def parallel_level(self) -> int | None: ...
    @property
    def device_type(self) -> str | None: ...
    @property
    def device_ids(self) -> tuple[int, ...] | None: ...
    @property
    def parallel_type(self) -> str | None: ...
    @property
    def raw(self) -> Mapping[str, Any]: ...


def _positive(value: object) -> int | None:
    """An int > 0, else ``None`` (TorchServe ignores values <= 0 in the yaml and the JSON)."""
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value if value > 0 else None


def _first(*values: int | None) -> int | None:
    for value in values:
        if value is not None:
            return value
    return None


def check_runtime(runtime: str) -> str:
    """Return ``runtime`` if a torchwick worker can run it, else raise ``BadRequest``."""
    if runtime in SUPPORTED_RUNTIMES:
        return runtime
    if runtime in _KNOWN_RUNTIMES:
        raise BadRequest(f"Runtime {runtime} (TorchServe's C++ backend) is not supported")
    raise BadRequest(f"Invalid RuntimeType value: {runtime}")


def initial_workers(request: RegisterRequest, settings: Settings) -> int:
    """Workers asked for by the API, else ``default_workers_per_model``, else 0."""
    if request.initial_workers is not None:
        return max(0, request.initial_workers)
    return max(0, settings.default_workers_per_model)


def _api_timeout(value: int | None, name: str) -> int | None:
    if value is not None and value <= 0:
        raise BadRequest(f"{name} must be a positive number of seconds")
    return value


ENVELOPES = ("body", "json", "kserve", "kservev2")


def model_envelope(config: Mapping[str, Any]) -> str | None:
    """The model-config's ``service_envelope`` (``None`` when absent); ``BadRequest`` naming
    the key for a value that is not one of TorchServe's envelopes."""
    value = config.get("service_envelope")
    if value is None:
        return None
    if not isinstance(value, str) or value.lower() not in ENVELOPES:
        raise BadRequest(
            f"model-config service_envelope must be one of {', '.join(ENVELOPES)}, got {value!r}"
        )
    return value.lower()


def resolve_version_config(
    *,
    request: RegisterRequest,
    name: str,
    version: str,
    mar_name: str | None,
    manifest_runtime: str,
    handler: str,
    model_dir: str,
    manifest: Mapping[str, Any],
    yaml: YamlConfig,
    has_config_file: bool,
    settings: Settings,
    startup_workers: int | None = None,
    extra_paths: tuple[str, ...] = (),
) -> ModelVersionConfig:
    """The effective settings of ``name``/``version`` (see the module docstring for the rules).

    ``model_dir`` is the extracted archive and ``manifest`` its MANIFEST as camelCase JSON.
    ``startup_workers`` is given only for models loaded at startup; it replaces the API's
    initial workers and lets the ``models=`` JSON set the worker counts.
    """
    runtime = check_runtime(request.runtime or manifest_runtime)
    json_entry: Mapping[str, Any] = settings.models.get(name, {}).get(version, {})
    response_api = _api_timeout(request.response_timeout, "response_timeout")
    startup_api = _api_timeout(request.startup_timeout, "startup_timeout")

    api_batch = request.batch_size if request.batch_size and request.batch_size > 0 else None
    api_delay = (
        request.max_batch_delay
        if request.max_batch_delay is not None and request.max_batch_delay >= 0
        else None
    )
    batch_size = _first(
        api_batch, _positive(yaml.batch_size), _positive(json_entry.get("batchSize"))
    )
    max_batch_delay = _first(
        api_delay, _positive(yaml.max_batch_delay), _positive(json_entry.get("maxBatchDelay"))
    )

    yaml_response = _positive(yaml.response_timeout) if has_config_file else None
    yaml_startup = _positive(yaml.startup_timeout) if has_config_file else None
    response_timeout = _first(
        yaml_response, _positive(json_entry.get("responseTimeout")), response_api
    )
    startup_timeout = _first(yaml_startup, _positive(json_entry.get("startupTimeout")), startup_api)

    restored = startup_workers is not None and any(n == name for n, _ in settings.restore_models)
    if startup_workers is None:
        min_workers = initial_workers(request, settings)
        max_workers = min_workers
    elif restored and isinstance(json_entry.get("minWorkers"), int):
        min_workers = int(json_entry["minWorkers"])
        max_workers = max(min_workers, int(json_entry.get("maxWorkers", min_workers)))
    else:
        min_workers = _positive(json_entry.get("minWorkers")) or startup_workers
        max_workers = max(min_workers, _positive(json_entry.get("maxWorkers")) or min_workers)
    yaml_min, yaml_max = _positive(yaml.min_workers), yaml.max_workers
    if not restored and yaml_min is not None and yaml_max is not None and yaml_max >= yaml_min:
        min_workers, max_workers = yaml_min, yaml_max

    device_type = yaml.device_type if yaml.device_type in ("cpu", "gpu") else "auto"
    return ModelVersionConfig(
        name=name,
        version=version,
        url=request.url,
        mar_name=mar_name,
        runtime=runtime,
        handler=handler,
        min_workers=min_workers,
        max_workers=max_workers,
        batch_size=batch_size or DEFAULT_BATCH_SIZE,
        max_batch_delay=DEFAULT_MAX_BATCH_DELAY_MS if max_batch_delay is None else max_batch_delay,
        response_timeout=response_timeout or settings.default_response_timeout,
        startup_timeout=startup_timeout or settings.default_startup_timeout,
        job_queue_size=_positive(yaml.job_queue_size) or max(1, settings.job_queue_size),
        device_type=device_type or "auto",
        device_ids=yaml.device_ids or None,
        parallel_type=yaml.parallel_type or "",
        parallel_level=_positive(yaml.parallel_level) or 0,
        loaded_at_startup=startup_workers is not None,
        model_dir=model_dir,
        manifest=manifest,
        yaml_config=dict(yaml.raw),
        max_response_size=settings.max_response_size,
        limit_max_image_pixels=settings.limit_max_image_pixels,
        decode_input_request=settings.decode_input_request,
        service_envelope=model_envelope(yaml.raw) or settings.service_envelope,
        metrics_config=str(settings.metrics_config) if settings.metrics_config else None,
        extra_paths=extra_paths,
        max_json_depth=settings.max_json_depth,
        max_image_pixels=settings.max_image_pixels,
        shm_threshold=settings.ipc_shm_threshold,
        shm_size=settings.ipc_shm_size,
        pipeline_depth=_serving(yaml.raw).pipeline_depth,
    )


def _serving(raw: Mapping[str, Any]) -> ServingOptions:
    """The model-config's serving options (``handler.pipeline_depth`` and the rest), checked
    at registration so that a bad value is the client's 400, not a failing worker."""
    try:
        return serving_options(raw)
    except ValueError as exc:
        raise BadRequest(f"Invalid model-config: {exc}") from None
