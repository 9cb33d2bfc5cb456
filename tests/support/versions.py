"""A ``ModelVersionConfig`` for tests that drive pools or the supervisor without registering."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torchwick.server.model_version import ModelVersionConfig


def version_config(
    model_dir: Path | str = "/m",
    *,
    name: str = "m",
    version: str = "1",
    handler: str = "h.py",
    **overrides: Any,
) -> ModelVersionConfig:
    """The config registration would resolve for ``name``/``version`` with no yaml, no
    ``models=`` entry and no API parameters (TorchServe's defaults); ``overrides`` replace
    fields."""
    fields: dict[str, Any] = {
        "url": f"{name}.mar",
        "mar_name": None,
        "runtime": "python",
        "min_workers": 0,
        "max_workers": 0,
        "batch_size": 1,
        "max_batch_delay": 100,
        "response_timeout": 120,
        "startup_timeout": 120,
        "job_queue_size": 100,
    }
    fields.update(overrides)
    return ModelVersionConfig(
        name=name, version=version, handler=handler, model_dir=str(model_dir), **fields
    )
