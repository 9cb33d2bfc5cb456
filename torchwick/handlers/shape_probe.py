"""Is a failing input at fault? Re-run the model on shape-only (``meta``) tensors and see.

When a model fails on a request before it has ever run successfully, nothing says whether the
input or the model is wrong. A ``meta`` tensor has a shape and a dtype but no data, and torch
runs most operators on it by computing output shapes only. So the forward is repeated with
the model's weights and the inputs replaced by meta tensors: if that fails too, the failure is
decided by the shapes and dtypes alone, so the input does not fit the model (400); if it
succeeds, the failure depended on the values and is the model's (500).

* eager ``nn.Module``: ``torch.func.functional_call`` with meta copies of its parameters and
  buffers (no weight memory is allocated);
* TorchScript: the archive's file loaded once more with ``map_location="meta"`` (on the
  first probe only), then called with meta inputs;
* ONNX and anything else: no probe (ONNX graphs declare their input shapes, which are
  checked before the model runs).

Failure mode: a probe never raises. An operator that has no meta implementation raises
``NotImplementedError`` and makes the probe answer "unknown" (``False``, the failure stays
the model's). A model that cannot run on meta tensors for another reason (it reads a
tensor's values, for example with ``.item()``) makes a failing first input a 400: the
documented cost of the probe, and only until the model has run once (after that the shapes
it ran on decide, see ``pipeline``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

logger = logging.getLogger("torchwick.model")

#: ``inputs -> True`` when the model fails on those inputs' shapes and dtypes alone.
ShapeProbe = Callable[[Any], bool]


def _to_meta(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return torch.empty_like(value, device="meta")
    if isinstance(value, tuple | list):
        return type(value)(_to_meta(v) for v in value)
    if isinstance(value, dict):
        return {k: _to_meta(v) for k, v in value.items()}
    return value


def _call(model: Callable[..., Any], inputs: Any) -> None:
    if isinstance(inputs, tuple):
        model(*inputs)
    else:
        model(inputs)


def _fails(run: Callable[[], None]) -> bool:
    try:
        with torch.inference_mode():
            run()
    except NotImplementedError:
        return False
    except Exception as exc:
        logger.debug("shape-only forward failed too: %s", exc)
        return True
    return False


def eager_probe(model: torch.nn.Module) -> ShapeProbe:
    """The probe for an eager module (see the module docstring)."""

    def probe(inputs: Any) -> bool:
        state = {
            name: torch.empty_like(tensor, device="meta")
            for name, tensor in (*model.named_parameters(), *model.named_buffers())
        }

        def run() -> None:
            meta_inputs = _to_meta(inputs)
            if isinstance(meta_inputs, tuple):
                torch.func.functional_call(model, state, meta_inputs)
            else:
                torch.func.functional_call(model, state, (meta_inputs,))

        return _fails(run)

    return probe


def torchscript_probe(path: Path) -> ShapeProbe:
    """The probe for a TorchScript file; the meta copy is loaded on the first call."""
    loaded: list[Any] = []

    def probe(inputs: Any) -> bool:
        if not loaded:
            try:
                meta_model = torch.jit.load(str(path), map_location="meta")  # type: ignore[no-untyped-call]
            except Exception as exc:
                logger.debug("no shape probe for %s: %s", path.name, exc)
                return False
            loaded.append(meta_model.eval())
        return _fails(lambda: _call(loaded[0], _to_meta(inputs)))

    return probe


def shape_probe(model: Any, runtime: str, serialized: Path | None) -> ShapeProbe | None:
    """The probe for a loaded model (``model`` uncompiled), or ``None`` where there is none."""
    if runtime == "eager" and isinstance(model, torch.nn.Module):
        return eager_probe(model)
    if runtime == "torchscript" and serialized is not None:
        return torchscript_probe(serialized)
    return None
