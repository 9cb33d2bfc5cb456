"""Shared-memory IPC against the socket and the in-process ceiling, on the raw-bytes path.

Every figure comes from one run, with the modes alternated inside each round so that noise
from other processes on the machine hits all of them alike; the figures quoted are medians of
the rounds. Per model and batch size it measures, closed loop, one batch at a time:

- ``socket``: a real worker process (``WorkerPool``, real ``ModelService``, the benchmark's
  TorchServe-style ``bench_handler.py`` and TorchScript model) with ``shm_threshold`` 0;
- ``shm``: the same with the shared-memory lane on (``ipc_shm_threshold`` 256 KiB);
- ``in-process``: the same ``ModelService`` loaded in this process and called directly:
  everything the worker does, with no IPC at all (the ceiling of the worker path);
- ``forward``: the scripted model's forward alone on a ready batch (``CeilingMeter``).

Models: ``resnet`` (ResNet-18-shaped, one 3x224x224 float32 tensor as 602,112 raw bytes per
request), ``pool`` (the same input and 1000-class output with a forward of a few us, so that
the transport is most of the cost) and ``echo`` (the same body into a module function that
answers ``ok`` without reading it: the transport alone; no ``forward`` row). Workers and the
in-process service get the same torch thread budget (``--threads``). It also reports the CPU
each side spent per batch (frontend: this process; worker: ``/proc/<pid>/stat``).

    .venv/bin/python benchmarks/shm_benchmark.py [--rounds 3] [--seconds 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.bench_models import BenchModel, CeilingMeter, build_model
from benchmarks.protocol_benchmark import build_pool
from torchwick.handlers.messages import InputParameter, PredictRequest
from torchwick.handlers.service import ModelService
from torchwick.server.model_version import ModelVersionConfig
from torchwick.server.settings import Settings
from torchwick.server.workers import WorkerPool, WorkerSupervisor

HANDLER = Path(__file__).resolve().parent / "bench_handler.py"
MODES = ("socket", "shm", "in-process", "forward")
THRESHOLD = 256 * 1024
ARENA = 64 * 1024 * 1024


ECHO = "def handle(data, context):\n    return None if data is None else [b'ok' for _ in data]\n"


def _model_dir(root: Path, model: BenchModel) -> Path:
    folder = root / model.name
    folder.mkdir()
    if model.name == "echo":
        (folder / "bench_handler.py").write_text(ECHO)
    else:
        shutil.copy(HANDLER, folder / "bench_handler.py")
    shutil.copy(model.scripted_path, folder / model.scripted_path.name)
    (folder / "input_shape.json").write_text(json.dumps({"shape": list(model.input_shape)}))
    return folder


def _config(model: BenchModel, folder: Path, batch: int, shm: bool) -> ModelVersionConfig:
    return ModelVersionConfig(
        name=model.name,
        version="1.0",
        url=model.name,
        mar_name=None,
        runtime="python",
        handler="bench_handler.py",
        min_workers=1,
        max_workers=1,
        batch_size=batch,
        max_batch_delay=0,
        response_timeout=300,
        startup_timeout=300,
        job_queue_size=100,
        model_dir=str(folder),
        manifest={"model": {"modelName": model.name, "serializedFile": model.scripted_path.name}},
        shm_threshold=THRESHOLD if shm else 0,
        shm_size=ARENA,
    )


def _batch(model: BenchModel, size: int) -> list[PredictRequest]:
    headers = (("content-type", model.content_type),)
    value = (InputParameter("body", model.body, model.content_type),)
    return [PredictRequest(f"r{i}", headers, value) for i in range(size)]


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


#: One point: batches per second, frontend CPU ms per batch, worker CPU ms per batch.
Point = tuple[float, float, float]


async def _timed(run: Callable[[], Awaitable[object]], seconds: float, pid: int) -> Point:
    await run()  # one warm batch per point: caches and the allocator settle
    worker_cpu = _cpu_seconds(pid) if pid else 0.0
    cpu = time.process_time()
    calls = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        await run()
        calls += 1
        now = time.perf_counter()
        if now >= deadline:
            break
    cpu = time.process_time() - cpu
    worker_cpu = (_cpu_seconds(pid) - worker_cpu) if pid else 0.0
    return calls / (now - start), cpu / calls * 1e3, worker_cpu / calls * 1e3


async def _measure(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    root = Path(tempfile.mkdtemp(prefix="shmbench"))
    # The in-process and forward points block this event loop for seconds at a time: a long
    # heartbeat keeps the idle workers from being judged hung meanwhile.
    settings = Settings(
        log_location=root / "logs", worker_threads=args.threads, worker_heartbeat_s=3600.0
    )
    supervisor = WorkerSupervisor(settings)
    meter = CeilingMeter()
    results: dict[tuple[str, int, str], list[Point]] = {}
    try:
        builds = root / "build"
        builds.mkdir()
        models = []
        for name in args.models.split(","):
            if name in ("pool", "echo"):
                model = build_pool(builds)
                if name == "echo":
                    model = BenchModel("echo", model.scripted_path, *_input(model))
            else:
                model = build_model(name, builds)
            models.append((model, _model_dir(root, model)))
        setups = []
        for model, folder in models:
            for size in args.batches:
                pools: dict[str, WorkerPool] = {}
                for mode in ("socket", "shm"):
                    config = _config(model, folder, size, mode == "shm")
                    pools[mode] = supervisor.create_pool(f"{model.name}-{size}-{mode}", config)
                    await pools[mode].scale(1, wait=True)
                spec = _config(model, folder, size, False).load_spec(
                    gpu_id=None, threads=args.threads, adaptive_threads=False
                )
                service = ModelService.load(
                    spec, emit_intermediate=lambda _r: None, emit_metric=lambda _m: None
                )
                setups.append((model, size, pools, service))
        lanes = [p.describe()[0].pid for _, _, pools, _ in setups for p in pools.values()]
        print(f"{len(lanes)} workers ready; {args.rounds} rounds of {args.seconds:g} s points")
        for round_no in range(args.rounds):
            for model, size, pools, service in setups:
                batch = _batch(model, size)
                for mode in MODES:
                    if mode == "forward" and model.name == "echo":
                        continue
                    if mode == "forward":
                        ceiling = meter.measure(model, size, args.threads, args.seconds)
                        point: Point = (ceiling.samples_per_s / size, 0.0, 0.0)
                    elif mode == "in-process":

                        async def local(
                            service: ModelService = service, batch: list[PredictRequest] = batch
                        ) -> object:
                            return service.predict(batch)

                        point = await _timed(local, args.seconds, 0)
                    else:
                        pool = pools[mode]

                        async def remote(
                            pool: WorkerPool = pool, batch: list[PredictRequest] = batch
                        ) -> object:
                            lease = await pool.acquire()
                            answers = await pool.run_batch(lease, batch)
                            assert all(a.status == 200 for a in answers), answers[0].reason
                            return answers

                        point = await _timed(remote, args.seconds, pool.describe()[0].pid or 0)
                    results.setdefault((model.name, size, mode), []).append(point)
            print(f"round {round_no + 1} done", flush=True)
        _check_lanes(setups)
        _report(results, args)
    finally:
        await supervisor.close()
        shutil.rmtree(root, ignore_errors=True)


def _check_lanes(setups: list[tuple[BenchModel, int, dict[str, WorkerPool], ModelService]]) -> None:
    # Proof that the shm pools used the lane and the socket pools did not.
    for model, size, pools, _ in setups:
        for mode, pool in pools.items():
            worker = pool._slots[0].worker
            lane = worker.channel.shm if worker is not None else None
            sent = lane.counters.values_sent if lane is not None else 0
            print(f"  {model.name} b{size} {mode}: values through shared memory: {sent}")


def _report(results: dict[tuple[str, int, str], list[Point]], args: argparse.Namespace) -> None:
    print(f"\nthreads {args.threads}, cores {len(os.sched_getaffinity(0))}, medians of rounds")
    heads = ("model", "batch", "mode", "req/s", "ms/batch", "CPU ms: frontend", "worker")
    print("{:7} {:>5} {:11} {:>9} {:>9} {:>17} {:>7}  rounds (req/s)".format(*heads))
    keys = sorted({(m, b) for m, b, _ in results})
    for model, size in keys:
        rate: dict[str, float] = {}
        for mode in MODES:
            points = results.get((model, size, mode))
            if points is None:
                rate[mode] = float("nan")
                continue
            per_batch = statistics.median(p[0] for p in points)
            rate[mode] = per_batch * size
            frontend = statistics.median(p[1] for p in points)
            worker = statistics.median(p[2] for p in points)
            spread = ", ".join(f"{p[0] * size:.1f}" for p in points)
            cpu = f"{frontend:17.2f} {worker:7.2f}" if mode in ("socket", "shm") else " " * 25
            print(
                f"{model:7} {size:5} {mode:11} {rate[mode]:9.1f} {1e3 / per_batch:9.2f} "
                f"{cpu}  {spread}"
            )
        print(
            f"{'':7} {'':5} ratios: shm/socket {rate['shm'] / rate['socket']:.3f}, "
            f"shm/in-process {rate['shm'] / rate['in-process']:.3f}, "
            f"socket/in-process {rate['socket'] / rate['in-process']:.3f}, "
            f"in-process/forward {rate['in-process'] / rate['forward']:.3f}"
        )


def _input(model: BenchModel) -> tuple[tuple[int, ...], bytes, str]:
    return model.input_shape, model.body, model.content_type


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--models", default="resnet,pool,echo", help="of resnet,pool,echo (resnet,pool,echo)"
    )
    parser.add_argument("--batches", type=lambda s: [int(x) for x in s.split(",")], default=[1, 8])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0, help="measured per point")
    parser.add_argument("--threads", type=int, default=min(2, len(os.sched_getaffinity(0))))
    asyncio.run(_measure(parser.parse_args()))


if __name__ == "__main__":
    main()
