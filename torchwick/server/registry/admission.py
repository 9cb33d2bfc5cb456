"""Turning a prepared archive into a registry entry: name, version, handler, settings, pool.

Everything here is synchronous and raises only ``torchwick.server.errors`` types, so the data
plane can admit a version without an await between the conflict check and ``registry.add``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

from torchwick.archiver import MODEL_NAME_PATTERN
from torchwick.handlers.messages import LoadSpec
from torchwick.server.errors import BadRequest, Conflict, ServiceUnavailable
from torchwick.server.model_store import ModelStore, PreparedModel
from torchwick.server.scheduling import AnyManagedPool, Batcher, no_worker_message
from torchwick.server.settings import Settings
from torchwick.server.workers.config import WorkerPoolConfig

from .precedence import resolve_spec
from .registry import ModelRegistry, ModelVersionEntry
from .types import ModelSpec, RegisterRequest

DEFAULT_VERSION = "1.0"


class GpuView(Protocol):
    """The supervisor's GPU allocator, as far as the data plane reads it."""

    @property
    def visible(self) -> int:
        """GPUs workers can use."""
        ...


class PoolFactory(Protocol):
    """What the data plane needs from ``WorkerSupervisor``."""

    @property
    def gpus(self) -> GpuView:
        """The GPU allocator (its ``visible`` count sizes startup models)."""
        ...

    def create_pool(self, key: str, config: WorkerPoolConfig) -> AnyManagedPool:
        """A new, empty pool (target 0) for one model version."""
        ...


def pool_key(spec: ModelSpec) -> str:
    """The supervisor's key of a version's pool (TorchServe's ``name_version`` style)."""
    return f"{spec.name}_{spec.version}"


def _name_and_handler(
    request: RegisterRequest, prepared: PreparedModel, settings: Settings
) -> tuple[str, str, str]:
    model = prepared.extracted.manifest.model
    name = request.model_name or model.model_name
    if not name:
        raise BadRequest("Model name is not given and the archive's manifest has none")
    if not MODEL_NAME_PATTERN.match(name):
        raise BadRequest(f"Invalid model name {name!r}: use letters, digits, '_', '-' and '.'")
    version = model.model_version or DEFAULT_VERSION
    handler = request.handler or model.handler or settings.default_service_handler
    if not handler:
        raise BadRequest(f"No handler for model {name}: the archive names none")
    return name, version, handler


def admit(
    *,
    request: RegisterRequest,
    prepared: PreparedModel,
    settings: Settings,
    registry: ModelRegistry,
    pools: PoolFactory,
    clock: Callable[[], float] = time.monotonic,
    startup_workers: int | None = None,
) -> ModelVersionEntry:
    """Resolve the version's settings, create its pool and batcher and add it to ``registry``.

    Raises ``BadRequest`` (name, handler, runtime, timeouts) or ``Conflict`` (already
    registered, or the same pool key is still shutting down) before any pool exists, and
    ``ServiceUnavailable`` when the supervisor is closed. The batcher is started; the pool
    has no workers yet.
    """
    extracted = prepared.extracted
    name, version, handler = _name_and_handler(request, prepared, settings)
    registry.check_free(name, version)
    spec = resolve_spec(
        request=request,
        name=name,
        version=version,
        mar_name=prepared.source.mar_name,
        manifest_runtime=extracted.manifest.runtime,
        handler=handler,
        yaml=extracted.config,
        has_config_file=extracted.manifest.model.config_file is not None,
        settings=settings,
        startup_workers=startup_workers,
    )
    manifest = extracted.manifest.to_json_dict()
    load_spec = LoadSpec(
        model_name=name,
        model_version=version,
        model_dir=str(extracted.root),
        handler=handler,
        batch_size=spec.batch_size,
        manifest=manifest,
        model_yaml_config=dict(extracted.config.raw),
        limit_max_image_pixels=settings.limit_max_image_pixels,
        decode_input_request=settings.decode_input_request,
        service_envelope=settings.service_envelope,
    )
    key = pool_key(spec)
    config = WorkerPoolConfig(
        load_spec=load_spec,
        device_type=spec.device_type,
        device_ids=spec.device_ids,
        response_timeout_s=float(spec.response_timeout),
        startup_timeout_s=float(spec.startup_timeout),
        max_response_size=settings.max_response_size,
    )
    try:
        pool = pools.create_pool(key, config)
    except ValueError as exc:  # the key's previous pool is still stopping
        raise Conflict(f"Workers of {key} from an earlier registration are still stopping") from exc
    except RuntimeError as exc:  # the supervisor is closed: the server is shutting down
        raise ServiceUnavailable("The server is shutting down") from exc
    batcher = Batcher(
        pool,
        batch_size=spec.batch_size,
        capacity=spec.job_queue_size,
        unavailable_message=no_worker_message(name),
        clock=clock,
    )
    entry = ModelVersionEntry(
        spec=spec,
        pool=pool,
        batcher=batcher,
        model_dir=extracted.root,
        manifest=manifest,
        workdir=prepared.workdir,
        downloaded=ModelStore.downloaded_path(prepared.source),
    )
    registry.add(entry)
    batcher.start()
    return entry
