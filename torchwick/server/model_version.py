"""The one configuration type of a registered model version, and the worker view derived from it.

Where a version's settings come from, and why only one type holds the result:

- the archive's ``model-config.yaml``, parsed by ``torchwick.archiver.ModelConfig``. That type
  stays in the archiver: it is the archive layer's parse result (``None`` = "the file does not
  say", which the precedence rules need), and the archiver is used without the server
  (``torch-model-archiver``, ``inspect_archive``), so it cannot hold server types;
- the ``models=`` property, validated at the config edge (``server/config/models_json.py``)
  into a plain ``{name: {version: {camelCaseKey: value}}}`` mapping, the shape TorchServe's
  snapshots also use;
- the registration parameters (``registry.types.RegisterRequest``) and the server settings.

``registry.precedence.resolve_version_config`` applies TorchServe's precedence rules to those
sources once, at registration, and returns a ``ModelVersionConfig``. Everything after that
reads this one value: the registry entry (``ModelVersionEntry.spec``), describe and snapshots,
the worker pool (``WorkerSupervisor.create_pool(key, config)``), and each worker, through
``ModelVersionConfig.load_spec``, the only place a ``LoadSpec`` is built for the LOAD frame.
``LoadSpec`` itself remains the wire message because ``torchwick.handlers`` (which runs inside
the worker) must not import the server.

This module imports nothing from the server, so the worker layer and the registry can both
depend on it without an import circle.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from torchwick.handlers.messages import DEFAULT_MAX_RESPONSE_SIZE, LoadSpec


@dataclass(frozen=True, slots=True)
class ModelVersionConfig:
    """Effective settings of one registered model version.

    Identity and reporting: ``url`` is what the client registered (shown as ``modelUrl``);
    ``mar_name`` is the archive's name inside the model store when it lives there (for
    snapshots), else ``None``. ``max_batch_delay`` is in milliseconds and only reported
    (torchwick never waits it out); the timeouts are whole seconds (``startup_timeout`` bounds
    spawn + connect + load of one worker, ``response_timeout`` one batch). ``device_type`` is
    ``auto``, ``cpu`` or ``gpu``; ``device_ids`` restricts GPU workers to those ids.
    ``min_workers``/``max_workers`` change by ``dataclasses.replace`` when the version is
    scaled; the pool reads none of the scaling or reporting fields.

    What a worker loads: ``model_dir`` (the extracted archive), ``manifest`` (its MANIFEST as
    TorchServe's camelCase JSON), ``yaml_config`` (the whole ``model-config.yaml``, the
    handler's ``context.model_yaml_config``). The server settings that govern a worker of this
    version (``max_response_size``, ``limit_max_image_pixels``, ``decode_input_request``,
    ``service_envelope``, ``metrics_config``) are copied in at registration, so a worker's
    behaviour is fixed by its version's config.
    """

    name: str
    version: str
    url: str
    mar_name: str | None
    runtime: str
    handler: str
    min_workers: int
    max_workers: int
    batch_size: int
    max_batch_delay: int
    response_timeout: int
    startup_timeout: int
    job_queue_size: int
    model_dir: str
    device_type: str = "auto"
    device_ids: tuple[int, ...] | None = None
    parallel_type: str = ""
    parallel_level: int = 0
    loaded_at_startup: bool = False
    manifest: Mapping[str, Any] = field(default_factory=dict)
    yaml_config: Mapping[str, Any] = field(default_factory=dict)
    max_response_size: int = DEFAULT_MAX_RESPONSE_SIZE
    limit_max_image_pixels: bool = True
    decode_input_request: bool = True
    service_envelope: str | None = None
    metrics_config: str | None = None
    #: The per-model pip target folder(s) (``install_py_dep_per_model``), for workers' sys.path.
    extra_paths: tuple[str, ...] = ()
    max_json_depth: int = 64
    max_image_pixels: int = 50_000_000
    #: Shared-memory IPC (``ipc_shm_threshold``/``ipc_shm_size``; threshold 0: off).
    shm_threshold: int = 0
    shm_size: int = 0
    #: Batches one worker holds at once (model-config ``handler.pipeline_depth``): with 2 or
    #: more the pool hands a worker its next batch while the current one runs.
    pipeline_depth: int = 1

    def load_spec(
        self,
        *,
        gpu_id: int | None,
        threads: int,
        adaptive_threads: bool,
        omp_spin_count: int = -1,
        gpu_workers: int = 1,
    ) -> LoadSpec:
        """The LOAD frame for one worker of this version: this config plus the worker's placement.

        ``gpu_id`` (``None`` for CPU) and ``threads`` (torch's thread budget, >= 1) are chosen
        by the supervisor per worker; ``adaptive_threads`` lets the worker drop to one thread
        for tiny batches or contended cores (see ``workers.threads``); ``omp_spin_count`` is
        the server's ``worker_omp_spin_count`` (-1: OpenMP's default); ``gpu_workers`` counts
        the workers on ``gpu_id`` (this one included), for
        ``handler.gpu_memory_fraction: auto``.
        """
        return LoadSpec(
            model_name=self.name,
            model_version=self.version,
            model_dir=self.model_dir,
            handler=self.handler,
            batch_size=self.batch_size,
            gpu_id=gpu_id,
            # Plain dicts: msgpack encodes dict, not other mappings.
            manifest=dict(self.manifest),
            model_yaml_config=dict(self.yaml_config),
            limit_max_image_pixels=self.limit_max_image_pixels,
            decode_input_request=self.decode_input_request,
            service_envelope=self.service_envelope,
            metrics_config=self.metrics_config,
            extra_paths=list(self.extra_paths),
            threads=max(1, threads),
            adaptive_threads=adaptive_threads,
            omp_spin_count=omp_spin_count,
            max_response_size=self.max_response_size,
            max_json_depth=self.max_json_depth,
            max_image_pixels=self.max_image_pixels,
            shm_threshold=self.shm_threshold,
            shm_size=self.shm_size,
            gpu_workers=max(1, gpu_workers),
        )
