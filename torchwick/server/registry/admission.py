"""Turning a prepared archive into a registry entry: name, version, handler, settings, pool.

Everything here is synchronous and raises only ``torchwick.server.errors`` types, so the data
plane can admit a version without an await between the conflict check and ``registry.add``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

from torchwick.archiver import MODEL_NAME_PATTERN
from torchwick.server.errors import BadRequest, Conflict, ServiceUnavailable
from torchwick.server.model_store import ModelStore, PreparedModel
from torchwick.server.model_version import ModelVersionConfig
from torchwick.server.scheduling import AnyManagedPool, Batcher, no_worker_message
from torchwick.server.settings import Settings

from .precedence import resolve_version_config
from .registry import ModelRegistry, ModelVersionEntry
from .types import RegisterRequest

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

    def create_pool(self, key: str, config: ModelVersionConfig) -> AnyManagedPool:
        """A new, empty pool (target 0) for one model version."""
        ...


def pool_key(spec: ModelVersionConfig) -> str:
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
    extra_paths: tuple[str, ...] = (),
) -> ModelVersionEntry:
    """Resolve the version's config, create its pool and batcher and add it to ``registry``.

    The one ``ModelVersionConfig`` becomes the entry's ``spec`` and is what the pool is
    created from (its workers' LOAD frames are derived from it).

    Raises ``BadRequest`` (name, handler, runtime, timeouts) or ``Conflict`` (already
    registered, or the same pool key is still shutting down) before any pool exists, and
    ``ServiceUnavailable`` when the supervisor is closed. The batcher is started; the pool
    has no workers yet.
    """
    extracted = prepared.extracted
    name, version, handler = _name_and_handler(request, prepared, settings)
    registry.check_free(name, version)
    spec = resolve_version_config(
        request=request,
        name=name,
        version=version,
        mar_name=prepared.source.mar_name,
        manifest_runtime=extracted.manifest.runtime,
        handler=handler,
        model_dir=str(extracted.root),
        manifest=extracted.manifest.to_json_dict(),
        yaml=extracted.config,
        has_config_file=extracted.manifest.model.config_file is not None,
        settings=settings,
        startup_workers=startup_workers,
        extra_paths=extra_paths,
    )
    key = pool_key(spec)
    try:
        pool = pools.create_pool(key, spec)
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
        queue_timeout_s=float(spec.response_timeout),
        queue_full_message=(
            f'Model "{name}" Version {spec.version}: job queue full '
            f"({spec.job_queue_size} requests waiting); retry later"
        ),
    )
    entry = ModelVersionEntry(
        spec=spec,
        pool=pool,
        batcher=batcher,
        workdir=prepared.workdir,
        downloaded=ModelStore.downloaded_path(prepared.source),
    )
    registry.add(entry)
    batcher.start()
    return entry
