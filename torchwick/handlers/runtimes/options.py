"""Model-config options that change how a model runs: ``torch.compile`` and half precision.

* ``pt2: {compile: {enable: true, backend: ..., mode: ..., fullgraph: ..., dynamic: ...,
  options: {...}}}`` or the legacy ``pt2: <backend>`` wrap the model with ``torch.compile``.
  A failure to compile (now, or at the first inference) logs a warning and the model runs
  uncompiled; see ``BaseHandler.inference``.
* ``handler: {half: true}`` converts the model to ``float16`` and casts floating inputs to it
  (outputs are cast back to ``float32`` for postprocessing). Meant for CUDA; on CPU it works
  for common layers but is usually slower, so a warning is logged. ONNX models are left alone.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

logger = logging.getLogger("torchwick.model")

_COMPILE_KEYS = ("backend", "mode", "fullgraph", "dynamic", "options", "disable")


def handler_config(config: dict[str, Any]) -> dict[str, Any]:
    """The free ``handler:`` section of the model-config (``{}`` when absent or not a map)."""
    section = config.get("handler")
    return section if isinstance(section, dict) else {}


def wants_half(config: dict[str, Any]) -> bool:
    return bool(handler_config(config).get("half", False))


def compile_options(config: dict[str, Any]) -> dict[str, Any] | None:
    """``torch.compile`` keyword arguments, or ``None`` when compilation was not asked for."""
    pt2 = config.get("pt2")
    if isinstance(pt2, str) and pt2:
        return {"backend": pt2}
    if not isinstance(pt2, dict):
        return None
    section = pt2.get("compile")
    if not isinstance(section, dict) or not section.get("enable"):
        return None
    unknown = sorted(k for k in section if k not in (*_COMPILE_KEYS, "enable"))
    if unknown:
        logger.warning("pt2.compile: ignoring unknown option(s) %s", unknown)
    return {k: section[k] for k in _COMPILE_KEYS if k in section}


def maybe_compile(model: Any, options: dict[str, Any] | None) -> Any:
    """``torch.compile(model, **options)``, or ``model`` itself when that fails."""
    if options is None or not isinstance(model, torch.nn.Module):
        return model
    try:
        compiled = torch.compile(model, **options)
    except Exception as exc:
        logger.warning("torch.compile(%s) failed, running uncompiled: %s", options, exc)
        return model
    logger.info("model compiled with torch.compile(%s)", options)
    return compiled


def to_half(model: Any, device: torch.device) -> Any:
    """``model.half()`` for torch modules; a warning on CPU, where fp16 is rarely faster."""
    if not isinstance(model, torch.nn.Module):
        logger.warning("half precision applies to PyTorch models only; ignoring handler.half")
        return model
    if device.type == "cpu":
        logger.warning("handler.half on CPU: float16 kernels are slow or missing on many CPUs")
    return model.half()
