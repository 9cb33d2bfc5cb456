"""The floor of the frontend <-> worker hop: one tiny batch through a real worker process.

Starts one real worker (real ``ModelService``, a module-level echo handler written to a
temporary folder), warms it up, then runs batches back to back from one asyncio client and
prints microseconds per round trip (acquire + encode + unix socket + worker decode +
``ModelService.predict`` + encode + frontend decode) and the CPU each side spent on it, for
batch sizes 1 and 8, alternating rounds so that noise from other processes on the machine hits
both alike; the figures quoted are medians of the rounds.

    .venv/bin/python benchmarks/ipc_roundtrip.py [--rounds 5] [--batches 2000] [--uvloop]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path

from torchwick.handlers.messages import InputParameter, PredictRequest
from torchwick.server.model_version import ModelVersionConfig
from torchwick.server.settings import Settings
from torchwick.server.workers import WorkerPool, WorkerSupervisor

ECHO = "def handle(data, context):\n    return None if data is None else [b'ok' for _ in data]\n"
BODY = b'{"data": [' + b", ".join([b"0.5"] * 64) + b"]}"  # ~660 bytes, like the MLP request


def _cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _rounds(pool: WorkerPool, size: int, batches: int) -> tuple[float, float, float]:
    """Per round trip: wall, frontend CPU and worker CPU, in microseconds."""
    batch = [
        PredictRequest(
            f"req-{i}",
            (("content-type", "application/json"),),
            (InputParameter("body", BODY, "application/json"),),
        )
        for i in range(size)
    ]
    pid = pool.describe()[0].pid or 0
    worker_cpu = _cpu_seconds(pid)
    cpu = time.process_time()
    started = time.perf_counter()
    for _ in range(batches):
        lease = await pool.acquire()
        await pool.run_batch(lease, batch)
    wall = time.perf_counter() - started
    cpu = time.process_time() - cpu
    worker_cpu = _cpu_seconds(pid) - worker_cpu
    return wall / batches * 1e6, cpu / batches * 1e6, worker_cpu / batches * 1e6


async def main(rounds: int, batches: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "model"
        folder.mkdir()
        (folder / "echo.py").write_text(ECHO)
        supervisor = WorkerSupervisor(Settings(log_location=Path(tmp) / "logs"))
        config = ModelVersionConfig(
            name="echo",
            version="1.0",
            url="echo",
            mar_name=None,
            runtime="python",
            handler="echo.py",
            min_workers=1,
            max_workers=1,
            batch_size=8,
            max_batch_delay=100,
            response_timeout=120,
            startup_timeout=120,
            job_queue_size=100,
            model_dir=str(folder),
        )
        pool = supervisor.create_pool("echo", config)
        try:
            started = time.perf_counter()
            await pool.scale(1, wait=True)
            print(f"worker ready in {time.perf_counter() - started:.2f} s")
            await _rounds(pool, 1, 500)  # warm-up
            results: dict[int, list[tuple[float, float, float]]] = {1: [], 8: []}
            for _ in range(rounds):
                for size, values in results.items():
                    values.append(await _rounds(pool, size, batches))
            for size, values in results.items():
                wall = statistics.median(v[0] for v in values)
                frontend = statistics.median(v[1] for v in values)
                worker = statistics.median(v[2] for v in values)
                spread = ", ".join(f"{v[0]:.0f}" for v in values)
                print(
                    f"batch of {size}: {wall:.0f} us per round trip, {wall / size:.1f} us per "
                    f"request (CPU per round trip: frontend {frontend:.0f} us, worker "
                    f"{worker:.0f} us; rounds: {spread})"
                )
        finally:
            await supervisor.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batches", type=int, default=2000)
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop's event loop")
    args = parser.parse_args()
    if args.uvloop:
        import uvloop

        uvloop.run(main(args.rounds, args.batches))
    else:
        asyncio.run(main(args.rounds, args.batches))
