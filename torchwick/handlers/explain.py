"""Integrated-gradients explanations for ``/explanations`` (no captum needed).

``integrated_gradients(model, inputs, targets)`` attributes each class score to the input
features: the gradient of ``model(x)[i, target_i]`` is averaged along the straight path from a
zero baseline to ``x`` (``steps`` right-Riemann points, 15 by default like TorchServe's
vision handlers) and multiplied by ``x - baseline``. The attributions have the input's shape.

Failure mode: ``PredictionException`` with status 400 when the model cannot be
differentiated (ONNX graphs, integer inputs such as token ids) or the target is out of range.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from .errors import PredictionException

DEFAULT_STEPS = 15


def _scores(output: Any) -> torch.Tensor:
    # Segmenters return {"out": ...}; classifiers a [N, C] tensor. Spatial outputs are
    # summed per class so that a target class still has one score per sample.
    if isinstance(output, dict) and "out" in output:
        output = output["out"]
    if not isinstance(output, torch.Tensor):
        raise PredictionException(
            "explanations need a model that returns a class-score tensor", 400
        )
    scores: torch.Tensor = output.flatten(2).sum(-1) if output.dim() > 2 else output
    return scores


def integrated_gradients(
    model: Any,
    inputs: torch.Tensor,
    targets: Sequence[int],
    steps: int = DEFAULT_STEPS,
) -> torch.Tensor:
    """Attributions of shape ``inputs.shape`` for ``targets`` (one class index per sample)."""
    if not isinstance(model, torch.nn.Module):
        raise PredictionException(
            "explanations need a PyTorch model (eager or TorchScript); ONNX graphs "
            "cannot be differentiated here",
            400,
        )
    if not inputs.is_floating_point():
        raise PredictionException(
            "explanations need floating-point inputs; this model takes integer ids", 400
        )
    target = torch.as_tensor(list(targets), dtype=torch.long, device=inputs.device)
    baseline = torch.zeros_like(inputs)
    delta = inputs - baseline
    total = torch.zeros_like(inputs)
    # inference_mode tensors cannot join autograd; clone outside it.
    with torch.inference_mode(False), torch.enable_grad():
        delta = delta.clone()
        baseline = baseline.clone()
        total = total.clone()
        for step in range(1, steps + 1):
            point = (baseline + delta * (step / steps)).requires_grad_(True)
            scores = _scores(model(point))
            if int(target.max()) >= scores.shape[1] or int(target.min()) < 0:
                raise PredictionException(
                    f"explanation target must be a class index below {scores.shape[1]}", 400
                )
            picked = scores.gather(1, target.view(-1, 1)).sum()
            (grad,) = torch.autograd.grad(picked, point)
            total += grad.detach()
    return delta * total / steps
