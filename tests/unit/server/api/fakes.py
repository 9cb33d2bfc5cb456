"""A data plane stand-in for driving the REST adapters in-process."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from torchwick.handlers.messages import PredictRequest, PredictResponse
from torchwick.server.dataplane import ManagementResult, RegisterRequest
from torchwick.server.errors import ModelNotFound, ModelVersionNotFound

Behaviour = Callable[[PredictRequest, Callable[[PredictResponse], None] | None], Any]


class FakePlane:
    """Models are names mapped to an async behaviour; every call is recorded."""

    def __init__(self) -> None:
        self.behaviours: dict[str, Behaviour] = {}
        self.calls: list[tuple[str, Any]] = []
        self.is_healthy = True
        self.cancelled: list[str] = []

    def add(self, name: str, behaviour: Behaviour) -> None:
        self.behaviours[name] = behaviour

    async def infer(
        self,
        model: str,
        version: str | None,
        request: PredictRequest,
        *,
        on_intermediate: Callable[[PredictResponse], None] | None = None,
    ) -> PredictResponse:
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
        assert isinstance(result, PredictResponse)
        return result

    def healthy(self) -> bool:
        return self.is_healthy

    def describe(
        self, model: str, version: str | None, *, all_versions: bool = False
    ) -> list[dict[str, Any]]:
        self.calls.append(("describe", (model, version, all_versions)))
        if model not in self.behaviours:
            raise ModelNotFound(f"Model not found: {model}")
        return [{"modelName": model, "modelVersion": version or "1.0"}]

    async def describe_customized(self, model: str, version: str | None) -> list[dict[str, Any]]:
        self.calls.append(("describe_customized", (model, version)))
        return [{"modelName": model, "customizedMetadata": {}}]

    def list_models(self, limit: int, next_page_token: int) -> dict[str, Any]:
        self.calls.append(("list", (limit, next_page_token)))
        return {
            "models": [{"modelName": m, "modelUrl": f"{m}.mar"} for m in sorted(self.behaviours)]
        }

    async def register(self, req: RegisterRequest) -> ManagementResult:
        self.calls.append(("register", req))
        return ManagementResult(200, f'Model "{req.model_name}" registered')

    async def scale(
        self,
        model: str,
        version: str | None,
        min_worker: int,
        max_worker: int | None,
        synchronous: bool,
    ) -> ManagementResult:
        self.calls.append(("scale", (model, version, min_worker, max_worker, synchronous)))
        return ManagementResult(202, "Processing worker updates...")

    async def unregister(self, model: str, version: str | None) -> ManagementResult:
        self.calls.append(("unregister", (model, version)))
        return ManagementResult(200, f'Model "{model}" unregistered')

    def set_default(self, model: str, version: str) -> ManagementResult:
        self.calls.append(("set_default", (model, version)))
        return ManagementResult(200, "ok")

    def model_ready(self, model: str) -> bool:
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

    async def run(request: PredictRequest, sink: Any) -> PredictResponse:
        body = request.parameters[0].value if request.parameters else b""
        return PredictResponse(request.request_id, status=status, body=body, **fields)

    return run
