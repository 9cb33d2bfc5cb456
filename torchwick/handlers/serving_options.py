"""Per-model serving options of the model-config's ``handler:`` section (torchwick additions).

One parser, used by the frontend at registration (an invalid value is a 400 naming the key)
and by the worker at load (the same document, so both ends agree):

* ``pipeline_depth`` (1-4, default 1): batches a worker holds at once. With 2 or more the
  frontend sends the next batch while the current one runs, and the worker preprocesses it
  (image decode and resize) while the current batch is in the forward pass.
* ``preprocess_threads`` (0-32, default 0): threads that decode a batch's images in parallel
  in the built-in vision handlers; 0 decodes them one after another.
* ``pin_memory`` (default true): on CUDA, batches are stacked into reused page-locked host
  buffers and copied to the GPU with ``non_blocking=True``. No effect on CPU.
* ``cuda_graphs`` (default false): capture and replay a CUDA graph per input shape (CUDA
  only; ignored with a warning on CPU).
* ``gpu_memory_fraction`` (a number in (0, 1], or ``"auto"``): the share of the GPU's memory
  this worker's caching allocator may use (``torch.cuda.set_per_process_memory_fraction``);
  ``auto`` divides it among the workers placed on that GPU. Unset: no limit.

Failure mode: ``ValueError`` naming the key and what is wrong.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

MAX_PIPELINE_DEPTH = 4
MAX_PREPROCESS_THREADS = 32
#: The share ``auto`` leaves unassigned, for the CUDA context and allocator slack.
AUTO_MEMORY_HEADROOM = 0.95


@dataclass(frozen=True, slots=True)
class ServingOptions:
    """The parsed options; see the module docstring for each one's meaning."""

    pipeline_depth: int = 1
    preprocess_threads: int = 0
    pin_memory: bool = True
    cuda_graphs: bool = False
    #: ``None``: no limit; ``"auto"``: shared among the GPU's workers; else the fraction.
    gpu_memory_fraction: float | str | None = None


def _int(section: Mapping[str, Any], key: str, low: int, high: int, default: int) -> int:
    value = section.get(key, default)
    if type(value) is not int or not low <= value <= high:
        raise ValueError(f"handler.{key} must be an integer from {low} to {high}, got {value!r}")
    return value


def _bool(section: Mapping[str, Any], key: str, default: bool) -> bool:
    value = section.get(key, default)
    if type(value) is not bool:
        raise ValueError(f"handler.{key} must be true or false, got {value!r}")
    return value


def _fraction(section: Mapping[str, Any]) -> float | str | None:
    value = section.get("gpu_memory_fraction")
    if value is None or value == "auto":
        return value
    if type(value) in (int, float) and 0.0 < float(value) <= 1.0:
        return float(value)
    raise ValueError(
        f"handler.gpu_memory_fraction must be a number in (0, 1] or 'auto', got {value!r}"
    )


def serving_options(model_yaml_config: Mapping[str, Any]) -> ServingOptions:
    """The options of a model-config document (defaults when its ``handler:`` lacks them)."""
    section = model_yaml_config.get("handler")
    if not isinstance(section, Mapping):
        return ServingOptions()
    return ServingOptions(
        pipeline_depth=_int(section, "pipeline_depth", 1, MAX_PIPELINE_DEPTH, 1),
        preprocess_threads=_int(section, "preprocess_threads", 0, MAX_PREPROCESS_THREADS, 0),
        pin_memory=_bool(section, "pin_memory", True),
        cuda_graphs=_bool(section, "cuda_graphs", False),
        gpu_memory_fraction=_fraction(section),
    )


def memory_fraction(option: float | str | None, workers_on_gpu: int) -> float | None:
    """The fraction to pass to ``set_per_process_memory_fraction``, or ``None`` for no limit.

    ``auto`` gives each of ``workers_on_gpu`` workers an equal share of 95% of the memory
    (``workers_on_gpu`` below 1 counts as 1).
    """
    if option is None:
        return None
    if option == "auto":
        return AUTO_MEMORY_HEADROOM / max(1, workers_on_gpu)
    return float(option)
