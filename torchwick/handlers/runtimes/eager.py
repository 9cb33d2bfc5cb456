"""Eager runtime: a model class from the archive's ``modelFile`` plus a state dict.

The class is the one ``torch.nn.Module`` subclass defined in ``modelFile`` that can be built
without arguments (helper modules such as residual blocks that need arguments are skipped).
Weights are read with ``torch.load(weights_only=True)``, so a pickled whole model is refused,
or with ``safetensors`` when the file ends in ``.safetensors``. A checkpoint dict that wraps
the weights under ``state_dict``/``model_state_dict`` is unwrapped.

Failure mode: ``RuntimeError`` naming the file and the reason (no class, several classes,
not a state dict, missing/unexpected keys).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ..loader import contained_file, import_file


def _no_arg_constructible(cls: type) -> bool:
    try:
        signature = inspect.signature(cls)
    except (TypeError, ValueError):
        return False
    return all(
        p.default is not inspect.Parameter.empty
        or p.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
        for p in signature.parameters.values()
    )


def find_model_class(module: Any, source: str) -> type[torch.nn.Module]:
    """The single argument-free ``nn.Module`` subclass defined in ``module``."""
    candidates = [
        obj
        for _, obj in inspect.getmembers(module, inspect.isclass)
        if obj.__module__ == module.__name__
        and issubclass(obj, torch.nn.Module)
        and _no_arg_constructible(obj)
    ]
    if len(candidates) != 1:
        names = ", ".join(c.__name__ for c in candidates) or "none"
        raise RuntimeError(
            f"{source} must define exactly one torch.nn.Module subclass that can be built "
            f"without arguments (found: {names})"
        )
    return candidates[0]


def read_state_dict(path: Path, device: torch.device) -> Mapping[str, Any]:
    """Tensors from ``.safetensors`` or a ``torch.save``d state dict (weights only)."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return dict(load_file(str(path), device=str(device)))
    try:
        loaded = torch.load(str(path), map_location=device, weights_only=True)
    except Exception as exc:
        raise RuntimeError(
            f"{path.name} could not be read as a state dict with torch.load(weights_only=True)"
            f" (a pickled whole model is not accepted; save model.state_dict()): {exc}"
        ) from exc
    if isinstance(loaded, Mapping):
        # A state dict maps names to tensors; anything else is a training checkpoint that
        # may carry the weights under a conventional key.
        if not all(isinstance(v, torch.Tensor) for v in loaded.values()):
            for key in ("state_dict", "model_state_dict"):
                inner = loaded.get(key)
                if isinstance(inner, Mapping):
                    return inner
        return loaded
    raise RuntimeError(f"{path.name} holds a {type(loaded).__name__}, not a state dict")


def load_eager(
    model_dir: Path, model_file: str, serialized_file: str | None, device: torch.device
) -> torch.nn.Module:
    """Build the model class from ``model_file`` and load ``serialized_file`` into it."""
    path = contained_file(model_dir, model_file)
    module = import_file(path, path.stem)
    model = find_model_class(module, model_file)()
    if serialized_file:
        weights = contained_file(model_dir, serialized_file)
        model.load_state_dict(read_state_dict(weights, device))
    return model.to(device).eval()
