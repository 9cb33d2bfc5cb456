"""Registered models: versions, effective settings, routing, describe/list JSON, admission."""

from .admission import DEFAULT_VERSION, PoolFactory, admit, pool_key
from .describe import list_page, model_status, pool_state, snapshot_models, worker_rows
from .precedence import check_runtime, resolve_version_config
from .registry import (
    DefaultVersionRouter,
    ModelRegistry,
    ModelVersionEntry,
    ModelVersions,
    Router,
)
from .startup import (
    StartupModel,
    apply_default_versions,
    default_model_name,
    parse_load_models,
    startup_workers,
)
from .types import ModelVersionConfig, RegisterRequest

__all__ = [
    "DEFAULT_VERSION",
    "DefaultVersionRouter",
    "ModelRegistry",
    "ModelVersionConfig",
    "ModelVersionEntry",
    "ModelVersions",
    "PoolFactory",
    "RegisterRequest",
    "Router",
    "StartupModel",
    "admit",
    "apply_default_versions",
    "check_runtime",
    "default_model_name",
    "list_page",
    "model_status",
    "parse_load_models",
    "pool_key",
    "pool_state",
    "resolve_version_config",
    "snapshot_models",
    "startup_workers",
    "worker_rows",
]
