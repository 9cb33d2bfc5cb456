"""GPU counting and assignment, and the per-worker thread budget (no GPU needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from torchwick.handlers.messages import LoadSpec
from torchwick.server.settings import Settings
from torchwick.server.workers import WorkerPoolConfig, WorkerSupervisor
from torchwick.server.workers.devices import (
    GpuAllocator,
    count_driver_gpus,
    thread_budget,
    visible_gpu_count,
)


def test_count_driver_gpus_from_proc_then_dev(tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    dev = tmp_path / "dev"
    dev.mkdir()
    for name in ("nvidia0", "nvidia1", "nvidiactl", "nvidia-uvm", "null"):
        (dev / name).touch()
    assert count_driver_gpus(proc, dev) == 2  # no /proc entry: device nodes
    proc.mkdir()
    for bus in ("0000:01:00.0", "0000:02:00.0", "0000:03:00.0"):
        (proc / bus).mkdir()
    assert count_driver_gpus(proc, dev) == 3
    assert count_driver_gpus(tmp_path / "none", tmp_path / "none") == 0


@pytest.mark.parametrize(
    ("env", "limit", "expected"),
    [
        ({}, None, 4),
        ({}, 2, 2),
        ({}, 0, 0),
        ({"CUDA_VISIBLE_DEVICES": "1,3"}, None, 2),
        ({"CUDA_VISIBLE_DEVICES": "1,3"}, 1, 1),
        ({"CUDA_VISIBLE_DEVICES": ""}, None, 0),
        ({"CUDA_VISIBLE_DEVICES": "-1"}, None, 0),
        ({"CUDA_VISIBLE_DEVICES": "0,7,1"}, None, 1),  # stops at the first invalid id
        ({"CUDA_VISIBLE_DEVICES": "GPU-aaaa,GPU-bbbb"}, None, 2),
        ({"CUDA_VISIBLE_DEVICES": "0,1,2,3,0,1"}, None, 4),
    ],
)
def test_visible_gpu_count(env: dict[str, str], limit: int | None, expected: int) -> None:
    assert visible_gpu_count(4, env, limit) == expected


def test_no_driver_means_no_gpu_whatever_the_environment() -> None:
    assert visible_gpu_count(0, {"CUDA_VISIBLE_DEVICES": "0,1"}, None) == 0


def test_allocator_round_robins_and_balances() -> None:
    gpus = GpuAllocator(3)
    assert [gpus.assign("auto", None, "m") for _ in range(4)] == [0, 1, 2, 0]
    gpus.release(1)
    assert gpus.assign("gpu", None, "m") == 1  # the least-loaded GPU comes first
    assert gpus.load() == [2, 1, 1]


def test_allocator_honours_device_ids_and_cpu() -> None:
    gpus = GpuAllocator(4)
    assert [gpus.assign("auto", (2, 3), "m") for _ in range(3)] == [2, 3, 2]
    assert gpus.assign("cpu", (2,), "m") is None
    assert gpus.assign("auto", None, "m") == 0  # other pools go to the idle GPUs
    assert gpus.assign("auto", (9,), "m") in (0, 1)  # invalid ids: any visible GPU
    assert gpus.assign("neuron", None, "m") is None


def test_allocator_without_gpus_gives_cpu(caplog: pytest.LogCaptureFixture) -> None:
    gpus = GpuAllocator(0)
    assert gpus.assign("auto", None, "m") is None
    assert gpus.assign("gpu", (0,), "m") is None
    assert "no GPU is visible" in caplog.text
    gpus.release(None)
    gpus.release(0)


def test_thread_budget() -> None:
    assert thread_budget(0, 8, 2) == 4
    assert thread_budget(0, 2, 3) == 1
    assert thread_budget(0, 2, 0) == 2
    assert thread_budget(3, 2, 8) == 3


async def test_supervisor_spreads_slots_over_gpus_and_splits_cores(tmp_path: Path) -> None:
    settings = Settings(log_location=tmp_path, number_of_gpu=3)
    supervisor = WorkerSupervisor(settings, gpu_count=4, cpu_count=8, environ={})
    config = WorkerPoolConfig(load_spec=LoadSpec("m", "1", str(tmp_path), "h.py"))
    pinned = WorkerPoolConfig(load_spec=LoadSpec("p", "1", str(tmp_path), "h.py"), device_ids=(2,))
    cpu = WorkerPoolConfig(load_spec=LoadSpec("c", "1", str(tmp_path), "h.py"), device_type="cpu")
    assert supervisor.gpus.visible == 3  # number_of_gpu caps the 4 detected
    slots = [supervisor.open_slot(config, "m") for _ in range(2)]
    assert slots == [(9000, 0), (9001, 1)]
    assert supervisor.open_slot(pinned, "p") == (9002, 2)
    assert supervisor.open_slot(cpu, "c") == (9003, None)
    assert supervisor.threads_per_worker() == 2  # 8 cores / 4 workers
    supervisor.close_slot(9001, 1)
    assert supervisor.threads_per_worker() == 2  # 8 // 3
    assert supervisor.open_slot(config, "m") == (9004, 1)  # ids never repeat
    await supervisor.close()


async def test_supervisor_worker_environment(tmp_path: Path) -> None:
    settings = Settings(log_location=tmp_path, worker_threads=3, blacklist_env_vars="SECRET_.*")
    environ = {"PATH": "/bin", "SECRET_KEY": "x", "OMP_NUM_THREADS": "16"}
    supervisor = WorkerSupervisor(settings, environ=environ, cpu_count=8)
    env = supervisor.worker_environment(supervisor.threads_per_worker(), "tok")
    assert env["OMP_NUM_THREADS"] == env["MKL_NUM_THREADS"] == "3"
    assert "SECRET_KEY" not in env
    assert env["PATH"] == "/bin"
    assert env["TORCHWICK_WORKER_TOKEN"] == "tok"
    await supervisor.close()
