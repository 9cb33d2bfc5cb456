"""The server-wide owner of worker processes: ids, sockets, GPUs, thread budgets, the model log.

One ``WorkerSupervisor`` per server. Pools (one per model version) ask it, through the
``SlotProvider`` protocol, for a slot (a worker id and a GPU, both kept across restarts) and
for each new worker process (socket path, spawn token, environment, thread budget). The
worker's LOAD frame is derived from the version's ``ModelVersionConfig`` plus that worker's GPU
and thread budget, in ``new_worker`` only. Everything it touches on disk, the private socket
folder, is created on first use and removed by ``close``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import secrets
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torchwick
from torchwick.handlers.messages import LoadSpec, MetricRecord
from torchwick.server.model_version import ModelVersionConfig
from torchwick.server.settings import Settings

from .backoff import BackoffPolicy
from .devices import (
    GpuAllocator,
    count_driver_gpus,
    thread_budget,
    torch_gpu_count_if_loaded,
    usable_cpus,
    visible_gpu_count,
    workers_sharing_gpu,
)
from .ipc import TOKEN_ENV
from .model_log import ModelLog
from .pool import WorkerPool
from .process import TimingsHandler, WorkerProcess
from .spares import WarmProfile, WarmSpares
from .threads import omp_wait_environment

logger = logging.getLogger(__name__)

#: TorchServe numbers workers from its first worker port; describe shows these ids.
FIRST_WORKER_ID = 9000
#: Unix socket paths are limited to ~107 bytes; fall back to /tmp when TMPDIR is deeper.
_MAX_SOCKET_DIR = 80

#: ``(model_name, model_version, records)`` for metrics a handler emitted.
MetricSink = Callable[[str, str, Sequence[MetricRecord]], None]
#: Gives the handler of one model version's worker timings (``FrontendMetrics.
#: worker_timings``), asked once per worker so that no label lookup happens per batch.
TimingsSink = Callable[[str, str], TimingsHandler | None]


def _log_metrics(model: str, version: str, records: Sequence[MetricRecord]) -> None:
    for record in records:
        logger.debug("metric %s/%s %s=%s%s", model, version, record.name, record.value, record.unit)


class WorkerSupervisor:
    """Starts and accounts for every worker of the server.

    ``gpu_count``/``cpu_count``/``environ`` override detection (for tests); ``clock`` and
    ``sleep`` drive heartbeats and restart backoff. ``on_metrics`` receives handler metrics
    (the default logs them at DEBUG); ``on_timings`` gives each worker its version's
    handler of the per-batch phase times (none: not measured); ``on_loaded`` receives each
    worker's name and seconds from spawn to loaded model. Server-wide supervision policy for
    every pool: restarts follow ``backoff`` (default: capped at ``worker_backoff_max_s``); a
    pool reports a crash loop after ``max_load_failures`` consecutive failed loads and keeps
    retrying; a stopped worker gets ``stop_grace_s`` to exit before it is killed. ``spares``
    holds the warm spare workers (``warm_workers``), started by ``start()`` and taken by
    ``new_worker`` when one fits.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        backoff: BackoffPolicy | None = None,
        max_load_failures: int = 5,
        stop_grace_s: float = 5.0,
        gpu_count: int | None = None,
        cpu_count: int | None = None,
        environ: Mapping[str, str] | None = None,
        on_metrics: MetricSink | None = None,
        on_timings: TimingsSink | None = None,
        on_loaded: Callable[[str, float], None] | None = None,
    ) -> None:
        self.settings = settings
        self._clock = clock
        self._sleep = sleep
        self._backoff = backoff or BackoffPolicy(cap_s=settings.worker_backoff_max_s)
        self._max_load_failures = max(1, max_load_failures)
        self._stop_grace_s = stop_grace_s
        self._gpu_count = gpu_count
        self._cpus = cpu_count if cpu_count is not None else usable_cpus()
        self._environ = environ
        self._on_metrics = on_metrics or _log_metrics
        self._on_timings = on_timings
        self._on_loaded = on_loaded
        self._next_id = FIRST_WORKER_ID
        self._pools: dict[str, WorkerPool] = {}
        self._live_slots = 0
        self._gpus: GpuAllocator | None = None
        self._socket_dir: Path | None = None
        self._model_log: ModelLog | None = None
        self._closed = False
        self.spares = WarmSpares(
            settings.warm_workers,
            self._new_spare,
            self._next_profile,
            backoff=self._backoff,
            spawn_timeout_s=float(settings.default_startup_timeout),
            stop_grace_s=stop_grace_s,
            clock=clock,
            sleep=sleep,
        )

    # ---- pools -------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the warm spare workers (``warm_workers``); the server calls it once it
        listens, so that the spares' torch imports do not delay its first answer."""
        if not self._closed:
            self.spares.start()

    def open_model_log(self) -> None:
        """Attach the model log's file handler now (otherwise it opens with the first worker),
        so lines logged before any worker exists (a per-model pip install) reach the file."""
        self._log()

    def create_pool(self, key: str, config: ModelVersionConfig) -> WorkerPool:
        """A new pool with target 0 for one model version; ``key`` must be unused.

        Raises ``RuntimeError`` once closed and ``ValueError`` for a key in use.
        """
        if self._closed:
            raise RuntimeError("the worker supervisor is closed")
        if key in self._pools:
            raise ValueError(f"a worker pool named {key!r} already exists")
        pool = WorkerPool(
            key,
            config,
            self,
            backoff=self._backoff,
            max_load_failures=self._max_load_failures,
            stop_grace_s=self._stop_grace_s,
            clock=self._clock,
            sleep=self._sleep,
        )
        self._pools[key] = pool
        return pool

    @property
    def pools(self) -> Mapping[str, WorkerPool]:
        """Open pools by key."""
        return self._pools

    def forget_pool(self, key: str) -> None:
        """Called by a closing pool."""
        self._pools.pop(key, None)

    async def close(self) -> None:
        """Close every pool (stopping its workers), then remove the socket folder."""
        self._closed = True
        await self.spares.close()
        await asyncio.gather(*(pool.close() for pool in list(self._pools.values())))
        if self._model_log is not None:
            self._model_log.close()
            self._model_log = None
        if self._socket_dir is not None:
            shutil.rmtree(self._socket_dir, ignore_errors=True)
            self._socket_dir = None

    # ---- slots (called by pools) -------------------------------------------------------------

    @property
    def gpus(self) -> GpuAllocator:
        """The GPU allocator (GPUs are counted on first use)."""
        if self._gpus is None:
            count = self._gpu_count
            if count is None:
                env = os.environ if self._environ is None else self._environ
                count = visible_gpu_count(count_driver_gpus(), env, self.settings.number_of_gpu)
                if count == 0 and self.settings.number_of_gpu != 0:
                    count = torch_gpu_count_if_loaded()
                    if self.settings.number_of_gpu is not None:
                        count = min(count, self.settings.number_of_gpu)
            elif self.settings.number_of_gpu is not None:
                count = min(count, max(0, self.settings.number_of_gpu))
            self._gpus = GpuAllocator(count)
        return self._gpus

    def open_slot(self, config: ModelVersionConfig, owner: str) -> tuple[int, int | None]:
        """A fresh worker id and the slot's GPU (``None`` for CPU)."""
        worker_id = self._next_id
        self._next_id += 1
        self._live_slots += 1
        return worker_id, self.gpus.assign(config.device_type, config.device_ids, owner)

    def close_slot(self, worker_id: int, gpu_id: int | None) -> None:
        """Return a slot's GPU and drop it from the thread budget's worker count."""
        self._live_slots = max(0, self._live_slots - 1)
        self.gpus.release(gpu_id)
        if self._socket_dir is not None:
            (self._socket_dir / f"{worker_id}.sock").unlink(missing_ok=True)
        # The next worker's thread budget may have grown: a spare made for the old one would
        # not fit it.
        self.spares.refresh()

    def threads_per_worker(self) -> int:
        """torch threads for a worker started now (``worker_threads``, else cores / workers)."""
        return thread_budget(self.settings.worker_threads, self._cpus, self._live_slots)

    def adaptive_threads(self) -> bool:
        """Whether workers may drop to one thread for tiny batches: only when the operator
        fixed no ``worker_threads``."""
        return self.settings.worker_threads <= 0

    def new_worker(
        self, config: ModelVersionConfig, worker_id: int, gpu_id: int | None
    ) -> WorkerProcess:
        """A not yet started worker process for slot ``worker_id`` of ``config``'s version.

        Its LOAD frame is ``config.load_spec`` with the slot's GPU and the thread budget of a
        worker started now.
        """
        spec = config.load_spec(
            gpu_id=gpu_id,
            threads=self.threads_per_worker(),
            adaptive_threads=self.adaptive_threads(),
            omp_spin_count=self.settings.worker_omp_spin_count,
            gpu_workers=self._gpu_workers(config, gpu_id),
        )
        name = f"W-{worker_id}-{spec.model_name}_{spec.model_version}"

        def on_metrics(records: Sequence[MetricRecord]) -> None:
            self._on_metrics(spec.model_name, spec.model_version, records)

        spare = self.spares.take(WarmProfile(spec.threads))
        if spare is not None:
            logger.info("worker %s takes the warm spare worker (pid %s)", name, spare.pid)
            spare.adopt(
                worker_id=worker_id,
                name=name,
                spec=spec,
                on_metrics=on_metrics,
                on_timings=self._timings_of(spec),
                on_loaded=self._settling(spare),
            )
            return spare
        token = secrets.token_hex(16)
        return WorkerProcess(
            worker_id=worker_id,
            name=name,
            spec=spec,
            socket_path=self._sockets() / f"{worker_id}.sock",
            env=self.worker_environment(token),
            token=token,
            heartbeat_s=self.settings.worker_heartbeat_s,
            model_log=self._log(),
            on_metrics=on_metrics,
            on_timings=self._timings_of(spec),
            on_loaded=self._on_loaded,
            clock=self._clock,
            sleep=self._sleep,
        )

    def _gpu_workers(self, config: ModelVersionConfig, gpu_id: int | None) -> int:
        # The workers gpu_memory_fraction: auto divides this GPU among (devices.py).
        if gpu_id is None:
            return 1
        load = self.gpus.load()
        on_gpu = load[gpu_id] if 0 <= gpu_id < len(load) else 1
        allowed = len(config.device_ids) if config.device_ids else self.gpus.visible
        planned = max(config.min_workers, config.max_workers)
        return workers_sharing_gpu(on_gpu, planned, allowed)

    def _settling(self, spare: WorkerProcess) -> Callable[[str, float], None]:
        # A taken spare's seat waits for this (or the worker's exit) before it spawns the
        # replacement, so the replacement's torch import does not slow this load.
        spare.exited.add_done_callback(lambda _: self.spares.settled(spare))

        def loaded(name: str, seconds: float) -> None:
            self.spares.settled(spare)
            if self._on_loaded is not None:
                self._on_loaded(name, seconds)

        return loaded

    def _next_profile(self) -> WarmProfile:
        # The budget of a worker started next: one more live slot than now.
        return WarmProfile(
            thread_budget(self.settings.worker_threads, self._cpus, self._live_slots + 1)
        )

    def _new_spare(self, serial: int, profile: WarmProfile) -> WorkerProcess:
        token = secrets.token_hex(16)
        folder = self._sockets()
        # A placeholder until a model adopts it: no model folder, the default response limit.
        spec = LoadSpec(
            model_name="spare",
            model_version=str(serial),
            model_dir=str(folder),
            handler="",
            threads=profile.threads,
            max_response_size=self.settings.max_response_size,
        )
        return WorkerProcess(
            worker_id=0,
            name=f"warm-spare-{serial}",
            spec=spec,
            socket_path=folder / f"spare-{serial}.sock",
            env=self._spare_environment(token),
            token=token,
            heartbeat_s=self.settings.worker_heartbeat_s,
            model_log=self._log(),
            on_metrics=lambda records: None,  # a spare runs no handler code
            clock=self._clock,
            sleep=self._sleep,
            cwd=str(folder),
            worker_args=("--warm-threads", str(profile.threads)),
        )

    def _timings_of(self, spec: LoadSpec) -> TimingsHandler | None:
        if self._on_timings is None:
            return None
        return self._on_timings(spec.model_name, spec.model_version)

    def worker_environment(self, token: str) -> dict[str, str]:
        """The worker's environment: ours minus ``blacklist_env_vars``, plus what the
        interpreter needs before it runs any code, plus the spawn token.

        No worker setting is passed here: those are in the LOAD frame (the worker itself sets
        ``OMP_NUM_THREADS``/``MKL_NUM_THREADS`` from it before torch is first imported). The
        token is here rather than on the command line because a command line is readable by
        every user (``ps``), an environment only by the same user; the worker removes it
        before handler code runs.
        """
        source = os.environ if self._environ is None else self._environ
        pattern = self.settings.blacklist_env_vars
        hidden = re.compile(pattern) if pattern else None
        env = {k: v for k, v in source.items() if hidden is None or not hidden.fullmatch(k)}
        env["PYTHONUNBUFFERED"] = "1"
        env[TOKEN_ENV] = token
        # A source checkout that is not installed must still be importable by the worker,
        # whose cwd is the model folder; an installed one is found through site-packages.
        package_root = str(Path(torchwick.__file__).resolve().parent.parent)
        if Path(package_root).name not in ("site-packages", "dist-packages"):
            parts = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
            if package_root not in parts:
                env["PYTHONPATH"] = os.pathsep.join([*parts, package_root])
        return env

    def _spare_environment(self, token: str) -> dict[str, str]:
        # A spare imports torch before any LOAD frame: OpenMP reads its wait policy then, so
        # the server's worker_omp_spin_count (the same for every worker) is set from the start.
        env = self.worker_environment(token)
        env.update(omp_wait_environment(self.settings.worker_omp_spin_count, env))
        return env

    def _sockets(self) -> Path:
        if self._socket_dir is None:
            base = tempfile.gettempdir()
            if len(base) > _MAX_SOCKET_DIR:
                base = "/tmp"
            # mkdtemp creates the folder 0700: only our user can reach the sockets inside.
            self._socket_dir = Path(tempfile.mkdtemp(prefix="torchwick-", dir=base))
            self._socket_dir.chmod(0o700)
        return self._socket_dir

    def _log(self) -> ModelLog:
        if self._model_log is None:
            self._model_log = ModelLog(self.settings.log_location)
        return self._model_log
