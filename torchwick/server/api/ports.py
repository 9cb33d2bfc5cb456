"""What the REST adapters need from the data plane, stated as protocols.

``torchwick.server.dataplane.DataPlane`` satisfies both; unit tests drive the adapters with
small fakes. Every method raises only ``torchwick.server.errors`` types (see
``docs/internal-contracts.md``, "data plane").
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from torchwick.handlers.messages import PredictRequest, PredictResponse
from torchwick.server.dataplane import ManagementResult, RegisterRequest


class InferencePlane(Protocol):
    """The inference side of the data plane."""

    async def infer(
        self,
        model: str,
        version: str | None,
        request: PredictRequest,
        *,
        on_intermediate: Callable[[PredictResponse], None] | None = None,
    ) -> PredictResponse:
        """Run one request on the model version (default when ``None``)."""
        ...

    def healthy(self) -> bool:
        """Whether every model's default version has its minimum of healthy workers."""
        ...

    def describe(
        self, model: str, version: str | None, *, all_versions: bool = False
    ) -> list[dict[str, Any]]:
        """TorchServe's describe JSON; raises ``ModelNotFound``/``ModelVersionNotFound``."""
        ...


class ManagementPlane(InferencePlane, Protocol):
    """The management side of the data plane."""

    async def register(self, req: RegisterRequest) -> ManagementResult:
        """Register a model (``req`` fields ``None`` = not given)."""
        ...

    async def scale(
        self,
        model: str,
        version: str | None,
        min_worker: int,
        max_worker: int | None,
        synchronous: bool,
    ) -> ManagementResult:
        """Scale a model version's workers."""
        ...

    async def describe_customized(self, model: str, version: str | None) -> list[dict[str, Any]]:
        """Describe with the handler's ``describe_handle`` output (``customizedMetadata``)."""
        ...

    def list_models(self, limit: int, next_page_token: int) -> dict[str, Any]:
        """``{"models": [...], "nextPageToken": "..."}`` (TorchServe's list shape)."""
        ...

    async def unregister(self, model: str, version: str | None) -> ManagementResult:
        """Unregister a model version (the default when ``None``)."""
        ...

    def set_default(self, model: str, version: str) -> ManagementResult:
        """Make ``version`` the default version."""
        ...

    def model_ready(self, model: str) -> bool:
        """Whether the model has at least one worker ready (KServe v1 readiness)."""
        ...
