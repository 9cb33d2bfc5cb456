"""The composition root: build every part of the server from ``Settings`` and run it.

``serve(settings)`` is called by the command line (``torchserve --foreground`` /
``python -m torchwick.server --foreground``) and returns the process exit code:
0 after a clean shutdown, 1 when the server could not start.

Everything runs on one uvloop event loop: one uvicorn ``Server`` per listener (a FastAPI app
under the serving middleware; httptools, no lifespan, no uvicorn access log), the two
``grpc.aio`` servers (TorchServe's gRPC inference and management APIs, ``grpc/server.py``),
the data plane's batchers and the worker supervisor.
Listeners whose addresses are equal share one socket and one router (TorchServe serves
inference and management on one port when their addresses match).

Shutdown (SIGTERM or SIGINT): stop accepting connections and calls, let in-flight requests
finish (at most ``GRACEFUL_SHUTDOWN_S``; a second signal cuts the wait), stop the workers,
delete the key file and flush the access log. Config snapshots (``snapshots.py``) are written
after the startup models load, after each management change and at a clean stop.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import time
from dataclasses import dataclass, field

from torchwick.handlers.metrics_config import MetricsConfigError

from .api.assembly import RestApis
from .api.connection_guard import ConnectionGuard, ConnectionLimits
from .api.serving import ListenerError, RunningListener, open_listener, start_uvicorn
from .config.addresses import ListenAddress, parse_address
from .config.errors import ConfigError
from .dataplane import DataPlane
from .grpc.oip_service import oip_service_hook
from .grpc.server import GrpcServers, GrpcServiceHook, start_grpc_servers
from .observability import (
    ACCESS_LOG_FILE,
    MODEL_METRICS_FILE,
    AccessLog,
    FrontendMetrics,
    ModelMetrics,
    SystemMetrics,
    build_frontend_metrics,
    install_server_log,
)
from .observability.limit_metrics import LimitMetrics
from .observability.tracing import Tracing, build_tracing
from .security.tokens import TokenAuthority
from .settings import Settings
from .snapshots import SnapshotWriter
from .traffic import TrafficCollector
from .workers import WorkerSupervisor

log = logging.getLogger("torchwick.server")

#: Longest wait for in-flight requests after a stop signal before they are cancelled.
GRACEFUL_SHUTDOWN_S = 30


@dataclass
class ListenerPlan:
    """One socket to open and the APIs it serves."""

    address: ListenAddress
    apis: list[str] = field(default_factory=list)


def plan_listeners(settings: Settings) -> list[ListenerPlan]:
    """Group the configured APIs by address (equal addresses share a listener).

    Port 0 ("any free port") never merges: each such listener gets its own port.
    Raises ``ConfigError`` for an unparsable address.
    """
    wanted = [
        ("inference", settings.inference_address),
        ("management", settings.management_address),
    ]
    if settings.enable_metrics_api:
        wanted.append(("metrics", settings.metrics_address))
    plans: list[ListenerPlan] = []
    for api, text in wanted:
        address = parse_address(text, key=f"{api}_address")
        for plan in plans:
            if plan.address == address and address.port != 0:
                plan.apis.append(api)
                break
        else:
            plans.append(ListenerPlan(address, [api]))
    return plans


def serve(settings: Settings) -> int:
    """Run the server until SIGTERM/SIGINT; return the exit code (see the module docs)."""
    install_server_log(settings)
    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:  # pragma: no cover - uvloop is a dependency off Windows
        runner = asyncio.Runner()
    with runner:
        return runner.run(_Server(settings).run())


class _Server:
    """One run of the server: the parts, the listeners and the shutdown sequence."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.stop = asyncio.Event()
        self.signals = 0
        self.servers: list[RunningListener] = []
        self.grpc: GrpcServers | None = None
        self.snapshots: SnapshotWriter | None = None
        self.limit_metrics: LimitMetrics

    async def run(self) -> int:
        settings = self.settings
        started = time.perf_counter()
        try:
            plans = plan_listeners(settings)
            tokens = TokenAuthority.create(settings, time.time)
        except (ConfigError, OSError) as exc:
            log.error("torchwick cannot start: %s", exc)
            return 1
        loop = asyncio.get_running_loop()
        hostname = socket.gethostname()
        try:
            metrics = build_frontend_metrics(settings, hostname)
        except MetricsConfigError as exc:
            log.error("torchwick cannot start: metrics_config %s", exc)
            return 1
        model_metrics = ModelMetrics(hostname, settings.log_location / MODEL_METRICS_FILE)
        supervisor = WorkerSupervisor(
            settings,
            on_metrics=model_metrics.record,
            on_timings=metrics.worker_timings,
            on_loaded=metrics.worker_loaded,
        )
        if settings.install_py_dep_per_model:
            supervisor.open_model_log()  # pip's output is model-log output, before any worker
        tracing = build_tracing(settings.enable_tracing)
        plane = DataPlane(
            settings, supervisor, accounting=metrics, phases=metrics.series, tracing=tracing
        )
        system = SystemMetrics(
            hostname,
            metrics.specs,
            interval_s=float(settings.metric_time_interval),
            enabled=not settings.disable_system_metrics,
            ts_log=metrics.ts_log,
            worker_memory=lambda: _worker_memory(supervisor),
            worker_pids=lambda: _worker_pids(supervisor),
        )
        metrics.queue_source = plane.batcher_stats
        if metrics.mode == "prometheus":
            # TorchServe's log and legacy modes keep handler metrics out of /metrics (they
            # are in model_metrics.log either way).
            metrics.registry.register(model_metrics)
            metrics.registry.register(system)
        if metrics.mode == "prometheus":
            metrics.registry.register(TrafficCollector(plane.traffic))
        self.snapshots = (
            SnapshotWriter(settings, plane.snapshot) if settings.snapshots_enabled else None
        )
        if self.snapshots is not None:
            plane.models_changed = self.snapshots.save
        self.limit_metrics = LimitMetrics(hostname, plane.batcher_stats)
        if metrics.mode == "prometheus":
            # torchwick's own families exist only in prometheus mode: TorchServe's log and
            # legacy modes serve exactly its own metrics (the rest go to the logs).
            metrics.registry.register(self.limit_metrics)
        access_log = AccessLog(
            settings.log_location / ACCESS_LOG_FILE, json_lines=settings.log_format == "json"
        )
        parts = _Parts(
            plane, supervisor, tokens, access_log, model_metrics, plans, metrics, system, tracing
        )
        try:
            access_log.start(loop)
            if model_metrics.log is not None:
                model_metrics.log.start(loop)
            if metrics.ts_log is not None:
                metrics.ts_log.file.start(loop)
            system.start(loop)
            await self._listen(parts, metrics)
            await self._listen_grpc(parts, metrics)
            supervisor.start()  # warm spare workers, once the listeners are up
        except (ListenerError, OSError) as exc:
            log.error("torchwick cannot start: %s", exc)
            await self._shutdown(parts)
            return 1
        self._install_signal_handlers(loop)
        log.info(
            "listening %.0f ms after start; loading startup models",
            1000 * (time.perf_counter() - started),
        )
        loader = loop.create_task(self._load_startup_models(plane))
        await self.stop.wait()
        log.info("stop requested; finishing in-flight requests")
        loader.cancel()
        await asyncio.gather(loader, return_exceptions=True)
        if self.snapshots is not None:
            self.snapshots.save("shutdown")
        await self._shutdown(parts)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        log.info("torchwick stopped")
        return 0

    async def _listen(self, parts: _Parts, metrics: FrontendMetrics) -> None:
        """Build each listener's app, bind its socket and start uvicorn on it."""
        settings = self.settings
        apis = RestApis(
            settings,
            parts.plane,
            metrics,
            parts.tokens,
            access_log=parts.access_log,
        )
        guard = ConnectionGuard(ConnectionLimits.from_settings(settings))
        self.limit_metrics.connections = guard
        self.limit_metrics.inflight = apis.inflight
        for plan in parts.plans:
            app = apis.listener_app(plan.apis)
            sock = open_listener(plan.address)
            server = await start_uvicorn(
                app,
                sock,
                plan.address,
                settings,
                graceful_shutdown_s=GRACEFUL_SHUTDOWN_S,
                guard=guard,
            )
            self.servers.append(server)
            bound = _bound_address(plan.address, sock)
            for api in plan.apis:
                # Printed (not only logged): launchers and the test harness read these lines.
                message = f"{api.capitalize()} API bound to {bound}"
                log.info(message)
                print(message, flush=True)

    async def _listen_grpc(self, parts: _Parts, metrics: FrontendMetrics) -> None:
        """Start the gRPC inference and management servers (raises ``OSError`` when one
        cannot bind)."""
        # Services served on the gRPC inference port next to TorchServe's (the KServe v2
        # GRPCInferenceService is added here).
        extra_inference_services: list[GrpcServiceHook] = [
            oip_service_hook(parts.plane, strip_authorization=parts.tokens is not None)
        ]
        self.grpc = await start_grpc_servers(
            self.settings,
            parts.plane,
            parts.tokens,
            metrics=metrics,
            extra_inference_services=extra_inference_services,
            access_log=parts.access_log,
        )
        for running in self.grpc.servers:
            # Printed (not only logged), like the REST lines: the test harness reads them.
            message = f"gRPC {running.api.capitalize()} API bound to {running.bound}"
            log.info(message)
            print(message, flush=True)

    async def _load_startup_models(self, plane: DataPlane) -> None:
        if self.settings.restore_models:
            log.info(
                "restoring %d model version(s) from config snapshot %s",
                len(self.settings.restore_models),
                self.settings.config_file,
            )
        try:
            await plane.load_startup_models()
        except Exception:
            log.exception("loading the startup models failed; the server keeps running")
        if self.snapshots is not None:
            self.snapshots.save("startup")
        log.info("Model server started.")
        print("Model server started.", flush=True)

    def _install_signal_handlers(self, loop: asyncio.AbstractEventLoop) -> None:
        def on_signal(sig: signal.Signals) -> None:
            self.signals += 1
            log.info("received %s", sig.name)
            self.stop.set()
            if self.signals > 1:
                # A second signal: stop waiting for in-flight requests.
                for server in self.servers:
                    server.force()
                if self.grpc is not None:
                    self.grpc.force()

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal, sig)

    async def _shutdown(self, parts: _Parts) -> None:
        """Stop listeners (draining in-flight requests), then the workers; delete the key
        file and unix sockets; flush the access log. Never raises."""
        stopping = [server.stop() for server in self.servers]
        if self.grpc is not None:
            stopping.append(self.grpc.stop(GRACEFUL_SHUTDOWN_S))
        results = await asyncio.gather(*stopping, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                log.error("error while stopping a listener: %s", result)
        for plan in parts.plans:
            if plan.address.uds_path is not None and self.servers:
                plan.address.uds_path.unlink(missing_ok=True)
        await parts.system.close()
        for part in (parts.plane, parts.supervisor):
            try:
                await part.close()
            except Exception:
                log.exception("error while stopping %s", type(part).__name__)
        if parts.tokens is not None:
            parts.tokens.close()
        parts.access_log.close()
        if parts.model_metrics.log is not None:
            parts.model_metrics.log.close()
        if parts.metrics.ts_log is not None:
            parts.metrics.ts_log.file.close()
        if parts.tracing is not None:
            parts.tracing.shutdown()


@dataclass(frozen=True)
class _Parts:
    plane: DataPlane
    supervisor: WorkerSupervisor
    tokens: TokenAuthority | None
    access_log: AccessLog
    model_metrics: ModelMetrics
    plans: list[ListenerPlan]
    metrics: FrontendMetrics
    system: SystemMetrics
    tracing: Tracing | None


def _worker_memory(supervisor: WorkerSupervisor) -> list[tuple[str, str, str, int]]:
    """(model, version, worker id, resident bytes) of every running worker, for /metrics."""
    rows = []
    for pool in list(supervisor.pools.values()):
        for info in pool.describe():
            if info.pid is not None:
                rows.append((pool.config.name, pool.config.version, info.id, info.memory_bytes))
    return rows


def _worker_pids(supervisor: WorkerSupervisor) -> list[tuple[str, str, str, int]]:
    """(model, version, worker id, pid) of every running worker, for GPU memory in /metrics."""
    return [
        (pool.config.name, pool.config.version, info.id, info.pid)
        for pool in list(supervisor.pools.values())
        for info in pool.describe()
        if info.pid is not None
    ]


def _bound_address(address: ListenAddress, sock: socket.socket) -> str:
    if address.uds_path is not None:
        return str(address)
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    return f"{address.scheme}://{shown}:{port}"
