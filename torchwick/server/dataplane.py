"""The data plane: what every protocol adapter calls, and the only caller of the registry
and the scheduler.

Contract (docs/internal-contracts.md, "data plane"): typed values in and out
(``torchwick.server.contracts``), nothing HTTP- or gRPC-shaped; every method raises only
``torchwick.server.errors`` types. ``infer`` is the hot path: one registry lookup, then the
version's batcher. Management calls (register, scale, unregister, set-default) live in
``management.py`` and are inherited.

Accounting lives here, below the adapters, so REST, gRPC and the Open Inference Protocol count
the same way: every inference call on a known model is counted with its latency from
``InferenceRequest.received_at`` (unknown names are client-chosen and never counted, so
clients cannot mint series). With ``phases``, the served version's phase histograms are fed:
the request latency here, queue and batch timing in its batcher (``Batcher.observer``).

Health: ``healthy()`` is False while some model's default version has fewer ready workers than
its ``minWorkers`` and either its pool has given up (failed) or it has been short for longer
than its ``startupTimeout``. A pool that is still starting, or restarting a crashed worker
within that time, does not make the server unhealthy. ``ready()`` (``/ping``, OIP
``/v2/health/ready``, gRPC ``ServerReady``) is also False until the startup models were tried.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from torchwick.handlers.messages import PredictRequest, PredictResponse
from torchwick.server.contracts import (
    InferenceRequest,
    InferenceResult,
    ModelMetadata,
    ModelPage,
    ModelStatus,
)
from torchwick.server.errors import (
    InternalError,
    ServiceUnavailable,
    TorchwickError,
    error_class_for_http,
)
from torchwick.server.model_store import ModelStore
from torchwick.server.registry import (
    ModelRegistry,
    ModelVersionEntry,
    PoolFactory,
    RegisterRequest,
    Router,
    list_page,
    model_status,
    snapshot_models,
)
from torchwick.server.registry.metadata import declared_platform, declared_tensors
from torchwick.server.scheduling import BatcherStats, no_worker_message
from torchwick.server.settings import Settings
from torchwick.server.traffic import TrafficEngine

from .management import ModelManagement
from .observability.served import SERVED
from .plane_hooks import (
    InferenceAccounting,
    IntermediateResults,
    PhaseSource,
    VersionObserver,
    _failure,
    _intermediate_sink,
    _result,
)

if TYPE_CHECKING:
    from .observability.tracing import Tracing

__all__ = ["DataPlane", "InferenceAccounting", "RegisterRequest"]

logger = logging.getLogger(__name__)

_EXPLAIN = ("explain", "True")
_PREDICT = ("explain", "False")


def _describe_unavailable(model: str) -> ServiceUnavailable:
    return ServiceUnavailable(
        f'Model "{model}" has no worker to serve describe request. '
        "Please use scale workers API to add workers."
    )


class DataPlane(ModelManagement):
    """Models, their versions, workers and queues, behind every protocol adapter.

    ``supervisor`` creates one worker pool per model version (and counts the GPUs). ``clock``
    (monotonic seconds) drives queue timing and health. ``model_store``, ``router`` and
    ``cpu_count`` are injectable; by default they come from ``settings`` and the machine.
    ``accounting`` receives one record per inference call (see the module docs).
    """

    def __init__(
        self,
        settings: Settings,
        supervisor: PoolFactory,
        *,
        clock: Callable[[], float] = time.monotonic,
        model_store: ModelStore | None = None,
        router: Router | None = None,
        cpu_count: int | None = None,
        monitor_interval_s: float = 1.0,
        accounting: InferenceAccounting | None = None,
        phases: PhaseSource | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        self._settings = settings
        self._pools = supervisor
        self._clock = clock
        self._store = model_store or ModelStore(settings)
        self._registry = ModelRegistry(router)
        self._cpu_count = cpu_count
        self._monitor_interval = monitor_interval_s
        self._monitor: asyncio.Task[None] | None = None
        self._accounting = accounting
        self._phases = phases
        self._tracing = tracing
        #: (model, version) -> its observer, also installed on the version's batcher.
        self._observers: dict[tuple[str, str], VersionObserver] = {}
        self._startup_pending = True
        #: Traffic policies (docs/traffic.md); those in ``models=`` wait for their versions.
        self.traffic = TrafficEngine(self._registry, clock)
        self.traffic.on_change = self._changed
        for name, versions in settings.models.items():
            for options in versions.values():
                if "traffic" in options:
                    self.traffic.configure(name, options["traffic"], "models")

    # ------------------------------------------------------------------------------ inference
    async def infer(
        self,
        model: str,
        version: str | None,
        request: InferenceRequest,
        *,
        on_intermediate: IntermediateResults | None = None,
    ) -> InferenceResult:
        """Route to the version (the router's choice when ``None``), queue, await the answer.

        Cancelling the call while the request is queued removes it before it runs. Raises
        ``ModelNotFound``, ``ModelVersionNotFound``, ``ServiceUnavailable``, ``WorkerDied``,
        ``ResponseTimeout``, and for a failure the worker reported without a body of its own
        (out of memory, an oversized response, a model that is not loaded) the table's error
        for that status (``OutOfResources`` for 507). A handler's chosen status comes back
        inside the result, with the handler's body.
        """
        routed = self.traffic.route(model, version, request)
        entry = routed.entry
        SERVED.set((entry.name, entry.version))
        predict = PredictRequest(
            request.request_id,
            (
                *request.metadata,
                _EXPLAIN if request.explain else _PREDICT,
                ("url_path", request.path_suffix),
            ),
            request.inputs,
        )
        sink = None
        if on_intermediate is not None:
            sink = _intermediate_sink(on_intermediate, entry)
        # The mirror's task first runs once this coroutine suspends, i.e. after the primary
        # request is queued below; the caller never awaits it.
        shadow = self.traffic.mirror(routed, predict)
        started_s = self._clock()
        response: PredictResponse | None = None
        observer = None
        if self._phases is not None:
            observer = self._observers.get((entry.name, entry.version))
            if observer is None or entry.batcher.observer is not observer:
                observer = self._observe_version(entry)
        tracing = self._tracing
        trace = None
        if tracing is not None:
            entry.batcher.tracer = tracing
            trace = tracing.start(
                entry.name, request.request_id, request.metadata, request.received_at
            )
        try:
            if trace is None:
                response = await entry.batcher.infer(predict, sink)
            else:
                response = await entry.batcher.infer(predict, sink, trace)
        except ServiceUnavailable:
            if version is None:
                raise
            raise ServiceUnavailable(no_worker_message(model, version)) from None
        finally:
            latency_s = self._clock() - started_s
            raised = sys.exc_info()[1]
            failure = _failure(response, raised)
            if failure is not None:
                self.traffic.record(routed, failure, latency_s)
            if shadow is not None:
                good = response is not None and response.status < 400
                shadow.primary_done(response.body if good and response else None, latency_s)
            if tracing is not None and trace is not None:
                if response is not None:
                    status = response.status
                elif isinstance(raised, TorchwickError):
                    status = raised.status.http_status
                else:
                    status = 500
                tracing.finish(trace, entry.version, status)
            if self._accounting is not None or observer is not None:
                started = request.received_at or 0.0
                elapsed = time.perf_counter() - started if started else 0.0
                if self._accounting is not None:
                    self._accounting.observe_inference(model, version, int(elapsed * 1_000_000))
                if observer is not None:
                    observer.request(elapsed)
        if response.status >= 400 and not response.body:
            error = error_class_for_http(response.status)
            raise error(response.reason or f"Inference failed with status {response.status}")
        return _result(response, entry)

    def _observe_version(self, entry: ModelVersionEntry) -> VersionObserver | None:
        # First request of a version (or of a re-registered one with a new batcher).
        if self._phases is None:
            return None
        observer = self._phases(entry.name, entry.version, "")
        if observer is None:
            return None
        self._observers[(entry.name, entry.version)] = observer
        entry.batcher.observer = observer
        return observer

    # ------------------------------------------------------------------------------ describe
    def describe(
        self, model: str, version: str | None, *, all_versions: bool = False
    ) -> list[ModelStatus]:
        """One version's status, or every version's with ``all_versions``."""
        if all_versions:
            entries = list(self._registry.model(model).versions.values())
        else:
            entries = [self._registry.get(model, version)]
        return [self._status(entry) for entry in entries]

    def _status(self, entry: ModelVersionEntry, customized: Any = None) -> ModelStatus:
        default = self._registry.model(entry.name).default_version == entry.version
        status = model_status(entry, is_default=default, customized=customized)
        traffic = self.traffic.policy_status(entry.name)
        return replace(status, traffic=traffic) if traffic["policy"] is not None else status

    async def describe_customized(self, model: str, version: str | None) -> list[ModelStatus]:
        """Describe plus the handler's own metadata (a DESCRIBE request through one worker;
        ``ServiceUnavailable`` when the version has no ready worker)."""
        entry = self._registry.get(model, version)
        pool = entry.pool
        if pool.target <= 0 or pool.ready_count <= 0:
            raise _describe_unavailable(model)
        request = PredictRequest(request_id=_describe_id(), headers=(("describe", "True"),))
        lease = await pool.acquire()
        response = await pool.run_describe(lease, request)
        if response.status >= 400:
            raise InternalError(response.reason or "Describe failed in the handler")
        try:
            metadata = json.loads(response.body) if response.body else {}
        except (ValueError, UnicodeDecodeError):
            metadata = {}
        return [self._status(entry, metadata if isinstance(metadata, dict) else {})]

    def list_models(self, limit: int, offset: int) -> ModelPage:
        """Default versions sorted by name, paged (TorchServe's clamping rules)."""
        return list_page(self._registry.defaults(), limit, offset)

    def metadata(self, model: str, version: str | None = None) -> ModelMetadata:
        """The model's versions, platform and declared inputs/outputs (from the version's
        ``model-config.yaml`` ``metadata`` section; see ``registry/metadata.py``). Raises the
        404s, and ``BadRequest`` for a malformed declaration."""
        entry = self._registry.get(model, version)
        config = entry.spec.yaml_config
        versions = tuple(self._registry.model(model).versions)
        return ModelMetadata(
            name=entry.name,
            versions=versions,
            platform=declared_platform(config),
            inputs=declared_tensors(config, "inputs"),
            outputs=declared_tensors(config, "outputs"),
        )

    # -------------------------------------------------------------------------------- health
    def healthy(self) -> bool:
        """False while a default version is short of ``minWorkers`` ready workers and its
        pool failed or has been short for more than its ``startupTimeout``."""
        now = self._clock()
        ok = True
        for entry in self._registry.defaults():
            if not self._observe(entry, now):
                ok = False
        return ok

    def ready(self) -> bool:
        """Startup models were tried and the server is ``healthy()`` (``/ping``)."""
        return not self._startup_pending and self.healthy()

    def _observe(self, entry: ModelVersionEntry, now: float) -> bool:
        pool, spec = entry.pool, entry.spec
        if pool.ready_count >= spec.min_workers:
            entry.short_since = None
            return True
        if entry.short_since is None:
            entry.short_since = now
        return not pool.failed and now - entry.short_since <= spec.startup_timeout

    def model_ready(self, model: str, version: str | None = None) -> bool:
        """True when the version (default: the default one) has a ready worker (404s if
        unknown)."""
        return self._registry.get(model, version).pool.ready_count > 0

    def batcher_stats(self) -> list[tuple[str, str, BatcherStats]]:
        """(model, version, queue counters) for every registered version, for metrics."""
        return [(e.name, e.version, e.batcher.stats()) for e in self._registry.entries()]

    def snapshot(self) -> dict[str, dict[str, dict[str, Any]]]:
        """Registered models in the ``models=`` / ``model_snapshot`` JSON shape (with each
        model's traffic policy on its default version's entry)."""
        return snapshot_models(self._registry, self.traffic.snapshot)

    # ----------------------------------------------------------------------------- lifecycle
    def _ensure_monitor(self) -> None:
        if self._monitor is None:
            self._monitor = asyncio.get_running_loop().create_task(self._watch())

    async def _watch(self) -> None:
        """Keep health timing current, and fail requests queued for a pool that gave up
        (nothing else would ever answer them)."""
        while True:
            await asyncio.sleep(self._monitor_interval)
            now = self._clock()
            self.traffic.tick()
            for entry in self._registry.entries():
                self._observe(entry, now)
                pool = entry.pool
                if pool.failed and pool.ready_count <= 0 and entry.batcher.pending:
                    entry.batcher.fail_pending(ServiceUnavailable(no_worker_message(entry.name)))

    async def close(self) -> None:
        """Stop every version's workers and remove all private files (not the supervisor)."""
        if self._monitor is not None:
            self._monitor.cancel()
            await asyncio.gather(self._monitor, return_exceptions=True)
            self._monitor = None
        await self.traffic.close()
        timeout = float(self._settings.unregister_model_timeout)
        entries = list(self._registry.entries())
        await asyncio.gather(*(self._teardown(e, timeout) for e in entries))
        self._store.close()


def _describe_id() -> str:
    return uuid.uuid4().hex
