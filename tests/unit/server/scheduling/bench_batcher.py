"""Micro-benchmark: enqueue -> batch -> dispatch -> resolve through an instant fake pool.

Not collected by pytest. Run ``python -m tests.unit.server.scheduling.bench_batcher`` (add
``--uvloop`` to use uvloop). It prints requests/s and the mean batch size at several
closed-loop concurrencies: the scheduler's own ceiling, i.e. what the frontend could reach if
HTTP parsing and the worker round trip cost nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Callable

from torchwick.handlers.messages import PredictRequest, PredictResponse
from torchwick.server.errors import ServiceUnavailable
from torchwick.server.scheduling import Batcher, no_worker_message


class InstantPool:
    """Answers every batch at once; keeps each lease busy for one event-loop turn."""

    def __init__(self, workers: int) -> None:
        self.target = workers
        self.ready_count = workers
        self.failed = False
        self._idle: asyncio.Queue[int] = asyncio.Queue()
        for i in range(workers):
            self._idle.put_nowait(i)

    async def acquire(self) -> int:
        return await self._idle.get()

    def release(self, lease: int) -> None:
        self._idle.put_nowait(lease)

    async def run_batch(
        self,
        lease: int,
        batch: list[PredictRequest],
        on_intermediate: Callable[[PredictResponse], None] | None = None,
    ) -> list[PredictResponse]:
        await asyncio.sleep(0)  # one loop turn stands in for the worker round trip
        self._idle.put_nowait(lease)
        return [PredictResponse(r.request_id) for r in batch]


async def run_point(concurrency: int, seconds: float, batch_size: int, workers: int) -> None:
    batcher = Batcher(
        InstantPool(workers),
        batch_size=batch_size,
        capacity=max(100, concurrency),
        unavailable_message=no_worker_message("bench"),
    )
    batcher.start()
    request = PredictRequest(request_id="r")
    stop_at = time.perf_counter() + seconds
    done = 0

    async def client() -> None:
        nonlocal done
        while time.perf_counter() < stop_at:
            await batcher.infer(request)
            done += 1

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    stats = batcher.stats()
    batcher.stop(ServiceUnavailable("benchmark finished"))
    await batcher.drain(1.0)
    print(
        f"c={concurrency:<3d} workers={workers} batch_size={batch_size}: "
        f"{done / elapsed:>10,.0f} req/s, mean batch {stats.requests / max(1, stats.batches):.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--uvloop", action="store_true")
    args = parser.parse_args()

    async def all_points() -> None:
        for concurrency in (1, 8, 32, 64):
            await run_point(concurrency, args.seconds, args.batch_size, args.workers)

    if args.uvloop:
        import uvloop

        uvloop.run(all_points())
    else:
        asyncio.run(all_points())


if __name__ == "__main__":
    main()
