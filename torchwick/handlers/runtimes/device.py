"""Choosing the worker's device.

``cuda:<gpu_id>`` when CUDA is available and the worker was given a GPU id, else ``cpu``.
(TorchServe also probes XPU, MPS and XLA; torchwick serves CUDA and CPU only.)
"""

from __future__ import annotations

import torch


def select_device(gpu_id: int | str | None) -> torch.device:
    """The device a handler should load its model on and run inference with (``gpu_id`` may
    be text, as TorchServe's ``MockContext`` gives it)."""
    if gpu_id is None or not torch.cuda.is_available():
        return torch.device("cpu")
    index = int(gpu_id)
    return torch.device(f"cuda:{index}") if index >= 0 else torch.device("cpu")
