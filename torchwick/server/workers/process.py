"""One worker OS process: spawn, connect, load, run operations, watch, stop.

The frontend listens on a fresh unix socket in the supervisor's private (0700) directory,
spawns ``python -P -m torchwick.server.workers.worker_main --socket PATH`` (a fresh
interpreter: spawn semantics, and ``-P`` keeps the model directory, the worker's cwd, from
shadowing modules), and waits for the worker to connect and prove itself with the spawn token.
Its stdout and stderr are pumped into the model log. A warm spare (``spares.py``) is the same
process started ahead of need with ``--warm-threads N`` and adopted by a model later.

What travels how: the command line carries only the socket path (needed before any frame can
be read). The spawn token travels in the environment because a command line is world-readable
(``ps``, ``/proc/<pid>/cmdline``) while a process's environment is readable only by its own
user and root; the worker removes it before any handler code runs. Every worker setting
(thread budget, adaptive threads, GPU, response size limit, batch size, envelope, ...) is in
the LOAD frame, the ``LoadSpec`` the supervisor derived from the version's config.

Liveness, and why no heartbeat thread in the worker: the worker is single-threaded and
answers PING between operations only. While an operation is outstanding the heartbeat does not
judge the worker; ``response_timeout`` (predict) or ``startup_timeout`` (load) does. An idle
worker silent for three heartbeat intervals is hung and is killed. A dead worker is noticed
from either end: the socket's end of stream, or the process exit watcher; both fail the
pending operation with ``WorkerDied`` at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from torchwick.handlers.messages import BatchTimings, LoadSpec, PredictRequest, PredictResponse
from torchwick.server.errors import InternalError, ResponseTimeout

from .channel import IntermediateHandler, MetricsHandler, WorkerChannel
from .config import WorkerInfo, WorkerStatus
from .ipc import Kind, encode_load, encode_shutdown
from .model_log import ModelLog, StreamLabel
from .process_facts import LoadFailedError, describe_exit, resident_bytes
from .shm_lane import ShmSettings

#: Receives the worker's ``BatchTimings`` of one batch and its round trip in seconds.
TimingsHandler = Callable[[BatchTimings, float], None]

logger = logging.getLogger(__name__)

#: Time the log pumps get to drain after the process exited (a grandchild may hold the pipes).
_PUMP_DRAIN_S = 1.0


class _Refuse(asyncio.Protocol):
    # Only the first connection to a worker's socket is the worker; anything after is dropped.
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.close()


class WorkerProcess:
    """One spawned worker. Create, ``await start(timeout)``, then ``predict``/``describe``.

    ``exited`` resolves with the exit code once the process is gone and reaped; every path
    (crash, kill, stop) ends there, so an owner can simply await it.
    """

    def __init__(
        self,
        *,
        worker_id: int,
        name: str,
        spec: LoadSpec,
        socket_path: Path,
        env: Mapping[str, str],
        token: str,
        heartbeat_s: float,
        model_log: ModelLog,
        on_metrics: MetricsHandler,
        clock: Callable[[], float],
        sleep: Callable[[float], Awaitable[Any]],
        on_timings: TimingsHandler | None = None,
        on_loaded: Callable[[str, float], None] | None = None,
        cwd: str | None = None,
        worker_args: Sequence[str] = (),
    ) -> None:
        self.worker_id = worker_id
        self.name = name
        self.spec = spec
        self.status = WorkerStatus.LOADING
        self.pid: int | None = None
        self.start_time = datetime.now(UTC)
        #: Set by the pool while a lease holds this worker.
        self.leased = False
        #: Set by the pool: stop this worker when its lease comes back.
        self.retiring = False
        #: Batches sent and not yet answered, and whether the pool holds this worker back
        #: because that count reached its pipeline depth (both the pool's bookkeeping).
        self.in_flight = 0
        self.held_full = False
        self._socket_path = socket_path
        self._env = env
        self._token = token
        self._heartbeat_s = heartbeat_s
        self._model_log = model_log
        self._clock = clock
        self._sleep = sleep
        self._proc: asyncio.subprocess.Process | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._batch_seq = 0
        self._on_timings = on_timings
        self._on_loaded = on_loaded
        #: A warm spare (``spares.py``) runs elsewhere than a model folder and with extra
        #: worker arguments until a model adopts it.
        self._cwd = cwd
        self._worker_args = tuple(worker_args)
        self._kill_logged = False
        loop = asyncio.get_running_loop()
        self.exited: asyncio.Future[int] = loop.create_future()
        self.channel = WorkerChannel(
            name,
            token,
            max_response_size=spec.max_response_size,
            on_metrics=on_metrics,
            clock=clock,
            shm=ShmSettings(spec.shm_threshold, spec.shm_size, spec.max_response_size),
        )

    @property
    def usable(self) -> bool:
        """Loaded, connected and not being retired: may be handed out for a batch."""
        return (
            self.status is WorkerStatus.READY
            and self.channel.closed_reason is None
            and not self.retiring
        )

    # ---- start-up ----------------------------------------------------------------------------

    async def start(self, timeout: float, *, load: bool = True) -> None:
        """Spawn the process, wait for it to connect, load the model: all within ``timeout``.

        A warm spare (``spares.py``) is started with ``load=False`` (spawned and connected
        only); once adopted, its ``start`` only loads.

        Raises ``LoadFailedError`` (the worker's load status and message, or 500 for a spawn
        failure, a death or a timeout). The process is killed on failure; ``exited`` resolves.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        started = loop.time()
        try:
            if self._proc is None:  # else an adopted warm spare: spawned and connected
                await self._spawn(deadline)
            if not load:
                return
            future = self.channel.start(encode_load(self.spec), 0, Kind.LOAD_RESULT)
            try:
                status, message = await asyncio.wait_for(future, deadline - loop.time())
            finally:
                self.channel.finish(future)
        except TimeoutError:
            self.kill("startup timeout")
            raise LoadFailedError(
                500, f"Worker {self.name} did not load the model within {timeout:g} s"
            ) from None
        except LoadFailedError:
            self.kill("start failed")
            raise
        except (InternalError, OSError) as exc:  # WorkerDied is an InternalError
            self.kill("start failed")
            raise LoadFailedError(500, str(exc)) from exc
        if status != 200:
            self.kill("load failed")
            raise LoadFailedError(status, message or "Model load failed")
        self.status = WorkerStatus.READY
        if self._on_loaded is not None:
            # TorchServe's WorkerLoadTime: spawn, connect and model load.
            self._on_loaded(self.name, loop.time() - started)
        self._tasks.append(asyncio.create_task(self._heartbeat(), name=f"{self.name}-heartbeat"))

    async def _spawn(self, deadline: float) -> None:
        loop = asyncio.get_running_loop()
        path = str(self._socket_path)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        accepted = False

        def accept() -> asyncio.BaseProtocol:
            nonlocal accepted
            if accepted:
                return _Refuse()
            accepted = True
            return self.channel

        server = await loop.create_unix_server(accept, path)
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-P",
                "-m",
                "torchwick.server.workers.worker_main",
                "--socket",
                path,
                *self._worker_args,
                cwd=self._cwd or self.spec.model_dir,
                env=dict(self._env),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                # Own process group: a kill reaches the handler's own child processes too.
                start_new_session=True,
            )
            self._proc = proc
            self.pid = proc.pid
            self.start_time = datetime.now(UTC)
            assert proc.stdout is not None and proc.stderr is not None
            pumps = [
                asyncio.create_task(self._model_log.pump(pipe, StreamLabel(self._name, label)))
                for pipe, label in ((proc.stdout, "stdout"), (proc.stderr, "stderr"))
            ]
            self._tasks.append(asyncio.create_task(self._watch(proc, pumps)))
            await asyncio.wait_for(asyncio.shield(self.channel.hello), deadline - loop.time())
        finally:
            server.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)

    def _name(self) -> str:
        return self.name

    def adopt(
        self,
        *,
        worker_id: int,
        name: str,
        spec: LoadSpec,
        on_metrics: MetricsHandler,
        on_timings: TimingsHandler | None,
        on_loaded: Callable[[str, float], None] | None,
    ) -> None:
        """Give this spawned, connected, not yet loaded worker to a model's slot; ``start``
        then only sends the LOAD frame. Its log lines carry the new name from now on."""
        self.worker_id = worker_id
        self.name = name
        self.spec = spec
        self.start_time = datetime.now(UTC)
        self._on_timings = on_timings
        self._on_loaded = on_loaded
        self.channel.rebind(
            name,
            max_response_size=spec.max_response_size,
            on_metrics=on_metrics,
            shm=ShmSettings(spec.shm_threshold, spec.shm_size, spec.max_response_size),
        )

    async def _watch(
        self, proc: asyncio.subprocess.Process, pumps: list[asyncio.Task[None]]
    ) -> None:
        # Whichever comes first, connection loss or exit, the other is forced to follow.
        waited = asyncio.ensure_future(proc.wait())
        watched: set[asyncio.Future[Any]] = {self.channel.lost, waited}
        await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
        if not waited.done() and self.status is not WorkerStatus.UNLOADING:
            self.kill(self.channel.closed_reason or "connection lost")
        returncode = await waited
        self.channel.abort(describe_exit(returncode))
        if self.status is not WorkerStatus.UNLOADING:
            self.status = WorkerStatus.FAILED
            logger.warning("worker %s (pid %s) %s", self.name, proc.pid, describe_exit(returncode))
        _done, pending = await asyncio.wait(pumps, timeout=_PUMP_DRAIN_S)
        for task in pending:
            task.cancel()
        for task in self._tasks:
            if task is not asyncio.current_task():
                task.cancel()
        if not self.exited.done():
            self.exited.set_result(returncode)

    # ---- operations --------------------------------------------------------------------------

    async def predict(
        self,
        batch: list[PredictRequest],
        on_intermediate: IntermediateHandler | None,
        timeout: float,
        *,
        kind: Kind = Kind.PREDICT,
        on_sent: Callable[[], None] | None = None,
    ) -> list[PredictResponse]:
        """Run one batch; one response per request, in order.

        ``on_sent`` is called once the batch's frame is written (a pipelined worker may then
        be handed its next batch). Raises ``WorkerDied`` when the worker dies meanwhile,
        ``ResponseTimeout`` after ``timeout`` seconds (the worker is then killed),
        ``InternalError`` for an oversize or inconsistent answer.
        """
        self._batch_seq += 1
        batch_id = self._batch_seq
        expect = Kind.PREDICT_RESULT if kind is Kind.PREDICT else Kind.DESCRIBE_RESULT
        channel = self.channel
        sent = time.perf_counter()
        future = channel.start(
            channel.encode_requests(kind, batch_id, batch), batch_id, expect, on_intermediate
        )
        timer = asyncio.get_running_loop().call_later(timeout, self._expire, future, timeout)
        timings: BatchTimings | None = None
        try:
            if on_sent is not None:
                on_sent()
            responses: list[PredictResponse] = await future
        finally:
            timer.cancel()
            timings = channel.finish(future)
        if timings is not None and self._on_timings is not None:
            # Round trip minus the worker's own time: encoding, the socket both ways, decoding.
            self._on_timings(timings, time.perf_counter() - sent)
        if len(responses) != len(batch):
            raise InternalError(
                f"Worker {self.name} answered {len(responses)} responses for {len(batch)} requests"
            )
        return responses

    def _expire(self, future: asyncio.Future[Any], timeout: float) -> None:
        if not future.done():
            future.set_exception(
                ResponseTimeout(f"Worker {self.name} did not respond within {timeout:g} s")
            )
            self.kill("response timeout")

    async def _heartbeat(self) -> None:
        interval = self._heartbeat_s
        channel = self.channel
        while channel.closed_reason is None:
            await self._sleep(interval)
            if channel.outstanding <= 0:
                silent = self._clock() - channel.last_seen
                if silent > 3 * interval:
                    self.kill(f"no heartbeat for {silent:.1f} s")
                    return
            channel.ping()

    # ---- stopping ----------------------------------------------------------------------------

    def kill(self, reason: str, *, expected: bool = False) -> None:
        """SIGKILL the worker's process group now and fail its pending operation.

        Logged once per process (later calls while it dies repeat nothing): as a warning,
        or at INFO when ``expected`` (a stop that needs no one's attention)."""
        proc = self._proc
        if proc is not None and proc.returncode is None:
            if not self._kill_logged:
                self._kill_logged = True
                level = logging.INFO if expected else logging.WARNING
                logger.log(level, "killing worker %s (pid %s): %s", self.name, proc.pid, reason)
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
        self.channel.abort(reason)
        if proc is None and not self.exited.done():
            self.exited.set_result(-signal.SIGKILL)

    async def stop(self, grace_s: float) -> int:
        """Ask the worker to exit after its current frame; SIGKILL it after ``grace_s``."""
        self.status = WorkerStatus.UNLOADING
        if self._proc is None:
            self.kill("stopped before start")
        elif not self.channel.send(encode_shutdown()):
            self.kill("stopped")
        try:
            return await asyncio.wait_for(asyncio.shield(self.exited), grace_s)
        except TimeoutError:
            self.kill(f"did not exit within {grace_s:g} s of shutdown")
            return await self.exited

    # ---- describe ----------------------------------------------------------------------------

    def memory_bytes(self) -> int:
        """Resident set size from ``/proc/<pid>/statm``; 0 when not running or unknown."""
        if self.pid is None or self.exited.done():
            return 0
        return resident_bytes(self.pid)

    def info(self, gpu_id: int | None) -> WorkerInfo:
        """This worker as one describe row."""
        return WorkerInfo(
            id=str(self.worker_id),
            pid=None if self.exited.done() else self.pid,
            status=self.status,
            start_time=self.start_time,
            gpu_id=gpu_id,
            memory_bytes=self.memory_bytes(),
        )
