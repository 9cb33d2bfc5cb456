"""Loading a model for a handler: eager, TorchScript or ONNX, then compile / half options.

``load_model`` reads the manifest's ``model`` section (TorchServe's camelCase keys; snake_case
is accepted too) and picks the runtime like TorchServe does:

* ``modelFile`` given -> eager (``runtimes.eager``);
* else ``serializedFile`` ending ``.onnx`` -> ONNX Runtime (``runtimes.onnx``);
* else ``serializedFile`` ending ``.safetensors`` -> refused: the class is needed;
* else any other ``serializedFile`` (``.pt``, ``.ts``, ...) -> TorchScript.

Then ``pt2`` (torch.compile) and ``handler.half`` from the model-config apply to PyTorch
models (``runtimes.options``), and ``handler.cuda_graphs`` wraps them for CUDA graph replay on
CUDA (``runtimes.cuda_graphs``). ``runtimes.feeder`` moves batches to the device.

Failure mode: ``RuntimeError`` whose message names the file and the problem; the service
turns it into ``HandlerLoadError``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..loader import contained_file
from ..serving_options import serving_options
from .cuda_graphs import wrap_cuda_graphs
from .device import select_device
from .eager import load_eager, read_state_dict
from .feeder import DeviceFeeder, Prefetched
from .onnx import OnnxModel, load_onnx
from .options import compile_options, handler_config, maybe_compile, to_half, wants_half
from .torchscript import load_torchscript

__all__ = [
    "DeviceFeeder",
    "LoadedModel",
    "OnnxModel",
    "Prefetched",
    "handler_config",
    "load_eager",
    "load_model",
    "load_onnx",
    "load_torchscript",
    "manifest_model_files",
    "read_state_dict",
    "select_device",
]


@dataclass(frozen=True, slots=True)
class LoadedModel:
    """A model ready for inference and the facts a handler needs about it.

    ``eager_model`` is the uncompiled model when ``model`` is a ``torch.compile`` wrapper
    (the fallback if compiled execution fails). ``sample_shape``/``input_dtype`` are known
    for ONNX graphs (``None`` dims are free).
    """

    model: Any
    runtime: str
    eager_model: Any | None = None
    half: bool = False
    sample_shape: tuple[int | None, ...] | None = None
    input_dtype: torch.dtype | None = None


def manifest_model_files(manifest: dict[str, Any]) -> tuple[str | None, str | None]:
    """``(model_file, serialized_file)`` from a manifest dict."""
    section = manifest.get("model")
    model = section if isinstance(section, dict) else {}
    model_file = model.get("modelFile") or model.get("model_file")
    serialized = model.get("serializedFile") or model.get("serialized_file")
    return (model_file or None), (serialized or None)


def load_model(
    model_dir: Path,
    manifest: dict[str, Any],
    device: torch.device,
    config: dict[str, Any],
) -> LoadedModel:
    """Load the archive's model on ``device`` following the rules in the module docstring."""
    model_file, serialized = manifest_model_files(manifest)
    if model_file:
        model: Any = load_eager(model_dir, model_file, serialized, device)
        runtime = "eager"
    elif serialized and serialized.endswith(".onnx"):
        onnx_model = load_onnx(contained_file(model_dir, serialized), device)
        return LoadedModel(
            onnx_model,
            "onnx",
            sample_shape=onnx_model.sample_shape(0),
            input_dtype=onnx_model.input_dtype(0),
        )
    elif serialized and serialized.endswith(".safetensors"):
        raise RuntimeError(
            f"{serialized} holds weights only; the archive also needs the model class "
            "(torch-model-archiver --model-file)"
        )
    elif serialized:
        model = load_torchscript(contained_file(model_dir, serialized), device)
        runtime = "torchscript"
    else:
        raise RuntimeError("No model weights could be loaded: the manifest names no model files")
    half = wants_half(config)
    if half:
        model = to_half(model, device)
    options = compile_options(config)
    compiled = maybe_compile(model, options)
    if serving_options(config).cuda_graphs:
        compiled = wrap_cuda_graphs(compiled, device)
    return LoadedModel(
        compiled,
        runtime,
        eager_model=model if compiled is not model else None,
        half=half,
    )
