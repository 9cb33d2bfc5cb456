"""Values the management API hands to the data plane, and the effective settings of a version.

``RegisterRequest`` and ``ManagementResult`` are part of the data plane's public contract
(re-exported by ``torchwick.server.dataplane``). ``ModelSpec`` is what registration resolved
for one model version after applying TorchServe's precedence rules (see ``precedence``).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RegisterRequest:
    """The parameters of ``POST /models`` (and of a startup model); ``None`` = not given.

    ``synchronous`` defaults to True as TorchServe's REST API does; gRPC passes False.
    """

    url: str
    model_name: str | None = None
    handler: str | None = None
    runtime: str | None = None
    batch_size: int | None = None
    max_batch_delay: int | None = None
    initial_workers: int | None = None
    synchronous: bool = True
    response_timeout: int | None = None
    startup_timeout: int | None = None


@dataclass(frozen=True, slots=True)
class ManagementResult:
    """The answer of a management call: HTTP status (200, 202 or 206) and TorchServe's text,
    sent as ``{"status": message}``."""

    status_code: int
    message: str


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """Effective settings of one registered model version.

    ``url`` is what the client registered (shown as ``modelUrl``); ``mar_name`` is the archive's
    name inside the model store when it lives there (for snapshots), else ``None``.
    ``max_batch_delay`` is in milliseconds and only reported (torchwick never waits it out);
    the timeouts are in seconds. ``device_type`` is ``auto``, ``cpu`` or ``gpu``.
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
    device_type: str = "auto"
    device_ids: tuple[int, ...] | None = None
    parallel_type: str = ""
    parallel_level: int = 0
    loaded_at_startup: bool = False
