"""``ts.torch_handler.unit_tests.test_utils.mock_context.MockContext``.

A context for calling a handler's ``initialize``/``handle`` directly in a unit test, with
TorchServe's constructor: ``MockContext(model_pt_file="model.pt", model_dir=..., model_file=
"model.py", gpu_id="0", model_name="mnist", model_yaml_config_file=None)``. ``metrics`` is a
``MetricsStore`` that keeps what the handler emits in ``context.metrics.store``;
``get_request_header(idx, name)`` answers ``True`` only for a non-zero ``idx`` while
``explain`` is set, as TorchServe's does. ``gpu_id`` is only set when CUDA is available.

Failure mode: a ``model_yaml_config_file`` that cannot be read raises ``OSError``/``ValueError``.
"""

from __future__ import annotations

import os
import uuid
from typing import Any

import torch

from ..ts_metrics import MetricsStore
from ..ts_util import get_yaml_config


class MockContext:
    """See the module docstring."""

    def __init__(  # noqa: PLR0917 - TorchServe's positional signature
        self,
        model_pt_file: str | None = "model.pt",
        model_dir: str = "ts/torch_handler/unit_tests/models/tmp",
        model_file: str | None = "model.py",
        gpu_id: str | None = "0",
        model_name: str = "mnist",
        model_yaml_config_file: str | None = None,
    ) -> None:
        self.manifest: dict[str, Any] = {"model": {}}
        if model_pt_file:
            self.manifest["model"]["serializedFile"] = model_pt_file
        if model_file:
            self.manifest["model"]["modelFile"] = model_file
        self.system_properties: dict[str, Any] = {"model_dir": model_dir}
        if torch.cuda.is_available() and gpu_id:
            self.system_properties["gpu_id"] = gpu_id
        self.model_name = model_name
        self.explain = False
        self.metrics = MetricsStore(uuid.uuid4(), model_name)
        self.model_yaml_config: dict[str, Any] = {}
        if model_yaml_config_file:
            self.model_yaml_config = get_yaml_config(
                os.path.join(model_dir, model_yaml_config_file)
            )

    def get_request_header(self, idx: int, exp: str) -> bool:
        return bool(idx and exp and self.explain)
