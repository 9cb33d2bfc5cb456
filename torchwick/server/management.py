"""Model management on the data plane: register, scale, unregister, set the default.

Split from ``dataplane.py`` to keep each module small; ``DataPlane`` inherits these methods,
and they use its registry, store, pools, clock and settings. Every method raises only
``torchwick.server.errors`` types and returns an ``OperationResult`` (an ``Outcome`` and
TorchServe's text for it); the REST adapter turns the outcome into 200/202/206, the gRPC
adapter into its own answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import replace

from torchwick.server.contracts import OperationResult, Outcome
from torchwick.server.errors import (
    BadRequest,
    ModelLoadFailed,
    ModelNotFound,
    RequestTimeout,
    ServiceUnavailable,
    TorchwickError,
)
from torchwick.server.model_store import ModelStore, PreparedModel
from torchwick.server.registry import (
    ModelRegistry,
    ModelVersionEntry,
    PoolFactory,
    RegisterRequest,
    StartupModel,
    admit,
    apply_default_versions,
    parse_load_models,
    startup_workers,
)
from torchwick.server.scheduling import no_worker_message
from torchwick.server.settings import Settings
from torchwick.server.store.py_deps import install_requirements, requirements_path
from torchwick.server.traffic import TrafficEngine
from torchwick.server.workers.devices import usable_cpus

logger = logging.getLogger("torchwick.server.dataplane")

#: How often a version being removed checks whether its queue has drained.
_DRAIN_POLL_S = 0.02
SCALING_IN_PROGRESS = "Workers scaling in progress..."
PROCESSING_UPDATES = "Processing worker updates..."
CRASH_LOOPING_MESSAGE = "Workers failed to load; retrying with backoff (state CRASH_LOOPING)"


class ModelManagement:
    """The management half of ``DataPlane`` (see the module docs)."""

    _settings: Settings
    _pools: PoolFactory
    _clock: Callable[[], float]
    _store: ModelStore
    _registry: ModelRegistry
    _cpu_count: int | None
    _startup_pending: bool
    traffic: TrafficEngine
    #: Called after each successful management change (the config snapshot writer).
    models_changed: Callable[[], object] | None = None

    def _changed(self) -> None:
        if self.models_changed is not None:
            self.models_changed()

    def _ensure_monitor(self) -> None:
        raise NotImplementedError  # provided by DataPlane

    # ------------------------------------------------------------------------------ register
    async def register(self, req: RegisterRequest) -> OperationResult:
        """Fetch, check and extract the archive, register the version, start its workers.

        ``DONE`` with 0 workers or when all started (synchronous), ``PARTIAL`` when fewer
        started, ``ACCEPTED`` when not synchronous. Raises ``BadRequest``/``InvalidArchive``/
        ``DownloadFailed`` (400),
        ``ModelNotFound`` (404), ``Conflict`` (409), ``ModelLoadFailed`` (500: the version is
        unregistered again and the cause is logged).
        """
        entry = await self._admit(req, None)
        result = await self._start(entry, req.synchronous)
        self.traffic.offer_archive_policy(entry)
        self._changed()
        return result

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
            extra_paths = await self._install_py_deps(req, prepared)
            entry = admit(
                request=req,
                prepared=prepared,
                settings=self._settings,
                registry=self._registry,
                pools=self._pools,
                clock=self._clock,
                startup_workers=workers,
                extra_paths=extra_paths,
            )
        except BaseException:
            self._store.discard(prepared.workdir, downloaded)
            raise
        entry.short_since = self._clock()
        return entry

    async def _install_py_deps(
        self, req: RegisterRequest, prepared: PreparedModel
    ) -> tuple[str, ...]:
        """With ``install_py_dep_per_model``, pip-install the archive's requirements file into
        its private folder; the folder for the workers' path (``store/py_deps.py``)."""
        manifest = prepared.extracted.manifest
        requirements = requirements_path(prepared.extracted.root, manifest.model.requirements_file)
        if not self._settings.install_py_dep_per_model or requirements is None:
            return ()
        name = req.model_name or manifest.model.model_name or requirements.parent.name
        target = await install_requirements(name, requirements, prepared.workdir)
        return (str(target),)

    async def _start(
        self, entry: ModelVersionEntry, synchronous: bool, *, keep: bool = False
    ) -> OperationResult:
        spec = entry.spec
        wanted = spec.min_workers
        async with entry.lock:
            if wanted == 0:
                return OperationResult(
                    Outcome.DONE,
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
                if keep:  # a startup model stays registered; its pool keeps retrying
                    return OperationResult(Outcome.PARTIAL, CRASH_LOOPING_MESSAGE)
                await self._teardown(entry, float(self._settings.unregister_model_timeout))
                raise ModelLoadFailed(
                    f"Failed to start workers for model {spec.name} version: {spec.version}"
                ) from error
        if not synchronous:
            return OperationResult(Outcome.ACCEPTED, PROCESSING_UPDATES)
        if running < wanted:
            return OperationResult(Outcome.PARTIAL, SCALING_IN_PROGRESS)
        return OperationResult(
            Outcome.DONE,
            f'Model "{spec.name}" Version: {spec.version} registered with {wanted} initial workers',
        )

    async def load_startup_models(self) -> None:
        """Register ``load_models`` (``all``, ``file.mar``, ``name=url``) and wait for their
        workers. Each gets ``default_workers_per_model``, else one per GPU, else one per core
        (capped), unless the ``models=`` JSON or the archive's yaml says otherwise. Failures
        are logged and do not stop the others. Admission is sequential (so the first archive
        listed for a name becomes its default); workers start concurrently. A model whose
        workers fail to load stays registered (``CRASH_LOOPING`` in describe, ``/ping``
        unhealthy) and its workers keep being retried with backoff."""
        try:
            await self._load_startup_models()
        finally:
            # Health may now be judged on the models (``/ping`` was "starting" until here).
            self._startup_pending = False

    async def _load_startup_models(self) -> None:
        settings = self._settings
        if settings.restore_models:  # from a config snapshot: replaces load_models
            wanted = [StartupModel(name, url) for name, url in settings.restore_models]
        else:
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
            *(self._start(e, True, keep=True) for e in entries), return_exceptions=True
        )
        for entry, result in zip(entries, results, strict=True):
            if isinstance(result, BaseException):
                logger.error("startup model %s not loaded: %s", entry.name, result)
            else:
                logger.info("startup model %s: %s", entry.name, result.message)
        apply_default_versions(self._registry, self._settings.models)
        for entry in entries:
            if entry.name in self._registry:
                self.traffic.offer_archive_policy(entry)
        self.traffic.apply_pending()

    # --------------------------------------------------------------------------------- scale
    async def scale(
        self,
        model: str,
        version: str | None,
        min_worker: int,
        max_worker: int | None,
        synchronous: bool,
    ) -> OperationResult:
        """Set the version's workers to ``min_worker`` (``max_worker`` defaults to it).

        ``ACCEPTED`` when not synchronous; ``DONE`` ("Workers scaled to N ...") or ``PARTIAL``
        when synchronous.
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
        self._changed()
        if not synchronous:
            return OperationResult(Outcome.ACCEPTED, PROCESSING_UPDATES)
        if running < min_worker:
            return OperationResult(Outcome.PARTIAL, SCALING_IN_PROGRESS)
        suffix = f", version: {version}" if version is not None else ""
        return OperationResult(
            Outcome.DONE, f"Workers scaled to {min_worker} for model: {model}{suffix}"
        )

    # ---------------------------------------------------------------------------- unregister
    async def unregister(
        self, model: str, version: str | None, *, force: bool = False
    ) -> OperationResult:
        """Stop the version's workers and forget it. 403 for the default version while others
        exist, and for a version the model's traffic policy sends traffic to unless ``force``
        (the policy is then dropped); ``RequestTimeout`` (408) when cleanup exceeds
        ``unregister_model_timeout``."""
        entry = self._registry.get(model, version)
        self._registry.check_removable(entry)
        if not force:
            self.traffic.check_removable(model, entry.version)
        async with entry.lock:
            if self._registry.get(model, entry.version) is not entry:  # 404 if already gone
                raise ModelNotFound(f"Model not found: {model}")
            self._registry.check_removable(entry)
            timeout = float(self._settings.unregister_model_timeout)
            done = await self._teardown(entry, timeout, drain_queue=True)
        self._changed()
        if not done:
            raise RequestTimeout(f"Timed out while cleaning resources: {model}")
        return OperationResult(Outcome.DONE, f'Model "{model}" unregistered')

    async def _teardown(
        self, entry: ModelVersionEntry, timeout: float, *, drain_queue: bool = False
    ) -> bool:
        """Forget ``entry``, fail its queue, let running batches finish for up to half of
        ``timeout``, then stop its workers within the rest. False when time ran out (the
        pool keeps closing in the background). With ``drain_queue`` (an unregister) the
        requests already queued are served first, for up to half of ``timeout`` (only what is
        still queued then fails), and running batches get half of what is left."""
        self._registry.remove(entry, force=True)
        self.traffic.forget_version(entry.name, entry.version)
        deadline = self._clock() + timeout
        if drain_queue and entry.batcher.pending:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(_queue_empty(entry), timeout / 2)
        entry.batcher.stop(ServiceUnavailable(no_worker_message(entry.name)))
        await entry.batcher.drain(max(0.0, deadline - self._clock()) / 2)
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

    def set_default(self, model: str, version: str) -> OperationResult:
        """Make ``version`` the default of ``model``."""
        self._registry.set_default(model, version)
        self._changed()
        return OperationResult(
            Outcome.DONE, f'Default version successfully updated for model "{model}" to "{version}"'
        )


async def _queue_empty(entry: ModelVersionEntry) -> None:
    """Return once the version's queue is empty. Polled: nothing new can join it (the version
    is no longer routable) and this runs only while a version is being removed."""
    while entry.batcher.pending and not entry.pool.failed:
        await asyncio.sleep(_DRAIN_POLL_S)


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
