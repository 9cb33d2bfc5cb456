"""TorchScript runtime: ``torch.jit.load`` onto the worker's device.

Failure mode: ``RuntimeError`` naming the file when it is not a TorchScript archive (for
example a plain state dict given without ``--model-file``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch


def load_torchscript(path: Path, device: torch.device) -> Any:
    """The scripted/traced module, in eval mode."""
    try:
        model = torch.jit.load(str(path), map_location=device)  # type: ignore[no-untyped-call]
    except Exception as exc:
        raise RuntimeError(
            f"{path.name} is not a TorchScript model ({exc}); an eager state dict needs "
            "the model class too (torch-model-archiver --model-file)"
        ) from exc
    return model.eval()
