"""``ts.utils.util`` for TorchServe handlers: errors, label helpers and the PT2 backend list.

Failure mode: as the functions it re-exports (see ``torchwick.handlers.labels``).
"""

from __future__ import annotations

import enum
import inspect
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml

from ..errors import PredictionException
from ..labels import load_label_mapping, map_class_to_label

__all__ = [
    "PT2Backend",
    "PredictionException",
    "check_valid_pt2_backend",
    "get_yaml_config",
    "list_classes_from_module",
    "load_label_mapping",
    "map_class_to_label",
]


class PT2Backend(enum.StrEnum):
    """``torch.compile`` backends TorchServe accepts for ``pt2``."""

    EAGER = "eager"
    AOT_EAGER = "aot_eager"
    INDUCTOR = "inductor"
    CUDAGRAPHS = "cudagraphs"
    ONNXRT = "onnxrt"
    IPEX = "ipex"
    TENSORRT = "tensorrt"
    OPENVINO = "openvino"
    HPU_BACKEND = "hpu_backend"


def check_valid_pt2_backend(backend: str) -> bool:
    """True when ``backend`` is one of ``PT2Backend``."""
    return backend in {b.value for b in PT2Backend}


def list_classes_from_module(module: ModuleType, parent_class: type | None = None) -> list[type]:
    """Classes defined in ``module`` itself (optionally only subclasses of ``parent_class``)."""
    classes = [
        obj
        for _, obj in inspect.getmembers(module, inspect.isclass)
        if obj.__module__ == module.__name__
    ]
    if parent_class is not None:
        classes = [c for c in classes if issubclass(c, parent_class)]
    return classes


def get_yaml_config(yaml_file_path: str | Path) -> dict[str, Any]:
    """Read a YAML file with the safe loader; an empty file gives ``{}``."""
    with Path(yaml_file_path).open(encoding="utf-8") as handle:
        loaded = yaml.safe_load(handle)
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ValueError(f"{yaml_file_path}: expected a mapping at the top level")
    return loaded
