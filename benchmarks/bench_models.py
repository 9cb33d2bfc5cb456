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
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn


@dataclass(frozen=True)
class BenchModel:
    """A built model: its TorchScript file, its input shape and one request body."""

    name: str
    scripted_path: Path
    input_shape: tuple[int, ...]
    body: bytes
    content_type: str


class Mlp(nn.Module):
    """64 -> 256 -> 256 -> 10."""

    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(64, 256),
            nn.ReLU(),
            nn.Linear(256, 256),
            nn.ReLU(),
            nn.Linear(256, 10),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.layers(x)
        return out


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with batch norm and a residual connection."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        result: torch.Tensor = self.relu(out + self.shortcut(x))
        return result


class ResNet18Shaped(nn.Module):
    """The ResNet-18 layout: 7x7 stem, four stages of two basic blocks, 1000-way linear head."""

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, 64, 7, 2, 3, bias=False),
            nn.BatchNorm2d(64),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2, 1),
        )
        stages: list[nn.Module] = []
        in_channels = 64
        for out_channels, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            stages.append(BasicBlock(in_channels, out_channels, stride))
            stages.append(BasicBlock(out_channels, out_channels, 1))
            in_channels = out_channels
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages(self.stem(x))
        logits: torch.Tensor = self.fc(torch.flatten(self.pool(x), 1))
        return logits


MODEL_NAMES = ("mlp", "resnet")


def build_model(name: str, directory: Path, seed: int = 0) -> BenchModel:
    """Script model ``name`` with seeded random weights into ``directory``; make its body."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed + 1)
    module: nn.Module
    if name == "mlp":
        module = Mlp()
        shape: tuple[int, ...] = (64,)
        sample = torch.randn(shape, generator=generator)
        body = json.dumps([round(v, 6) for v in sample.tolist()]).encode()
        content_type = "application/json"
    elif name == "resnet":
        module = ResNet18Shaped()
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
