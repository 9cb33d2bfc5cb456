"""What the data plane reports to, and how a worker's answer becomes its value.

Split from ``dataplane.py`` to keep it small: the protocols of the hooks ``DataPlane`` calls
on every inference (accounting, per-version phase observers) and the small conversions from
a worker's ``PredictResponse`` to the protocol-neutral ``InferenceResult``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol

from torchwick.handlers.messages import PredictResponse
from torchwick.server.contracts import InferenceResult
from torchwick.server.errors import TorchwickError
from torchwick.server.registry import ModelVersionEntry
from torchwick.server.scheduling.reporting import BatchObserver

IntermediateResults = Callable[[InferenceResult], None]


class VersionObserver(BatchObserver, Protocol):
    """One version's phase histograms (``observability.phases.VersionSeries``)."""

    def request(self, seconds: float, /) -> None:
        """One inference call's arrival-to-answer time."""


#: ``(model, version, variant) -> observer`` (``PhaseHistograms.series``); ``variant`` is ""
#: until traffic policies route by variant.
PhaseSource = Callable[[str, str, str], VersionObserver | None]


class InferenceAccounting(Protocol):
    """Receives one record per inference call on a known model (``FrontendMetrics``)."""

    def observe_inference(self, model: str, version: str | None, latency_us: int) -> None:
        """Count one call; ``version`` is what the caller asked for (``None``: default)."""


def _result(response: PredictResponse, entry: ModelVersionEntry) -> InferenceResult:
    return InferenceResult(
        response.request_id,
        entry.name,
        entry.version,
        response.status,
        response.content_type,
        response.headers,
        response.body,
        response.reason,
        response.final,
    )


def _intermediate_sink(
    on_intermediate: IntermediateResults, entry: ModelVersionEntry
) -> Callable[[PredictResponse], None]:
    def push(response: PredictResponse) -> None:
        on_intermediate(_result(response, entry))

    return push


def _failure(response: PredictResponse | None, raised: BaseException | None) -> bool | None:
    """Whether an inference call failed on the server's side (status >= 500, or an error the
    table answers with one); ``None`` when it was cancelled (the caller went away: no
    outcome to count)."""
    if response is not None:
        return response.status >= 500
    if isinstance(raised, TorchwickError):
        return raised.status.http_status >= 500
    return None if isinstance(raised, asyncio.CancelledError) else True
