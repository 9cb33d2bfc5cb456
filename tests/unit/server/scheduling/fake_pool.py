"""An in-process stand-in for ``WorkerPool`` that scheduler and registry tests drive by hand.

It implements the contract's pool members (scale, acquire, run_batch, describe, target,
ready_count, failed, last_error, close) with leases handed out from an idle queue, records
every batch it runs, and lets a test hold batches (``gate``), fail them (``fail_when``) or
fail worker start-up (``load_error``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

from torchwick.handlers.messages import PredictRequest, PredictResponse
from torchwick.server.errors import ModelLoadFailed, TorchwickError


@dataclass(frozen=True)
class FakeWorkerInfo:
    id: str
    pid: int
    status: str
    start_time: float
    gpu_id: int | None
    memory_bytes: int


@dataclass
class FakePool:
    """Workers are integers; ``batches`` lists the request ids of every batch run."""

    key: str = "m"
    workers: int = 0
    #: ``scale`` brings up at most this many workers (simulates partial start-up).
    max_startable: int | None = None
    load_error: str | None = None
    gate: asyncio.Event | None = None
    fail_when: Callable[[list[PredictRequest]], TorchwickError | None] | None = None
    batches: list[list[str]] = field(default_factory=list)
    scale_calls: list[tuple[int, bool]] = field(default_factory=list)
    closed: bool = False
    failed: bool = False
    last_error: str | None = None
    target: int = 0
    ready_count: int = 0
    stream: bool = False
    released: list[int] = field(default_factory=list)
    describe_body: bytes = b'{"owner": "fake"}'
    #: Answers each request (default: its own id as the body).
    respond: Callable[[PredictRequest], PredictResponse] | None = None

    def __post_init__(self) -> None:
        self._idle: asyncio.Queue[int] = asyncio.Queue()
        self._next_id = 0
        self._retire = 0
        if self.workers:
            self._add(self.workers)
            self.target = self.workers

    def _add(self, count: int) -> None:
        for _ in range(count):
            self._idle.put_nowait(self._next_id)
            self._next_id += 1
        self.ready_count += count

    async def scale(self, target: int, *, wait: bool) -> int:
        self.scale_calls.append((target, wait))
        self.target = target
        if self.load_error is not None:
            self.failed = True
            self.last_error = self.load_error
            if wait:
                raise ModelLoadFailed(self.load_error)
            return 0
        reachable = target if self.max_startable is None else min(target, self.max_startable)
        if reachable > self.ready_count:
            self._add(reachable - self.ready_count)
        elif reachable < self.ready_count:
            # Idle workers go at once; busy ones when their batch ends.
            self._retire += self.ready_count - reachable
            while self._retire and not self._idle.empty():
                self._idle.get_nowait()
                self._retire -= 1
            self.ready_count = reachable
        return self.ready_count

    async def acquire(self) -> int:
        return await self._idle.get()

    def release(self, lease: int) -> None:
        self.released.append(lease)
        self._give_back(lease)

    def _give_back(self, lease: int) -> None:
        if self._retire:
            self._retire -= 1
        else:
            self._idle.put_nowait(lease)

    async def run_describe(self, lease: int, request: PredictRequest) -> PredictResponse:
        self.release(lease)
        return PredictResponse(request.request_id, body=self.describe_body)

    async def run_batch(
        self,
        lease: int,
        batch: list[PredictRequest],
        on_intermediate: Callable[[PredictResponse], None] | None = None,
    ) -> list[PredictResponse]:
        self.batches.append([r.request_id for r in batch])
        try:
            if self.gate is not None:
                await self.gate.wait()
            error = self.fail_when(batch) if self.fail_when is not None else None
            if error is not None:
                raise error
            if self.stream and on_intermediate is not None:
                for r in batch:
                    on_intermediate(PredictResponse(r.request_id, body=b"chunk", final=False))
            if self.respond is not None:
                return [self.respond(r) for r in batch]
            return [PredictResponse(r.request_id, body=r.request_id.encode()) for r in batch]
        finally:
            self._give_back(lease)

    def describe(self) -> list[FakeWorkerInfo]:
        return [
            FakeWorkerInfo(str(9000 + i), 100 + i, "READY", 1700000000.5, None, 1024)
            for i in range(self.ready_count)
        ]

    async def close(self) -> None:
        self.closed = True
        self.target = 0
        self.ready_count = 0


@dataclass(frozen=True)
class FakeGpus:
    visible: int


@dataclass
class FakeSupervisor:
    """``create_pool`` returns FakePools configured by ``pool_options``; keeps them by key."""

    pool_options: dict[str, object] = field(default_factory=dict)
    pools: dict[str, FakePool] = field(default_factory=dict)
    configs: dict[str, object] = field(default_factory=dict)
    gpu_count: int = 0

    @property
    def gpus(self) -> FakeGpus:
        return FakeGpus(self.gpu_count)

    def create_pool(self, key: str, config: object) -> FakePool:
        pool = FakePool(key=key, **self.pool_options)  # type: ignore[arg-type]
        self.pools[key] = pool
        self.configs[key] = config
        return pool

    async def close(self) -> None:
        for pool in self.pools.values():
            await pool.close()
