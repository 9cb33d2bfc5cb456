"""GPU counting and assignment, and the per-worker thread budget (no GPU needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.versions import version_config
from torchwick.server.settings import Settings
from torchwick.server.workers import WorkerSupervisor
from torchwick.server.workers.devices import (
    GpuAllocator,
    count_driver_gpus,
    thread_budget,
    visible_gpu_count,
)
from torchwick.server.workers.ipc import TOKEN_ENV


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
    config = version_config(tmp_path, name="m")
    pinned = version_config(tmp_path, name="p", device_ids=(2,))
    cpu = version_config(tmp_path, name="c", device_type="cpu")
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
    env = supervisor.worker_environment("tok")
    assert "SECRET_KEY" not in env
    assert env["PATH"] == "/bin"
    assert env[TOKEN_ENV] == "tok"
    # Worker settings are not in the environment: the worker sets these from its LOAD frame.
    assert env["OMP_NUM_THREADS"] == "16" and "MKL_NUM_THREADS" not in env
    assert not any(name.startswith("TORCHWICK_") and name != TOKEN_ENV for name in env)
    await supervisor.close()


@pytest.mark.parametrize(("worker_threads", "threads", "adaptive"), [(0, 4, True), (3, 3, False)])
async def test_new_worker_load_frame_is_derived_from_the_version_config(
    tmp_path: Path, worker_threads: int, threads: int, adaptive: bool
) -> None:
    settings = Settings(log_location=tmp_path, worker_threads=worker_threads)
    supervisor = WorkerSupervisor(settings, gpu_count=2, cpu_count=8, environ={})
    config = version_config(
        tmp_path,
        name="m",
        version="2.0",
        handler="h.py:handle",
        batch_size=8,
        manifest={"model": {"modelName": "m"}},
        yaml_config={"handler": {"k": 1}},
        max_response_size=1234,
        limit_max_image_pixels=False,
        decode_input_request=False,
        service_envelope="json",
    )
    supervisor.open_slot(config, "m")
    worker_id, gpu_id = supervisor.open_slot(config, "m")  # two live slots: 8 cores / 2
    worker = supervisor.new_worker(config, worker_id, gpu_id)
    assert worker.name == "W-9001-m_2.0"
    assert worker.spec == config.load_spec(
        gpu_id=1, threads=threads, adaptive_threads=adaptive, omp_spin_count=1000
    )
    spec = worker.spec
    assert (spec.model_dir, spec.handler, spec.batch_size, spec.gpu_id) == (
        str(tmp_path),
        "h.py:handle",
        8,
        1,
    )
    assert (spec.threads, spec.adaptive_threads, spec.max_response_size) == (
        threads,
        adaptive,
        1234,
    )
    assert spec.manifest == {"model": {"modelName": "m"}}
    assert spec.model_yaml_config == {"handler": {"k": 1}}
    assert (spec.limit_max_image_pixels, spec.decode_input_request) == (False, False)
    assert spec.service_envelope == "json"
    await supervisor.close()
