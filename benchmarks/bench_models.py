"""Benchmark models, request bodies and the in-process forward ceiling.

Both models are written here by hand and get random weights from a fixed seed: nothing is
downloaded. They are saved as TorchScript, which both servers load through
``BaseHandler._load_torchscript_model``.

- ``mlp``: 64 -> 256 -> 256 -> 10 with ReLU; a request is 64 floats as a JSON list.
- ``resnet``: the ResNet-18 layout (BasicBlock x [2, 2, 2, 2], 1000 classes, no torchvision);
  a request is one 3x224x224 float32 tensor as raw little-endian bytes.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

# The models are the project's example models (one definition for demo, tests and benchmarks).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from examples.models import MLP, ResNet18


@dataclass(frozen=True)
class BenchModel:
    """A built model: its TorchScript file, its input shape and one request body."""

    name: str
    scripted_path: Path
    input_shape: tuple[int, ...]
    body: bytes
    content_type: str


MODEL_NAMES = ("mlp", "resnet")


def build_model(name: str, directory: Path, seed: int = 0) -> BenchModel:
    """Script model ``name`` with seeded random weights into ``directory``; make its body."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed + 1)
    module: nn.Module
    if name == "mlp":
        module = MLP()
        shape: tuple[int, ...] = (64,)
        sample = torch.randn(shape, generator=generator)
        body = json.dumps([round(v, 6) for v in sample.tolist()]).encode()
        content_type = "application/json"
    elif name == "resnet":
        module = ResNet18()
        shape = (3, 224, 224)
        sample = torch.randn(shape, generator=generator)
        body = sample.numpy().astype("<f4").tobytes()
        content_type = "application/octet-stream"
    else:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(MODEL_NAMES)}")
    module.eval()
    scripted = torch.jit.script(module)
    path = directory / f"{name}.pt"
    scripted.save(str(path))  # type: ignore[no-untyped-call]
    return BenchModel(name, path, shape, body, content_type)


@dataclass(frozen=True)
class Ceiling:
    """One timing of the forward pass alone, at one batch size and thread count."""

    model: str
    batch_size: int
    threads: int
    samples_per_s: float
    forward_ms: float


class CeilingMeter:
    """Times the scripted models' forward pass in this process (the in-process ceiling).

    Each model is loaded once, from the same TorchScript file the servers load. A timing sets
    ``torch.set_num_threads(threads)`` (restored afterwards), runs a short warm-up, then calls
    the model on one fixed random batch for ``seconds`` under ``torch.inference_mode``.
    """

    def __init__(self) -> None:
        self._loaded: dict[Path, torch.jit.ScriptModule] = {}

    def _module(self, model: BenchModel) -> torch.jit.ScriptModule:
        module = self._loaded.get(model.scripted_path)
        if module is None:
            module = torch.jit.load(str(model.scripted_path))  # type: ignore[no-untyped-call]
            module.eval()
            self._loaded[model.scripted_path] = module
        return module

    def measure(self, model: BenchModel, batch_size: int, threads: int, seconds: float) -> Ceiling:
        module = self._module(model)
        previous_threads = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            batch = torch.randn((batch_size, *model.input_shape))
            with torch.inference_mode():
                for _ in range(3):  # the profiling executor optimises over the first calls
                    module(batch)
                calls = 0
                start = time.perf_counter()
                deadline = start + seconds
                while True:
                    module(batch)
                    calls += 1
                    now = time.perf_counter()
                    if now >= deadline:
                        break
        finally:
            torch.set_num_threads(previous_threads)
        elapsed = now - start
        return Ceiling(
            model.name, batch_size, threads, calls * batch_size / elapsed, elapsed / calls * 1e3
        )
