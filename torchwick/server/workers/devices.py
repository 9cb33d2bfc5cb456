"""Which GPU and how many CPU threads a new worker gets.

GPU detection must not import torch in the frontend (hundreds of MB and a second of start-up
for a process that never computes). It counts the devices the NVIDIA driver lists under
``/proc/driver/nvidia/gpus`` (or, failing that, ``/dev/nvidiaN`` nodes) and narrows that by
``CUDA_VISIBLE_DEVICES`` exactly as the CUDA runtime will inside the worker.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

logger = logging.getLogger(__name__)

_DEV_NODE = re.compile(r"nvidia\d+")


def count_driver_gpus(
    proc_dir: Path = Path("/proc/driver/nvidia/gpus"), dev_dir: Path = Path("/dev")
) -> int:
    """GPUs the NVIDIA driver exposes on this machine (0 without the driver)."""
    try:
        return sum(1 for _ in proc_dir.iterdir())
    except OSError:
        pass
    try:
        return sum(1 for entry in dev_dir.iterdir() if _DEV_NODE.fullmatch(entry.name))
    except OSError:
        return 0


def torch_gpu_count_if_loaded() -> int:
    """``torch.cuda.device_count()`` when torch is already imported in this process, else 0.

    A fallback for driver layouts without ``/proc/driver/nvidia`` or ``/dev/nvidiaN`` (for
    example WSL); it never imports torch itself.
    """
    torch = sys.modules.get("torch")
    if torch is None:
        return 0
    try:
        return int(torch.cuda.device_count())
    except Exception:  # a broken CUDA install must not stop the server: run on CPU
        return 0


def visible_gpu_count(driver_gpus: int, env: Mapping[str, str], limit: int | None) -> int:
    """GPUs a worker can address: driver GPUs narrowed by ``CUDA_VISIBLE_DEVICES`` and ``limit``.

    The CUDA runtime stops reading ``CUDA_VISIBLE_DEVICES`` at the first invalid entry and hides
    everything when the variable is set but empty; integer entries beyond the driver's count are
    invalid too. UUID entries (``GPU-...``, ``MIG-...``) are taken as valid.
    """
    count = driver_gpus
    spec = env.get("CUDA_VISIBLE_DEVICES")
    if spec is not None:
        count = 0
        for raw in spec.split(","):
            entry = raw.strip()
            uuid = entry.startswith(("GPU-", "MIG-"))
            if not (uuid or (entry.isdigit() and int(entry) < driver_gpus)):
                break
            count += 1
        count = min(count, driver_gpus)
    if limit is not None:
        count = min(count, max(0, limit))
    return count


class GpuAllocator:
    """Spreads workers over GPUs: the least-loaded allowed GPU, ties broken round-robin.

    Counting live workers per GPU (rather than a bare rotating counter) keeps the spread even
    when pools with different ``device_ids`` come and go.
    """

    def __init__(self, visible: int) -> None:
        self.visible = visible
        self._load = [0] * visible
        self._cursor = 0

    def assign(self, device_type: str, device_ids: Sequence[int] | None, owner: str) -> int | None:
        """A GPU id for one new worker of ``owner``, or ``None`` for CPU. Pair with ``release``."""
        if device_type not in ("auto", "gpu", ""):
            return None  # "cpu", or an accelerator kind torchwick does not place
        if self.visible == 0:
            if device_type == "gpu":
                logger.warning("%s asks for GPU workers but no GPU is visible; using CPU", owner)
            return None
        allowed = list(range(self.visible))
        if device_ids:
            valid = [i for i in device_ids if 0 <= i < self.visible]
            if len(valid) != len(device_ids):
                logger.warning(
                    "%s: deviceIds %s include GPUs that are not visible (%d visible); using %s",
                    owner,
                    list(device_ids),
                    self.visible,
                    valid or allowed,
                )
            allowed = valid or allowed
        n = self.visible
        chosen = min(allowed, key=lambda gpu: (self._load[gpu], (gpu - self._cursor) % n))
        self._load[chosen] += 1
        self._cursor = (chosen + 1) % n
        return chosen

    def release(self, gpu_id: int | None) -> None:
        """Give back a GPU taken by ``assign`` (``None`` is ignored)."""
        if gpu_id is not None and 0 <= gpu_id < self.visible and self._load[gpu_id] > 0:
            self._load[gpu_id] -= 1

    def load(self) -> list[int]:
        """Live workers per GPU (a copy)."""
        return list(self._load)


def workers_sharing_gpu(on_gpu: int, planned_workers: int, allowed_gpus: int) -> int:
    """How many workers a GPU's memory is divided among (``gpu_memory_fraction: auto``).

    The larger of the workers placed on it now (``on_gpu``, the new one included) and this
    model's planned share of it (``planned_workers`` spread evenly over ``allowed_gpus``):
    the first worker of a model that will run four on one GPU is capped at a quarter at once,
    not given the whole GPU before the others arrive. At least 1.
    """
    planned = -(-max(0, planned_workers) // max(1, allowed_gpus))
    return max(1, on_gpu, planned)


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask; ``os.cpu_count()`` where unavailable)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def thread_budget(configured: int, cpus: int, total_workers: int) -> int:
    """torch threads for a new worker: ``configured`` when positive, else cores / workers."""
    if configured > 0:
        return configured
    return max(1, cpus // max(1, total_workers))
