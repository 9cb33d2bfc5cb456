"""Choosing the worker's device.

``cuda:<gpu_id>`` when CUDA is available and the worker was given a GPU id, else ``cpu``.
(TorchServe also probes XPU, MPS and XLA; torchwick serves CUDA and CPU only.)
"""

from __future__ import annotations

import torch


def select_device(gpu_id: int | None) -> torch.device:
    """The device a handler should load its model on and run inference with."""
    if gpu_id is not None and gpu_id >= 0 and torch.cuda.is_available():
        return torch.device(f"cuda:{gpu_id}")
    return torch.device("cpu")
