"""A data plane stand-in for driving the REST adapters in-process (Starlette's TestClient)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from torchwick.server.contracts import (
    InferenceRequest,
    InferenceResult,
    ModelPage,
    ModelRef,
    ModelStatus,
    OperationResult,
    Outcome,
)
from torchwick.server.dataplane import RegisterRequest
from torchwick.server.errors import ModelNotFound, ModelVersionNotFound
from torchwick.server.registry import ModelRegistry
from torchwick.server.traffic import TrafficEngine

Behaviour = Callable[[InferenceRequest, Callable[[InferenceResult], None] | None], Any]


class FakePlane:
    """Models are names mapped to an async behaviour; every call is recorded."""

    def __init__(self) -> None:
        self.behaviours: dict[str, Behaviour] = {}
        self.calls: list[tuple[str, Any]] = []
        self.is_healthy = True
        self.startup_done = True
        self.cancelled: list[str] = []
        #: A real traffic engine over an empty registry (``/traffic/{m}`` answers 404 here).
        self.traffic = TrafficEngine(ModelRegistry(), time.monotonic)

    def add(self, name: str, behaviour: Behaviour) -> None:
        self.behaviours[name] = behaviour

    async def infer(
        self,
        model: str,
        version: str | None,
        request: InferenceRequest,
        *,
        on_intermediate: Callable[[InferenceResult], None] | None = None,
    ) -> InferenceResult:
        self.calls.append(("infer", (model, version, request)))
        if model not in self.behaviours:
            raise ModelNotFound(f"Model not found: {model}")
        if version not in (None, "1.0"):
            raise ModelVersionNotFound(
                f"Model version: {version} does not exist for model: {model}"
            )
        try:
            result = await self.behaviours[model](request, on_intermediate)
        except asyncio.CancelledError:
            self.cancelled.append(request.request_id)
            raise
        assert isinstance(result, InferenceResult)
        return result

    def ready(self) -> bool:
        return self.startup_done and self.is_healthy

    def describe(
        self, model: str, version: str | None, *, all_versions: bool = False
    ) -> list[ModelStatus]:
        self.calls.append(("describe", (model, version, all_versions)))
        if model not in self.behaviours:
            raise ModelNotFound(f"Model not found: {model}")
        return [status(model, version or "1.0")]

    async def describe_customized(self, model: str, version: str | None) -> list[ModelStatus]:
        self.calls.append(("describe_customized", (model, version)))
        return [status(model, version or "1.0", customized={})]

    def list_models(self, limit: int, offset: int) -> ModelPage:
        self.calls.append(("list", (limit, offset)))
        return ModelPage(tuple(ModelRef(m, f"{m}.mar") for m in sorted(self.behaviours)), None)

    async def register(self, req: RegisterRequest) -> OperationResult:
        self.calls.append(("register", req))
        return OperationResult(Outcome.DONE, f'Model "{req.model_name}" registered')

    async def scale(
        self,
        model: str,
        version: str | None,
        min_worker: int,
        max_worker: int | None,
        synchronous: bool,
    ) -> OperationResult:
        self.calls.append(("scale", (model, version, min_worker, max_worker, synchronous)))
        return OperationResult(Outcome.ACCEPTED, "Processing worker updates...")

    async def unregister(
        self, model: str, version: str | None, *, force: bool = False
    ) -> OperationResult:
        self.calls.append(("unregister", (model, version)))
        return OperationResult(Outcome.DONE, f'Model "{model}" unregistered')

    def set_default(self, model: str, version: str) -> OperationResult:
        self.calls.append(("set_default", (model, version)))
        return OperationResult(Outcome.DONE, "ok")

    def model_ready(self, model: str, version: str | None = None) -> bool:
        if model not in self.behaviours:
            raise ModelNotFound(f"Model not found: {model}")
        return True


class FakeTokens:
    """Accepts ``Bearer inf`` for inference, ``Bearer mgmt`` for management, ``Bearer api``."""

    def __init__(self) -> None:
        self.rotated: list[str] = []

    def check(self, kind: str, header: str | None) -> None:
        from torchwick.server.errors import InvalidToken

        if header != f"Bearer {'inf' if kind == 'inference' else 'mgmt'}":
            raise InvalidToken("Token authorization failed")

    def check_api_key(self, header: str | None) -> None:
        from torchwick.server.errors import InvalidToken

        if header != "Bearer api":
            raise InvalidToken("Token authorization failed")

    def rotate(self, kind: str) -> None:
        from torchwick.server.errors import BadRequest

        if kind not in ("inference", "management"):
            raise BadRequest(f"Unknown token type {kind!r}")
        self.rotated.append(kind)


def echo(status: int = 200, **fields: Any) -> Behaviour:
    """A behaviour answering the first parameter's bytes."""

    async def run(request: InferenceRequest, sink: Any) -> InferenceResult:
        body = request.inputs[0].value if request.inputs else b""
        return result(request, status=status, body=body, **fields)

    return run


def result(request: InferenceRequest, **fields: Any) -> InferenceResult:
    """A result for ``request`` from model ``echo`` version ``1.0``."""
    return InferenceResult(request.request_id, "echo", "1.0", **fields)


def status(name: str, version: str, **fields: Any) -> ModelStatus:
    """A plausible status of a model version with no workers."""
    values: dict[str, Any] = {
        "name": name,
        "version": version,
        "url": f"{name}.mar",
        "runtime": "python",
        "is_default": True,
        "min_workers": 0,
        "max_workers": 0,
        "batch_size": 1,
        "max_batch_delay_ms": 100,
        "response_timeout_s": 120,
        "startup_timeout_s": 120,
        "parallel_type": "",
        "parallel_level": 0,
        "device_type": "cpu",
        "device_ids": None,
        "loaded_at_startup": False,
        "workers": (),
        "queue_pending": 0,
        "queue_capacity": 100,
        "state": "STOPPED",
    }
    values.update(fields)
    return ModelStatus(**values)
