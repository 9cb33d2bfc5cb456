"""The data plane: what the REST and gRPC adapters call, and the only caller of the registry
and the scheduler.

Contract (docs/internal-contracts.md, "data plane"): every method raises only
``torchwick.server.errors`` types; management methods return a ``ManagementResult`` carrying
TorchServe's status code and text. ``infer`` is the hot path: one registry lookup, then the
version's batcher.

Health: ``healthy()`` is False while some model's default version has fewer ready workers than
its ``minWorkers`` and either its pool has given up (failed) or it has been short for longer
than its ``startupTimeout``. A pool that is still starting, or restarting a crashed worker
within that time, does not make the server unhealthy.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from torchwick.handlers.messages import PredictRequest, PredictResponse
from torchwick.server.errors import (
    BadRequest,
    InternalError,
    ModelLoadFailed,
    ModelNotFound,
    RequestTimeout,
    ServiceUnavailable,
    TorchwickError,
)
from torchwick.server.model_store import ModelStore
from torchwick.server.registry import (
    ManagementResult,
    ModelRegistry,
    ModelVersionEntry,
    PoolFactory,
    RegisterRequest,
    Router,
    admit,
    apply_default_versions,
    describe_entry,
    list_page,
    parse_load_models,
    snapshot_models,
    startup_workers,
)
from torchwick.server.scheduling import BatcherStats, IntermediateSink, no_worker_message
from torchwick.server.settings import Settings
from torchwick.server.workers.devices import usable_cpus

__all__ = ["DataPlane", "ManagementResult", "RegisterRequest"]

logger = logging.getLogger(__name__)

SCALING_IN_PROGRESS = "Workers scaling in progress..."
PROCESSING_UPDATES = "Processing worker updates..."


def _describe_unavailable(model: str) -> ServiceUnavailable:
    return ServiceUnavailable(
        f'Model "{model}" has no worker to serve describe request. '
        "Please use scale workers API to add workers."
    )


class DataPlane:
    """Models, their versions, workers and queues, behind the management and inference APIs.

    ``supervisor`` creates one worker pool per model version (and counts the GPUs). ``clock``
    (monotonic seconds) drives queue timing and health. ``model_store``, ``router`` and
    ``cpu_count`` are injectable; by default they come from ``settings`` and the machine.
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
    ) -> None:
        self._settings = settings
        self._pools = supervisor
        self._clock = clock
        self._store = model_store or ModelStore(settings)
        self._registry = ModelRegistry(router)
        self._cpu_count = cpu_count
        self._monitor_interval = monitor_interval_s
        self._monitor: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------------------ inference
    async def infer(
        self,
        model: str,
        version: str | None,
        request: PredictRequest,
        *,
        on_intermediate: IntermediateSink | None = None,
    ) -> PredictResponse:
        """Route to the version (the router's choice when ``None``), queue, await the answer.

        Cancelling the call while the request is queued removes it before it runs. Raises
        ``ModelNotFound``, ``ModelVersionNotFound``, ``ServiceUnavailable``, ``WorkerDied``,
        ``ResponseTimeout``; handler-chosen statuses come back inside the response.
        """
        entry = self._registry.route(model, version, request)
        try:
            return await entry.batcher.infer(request, on_intermediate)
        except ServiceUnavailable:
            if version is None:
                raise
            raise ServiceUnavailable(no_worker_message(model, version)) from None

    # ------------------------------------------------------------------------------ register
    async def register(self, req: RegisterRequest) -> ManagementResult:
        """Fetch, check and extract the archive, register the version, start its workers.

        200 with 0 workers or when all started (synchronous), 206 when fewer started, 202 when
        not synchronous. Raises ``BadRequest``/``InvalidArchive``/``DownloadFailed`` (400),
        ``ModelNotFound`` (404), ``Conflict`` (409), ``ModelLoadFailed`` (500: the version is
        unregistered again and the cause is logged).
        """
        entry = await self._admit(req, None)
        return await self._start(entry, req.synchronous)

    async def _admit(self, req: RegisterRequest, workers: int | None) -> ModelVersionEntry:
        self._ensure_monitor()
        source = await self._store.resolve(req.url)
        downloaded = self._store.downloaded_path(source)
        try:
            prepared = await self._store.prepare(source)
        except BaseException:
            self._store.discard(None, downloaded)
            raise
        try:
            entry = admit(
                request=req,
                prepared=prepared,
                settings=self._settings,
                registry=self._registry,
                pools=self._pools,
                clock=self._clock,
                startup_workers=workers,
            )
        except BaseException:
            self._store.discard(prepared.workdir, downloaded)
            raise
        entry.short_since = self._clock()
        return entry

    async def _start(self, entry: ModelVersionEntry, synchronous: bool) -> ManagementResult:
        spec = entry.spec
        wanted = spec.min_workers
        async with entry.lock:
            if wanted == 0:
                return ManagementResult(
                    200,
                    f'Model "{spec.name}" Version: {spec.version} registered with 0 initial '
                    "workers. Use scale workers API to add workers for the model.",
                )
            try:
                running = await _scale_bounded(entry, wanted, synchronous)
            except Exception as error:
                logger.error(
                    "model %s version %s: workers failed to start: %s (last worker error: %s)",
                    spec.name,
                    spec.version,
                    error,
                    entry.pool.last_error,
                )
                await self._teardown(entry, float(self._settings.unregister_model_timeout))
                raise ModelLoadFailed(
                    f"Failed to start workers for model {spec.name} version: {spec.version}"
                ) from error
        if not synchronous:
            return ManagementResult(202, PROCESSING_UPDATES)
        if running < wanted:
            return ManagementResult(206, SCALING_IN_PROGRESS)
        return ManagementResult(
            200,
            f'Model "{spec.name}" Version: {spec.version} registered with {wanted} initial workers',
        )

    async def load_startup_models(self) -> None:
        """Register ``load_models`` (``all``, ``file.mar``, ``name=url``) and wait for their
        workers. Each gets ``default_workers_per_model``, else one per GPU, else one per core
        (capped), unless the ``models=`` JSON or the archive's yaml says otherwise. Failures
        are logged and do not stop the others. Admission is sequential (so the first archive
        listed for a name becomes its default); workers start concurrently."""
        settings = self._settings
        wanted = parse_load_models(settings.load_models, self._store.discover)
        workers = startup_workers(
            settings.default_workers_per_model,
            self._pools.gpus.visible,
            self._cpu_count or usable_cpus(),
        )
        entries: list[ModelVersionEntry] = []
        for model in wanted:
            try:
                entries.append(await self._admit(RegisterRequest(model.url, model.name), workers))
            except TorchwickError as error:
                logger.error("startup model %s (%s) not loaded: %s", model.name, model.url, error)
        results = await asyncio.gather(
            *(self._start(e, True) for e in entries), return_exceptions=True
        )
        for entry, result in zip(entries, results, strict=True):
            if isinstance(result, BaseException):
                logger.error("startup model %s not loaded: %s", entry.name, result)
            else:
                logger.info("startup model %s: %s", entry.name, result.message)
        apply_default_versions(self._registry, self._settings.models)

    # --------------------------------------------------------------------------------- scale
    async def scale(
        self,
        model: str,
        version: str | None,
        min_worker: int,
        max_worker: int | None,
        synchronous: bool,
    ) -> ManagementResult:
        """Set the version's workers to ``min_worker`` (``max_worker`` defaults to it).

        202 when not synchronous; 200 "Workers scaled to N ..." or 206 when synchronous.
        Raises ``BadRequest`` for negative counts (TorchServe answers 500) or max < min,
        the 404s, ``ModelLoadFailed`` when no worker could start.
        """
        if min_worker < 0 or (max_worker is not None and max_worker < 0):
            raise BadRequest("min_worker and max_worker must not be negative")
        max_worker = min_worker if max_worker is None else max_worker
        if max_worker < min_worker:
            raise BadRequest("max_worker cannot be less than min_worker.")
        entry = self._registry.get(model, version)
        async with entry.lock:
            entry.spec = replace(entry.spec, min_workers=min_worker, max_workers=max_worker)
            entry.short_since = self._clock()
            try:
                running = await _scale_bounded(entry, min_worker, synchronous)
            except TorchwickError as error:
                logger.error("scaling %s to %d failed: %s", entry.name, min_worker, error)
                raise
            finally:
                if min_worker == 0:  # nothing will ever serve what is still queued
                    entry.batcher.fail_pending(ServiceUnavailable(no_worker_message(model)))
        if not synchronous:
            return ManagementResult(202, PROCESSING_UPDATES)
        if running < min_worker:
            return ManagementResult(206, SCALING_IN_PROGRESS)
        suffix = f", version: {version}" if version is not None else ""
        return ManagementResult(200, f"Workers scaled to {min_worker} for model: {model}{suffix}")

    # ------------------------------------------------------------------------------ describe
    def describe(
        self, model: str, version: str | None, *, all_versions: bool = False
    ) -> list[dict[str, Any]]:
        """TorchServe's describe array: one version, or every version with ``all_versions``."""
        if all_versions:
            entries = list(self._registry.model(model).versions.values())
        else:
            entries = [self._registry.get(model, version)]
        return [describe_entry(entry) for entry in entries]

    async def describe_customized(self, model: str, version: str | None) -> list[dict[str, Any]]:
        """Describe plus the handler's ``customizedMetadata`` (a DESCRIBE request through one
        worker; 503 when the version has no ready worker)."""
        entry = self._registry.get(model, version)
        pool = entry.pool
        if pool.target <= 0 or pool.ready_count <= 0:
            raise _describe_unavailable(model)
        request = PredictRequest(request_id=uuid.uuid4().hex, headers=(("describe", "True"),))
        lease = await pool.acquire()
        response = await pool.run_describe(lease, request)
        if response.status >= 400:
            raise InternalError(response.reason or "Describe failed in the handler")
        try:
            metadata = json.loads(response.body) if response.body else {}
        except (ValueError, UnicodeDecodeError):
            metadata = {}
        return [describe_entry(entry, customized=metadata if isinstance(metadata, dict) else {})]

    def list_models(self, limit: int, next_page_token: int) -> dict[str, Any]:
        """``GET /models``: default versions sorted by name, paged (TorchServe's quirks)."""
        return list_page(self._registry.defaults(), limit, next_page_token)

    # ---------------------------------------------------------------------------- unregister
    async def unregister(self, model: str, version: str | None) -> ManagementResult:
        """Stop the version's workers and forget it. 403 for the default version while others
        exist; ``RequestTimeout`` (408) when cleanup exceeds ``unregister_model_timeout``."""
        entry = self._registry.get(model, version)
        self._registry.check_removable(entry)
        async with entry.lock:
            if self._registry.get(model, entry.version) is not entry:  # 404 if already gone
                raise ModelNotFound(f"Model not found: {model}")
            self._registry.check_removable(entry)
            done = await self._teardown(entry, float(self._settings.unregister_model_timeout))
        if not done:
            raise RequestTimeout(f"Timed out while cleaning resources: {model}")
        return ManagementResult(200, f'Model "{model}" unregistered')

    async def _teardown(self, entry: ModelVersionEntry, timeout: float) -> bool:
        """Forget ``entry``, fail its queue, let running batches finish for up to half of
        ``timeout``, then stop its workers within the rest. False when time ran out (the
        pool keeps closing in the background)."""
        self._registry.remove(entry, force=True)
        entry.batcher.stop(ServiceUnavailable(no_worker_message(entry.name)))
        deadline = self._clock() + timeout
        await entry.batcher.drain(timeout / 2)
        closing = asyncio.ensure_future(entry.pool.close())
        try:
            await asyncio.wait_for(asyncio.shield(closing), max(0.0, deadline - self._clock()))
        except TimeoutError:
            logger.error(
                "workers of %s %s still stopping after %g s", entry.name, entry.version, timeout
            )
            return False
        finally:
            self._store.discard(entry.workdir, entry.downloaded)
        return True

    def set_default(self, model: str, version: str) -> ManagementResult:
        """Make ``version`` the default of ``model``."""
        self._registry.set_default(model, version)
        return ManagementResult(
            200, f'Default version successfully updated for model "{model}" to "{version}"'
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

    def _observe(self, entry: ModelVersionEntry, now: float) -> bool:
        pool, spec = entry.pool, entry.spec
        if pool.ready_count >= spec.min_workers:
            entry.short_since = None
            return True
        if entry.short_since is None:
            entry.short_since = now
        return not pool.failed and now - entry.short_since <= spec.startup_timeout

    def model_ready(self, model: str) -> bool:
        """True when the default version has at least one ready worker (404 if unknown)."""
        return self._registry.get(model).pool.ready_count > 0

    def batcher_stats(self) -> list[tuple[str, str, BatcherStats]]:
        """(model, version, queue counters) for every registered version, for metrics."""
        return [(e.name, e.version, e.batcher.stats()) for e in self._registry.entries()]

    def snapshot(self) -> dict[str, dict[str, dict[str, Any]]]:
        """Registered models in the ``models=`` / ``model_snapshot`` JSON shape."""
        return snapshot_models(self._registry)

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
        timeout = float(self._settings.unregister_model_timeout)
        entries = list(self._registry.entries())
        await asyncio.gather(*(self._teardown(e, timeout) for e in entries))
        self._store.close()


async def _scale_bounded(entry: ModelVersionEntry, target: int, wait: bool) -> int:
    """``pool.scale`` whose wait is bounded by the version's startup timeout.

    A model that loads and then keeps crashing never reaches ``target`` ready workers nor the
    failed state; a synchronous caller then gets the ready count so far (206) instead of
    waiting forever. The pool keeps converging in the background.
    """
    scaling = asyncio.ensure_future(entry.pool.scale(target, wait=wait))
    try:
        return await asyncio.wait_for(asyncio.shield(scaling), entry.spec.startup_timeout)
    except TimeoutError:
        # Consume the eventual outcome so a late failure is not reported as unretrieved.
        scaling.add_done_callback(lambda task: task.cancelled() or task.exception())
        return entry.pool.ready_count
