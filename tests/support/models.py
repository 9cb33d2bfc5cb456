"""Small models with random weights, and helpers that lay them out as model directories.

Every model class here is self-contained (it uses only ``torch``/``nn`` and, for the ResNet,
``BasicBlock``), so ``save_eager`` can write its source into a ``model.py`` the way
``torch-model-archiver --model-file`` ships one. The directory helpers return a ``LoadSpec``
whose manifest uses TorchServe's camelCase keys.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from examples.models import MLP, BasicBlock, ResNet18
from torchwick.handlers.messages import LoadSpec

#: Re-exported so tests import every model from here.
__all__ = ["MLP", "BasicBlock", "ResNet18"]

# Models --------------------------------------------------------------------------------------


class SmallCNN(nn.Module):
    """Two conv blocks and a linear head; any input size (global average pooling)."""

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
        )
        self.head = nn.Linear(16, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.head(torch.flatten(self.features(x), 1))
        return out


class TinySegmenter(nn.Module):
    """Per-pixel logits for 4 classes, returned torchvision-style as ``{"out": logits}``."""

    def __init__(self, classes: int = 4) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, classes, 1)
        )

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"out": self.body(x)}


class TinyDetector(nn.Module):
    """Three candidate boxes per image from pooled conv features, torchvision-style output.

    Returns ``[{"boxes": [K,4], "labels": [K], "scores": [K]}]`` per image; boxes are in
    pixel coordinates of the input with x1 <= x2 and y1 <= y2.
    """

    def __init__(self, classes: int = 3, candidates: int = 3) -> None:
        super().__init__()
        self.candidates = candidates
        self.classes = classes
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1)
        )
        self.box_head = nn.Linear(8, candidates * 4)
        self.cls_head = nn.Linear(8, candidates * classes)

    def raw(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        feats = torch.flatten(self.features(x), 1)
        n = x.shape[0]
        rel = torch.sigmoid(self.box_head(feats)).view(n, self.candidates, 4)
        # Sizes as tensors, so tracing/ONNX export keeps them dynamic instead of baking in
        # the example input's size.
        w = torch.ones_like(x[0, 0, 0, :]).sum()
        h = torch.ones_like(x[0, 0, :, 0]).sum()
        x1 = torch.minimum(rel[..., 0], rel[..., 2]) * w
        x2 = torch.maximum(rel[..., 0], rel[..., 2]) * w
        y1 = torch.minimum(rel[..., 1], rel[..., 3]) * h
        y2 = torch.maximum(rel[..., 1], rel[..., 3]) * h
        boxes = torch.stack([x1, y1, x2, y2], dim=-1)
        probs = torch.softmax(self.cls_head(feats).view(n, self.candidates, self.classes), -1)
        scores, labels = probs.max(-1)
        return boxes, labels, scores

    def forward(self, x: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        boxes, labels, scores = self.raw(x)
        out: list[dict[str, torch.Tensor]] = []
        for i in range(x.shape[0]):
            out.append({"boxes": boxes[i], "labels": labels[i], "scores": scores[i]})
        return out


class TinyDetectorTensors(nn.Module):
    """``TinyDetector`` with batched tensor outputs, for ONNX export."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = TinyDetector()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.inner.raw(x)


class TinyTextClassifier(nn.Module):
    """EmbeddingBag (mean) + linear, 4 classes.

    Called as ``model(ids, offsets)`` with flat ids and bag offsets (the default
    ``text_classifier`` convention), or ``model(ids)`` with a padded ``[N, L]`` batch whose
    pad id 0 is ignored.
    """

    def __init__(self, vocab_size: int = 64, dim: int = 16, classes: int = 4) -> None:
        super().__init__()
        self.embedding = nn.EmbeddingBag(vocab_size, dim, mode="mean", padding_idx=0)
        self.fc = nn.Linear(dim, classes)

    def forward(self, ids: torch.Tensor, offsets: torch.Tensor | None = None) -> torch.Tensor:
        if offsets is not None:
            bags: torch.Tensor = self.fc(self.embedding(ids, offsets))
            return bags
        # Padded batch: the same mean over non-pad tokens, written with plain ops because
        # ONNX export has no EmbeddingBag with padding_idx.
        vectors = nn.functional.embedding(ids, self.embedding.weight)
        mask = (ids != 0).unsqueeze(-1).to(vectors.dtype)
        padded: torch.Tensor = self.fc((vectors * mask).sum(1) / mask.sum(1).clamp(min=1.0))
        return padded


# Model directories ---------------------------------------------------------------------------


def write_spec(
    model_dir: Path,
    handler: str,
    *,
    serialized_file: str | None = None,
    model_file: str | None = None,
    config: dict[str, Any] | None = None,
    model_name: str = "m",
    batch_size: int = 4,
    gpu_id: int | None = None,
) -> LoadSpec:
    """A ``LoadSpec`` (and MANIFEST-like dict) for files already in ``model_dir``."""
    model: dict[str, Any] = {"modelName": model_name, "modelVersion": "1.0", "handler": handler}
    if serialized_file:
        model["serializedFile"] = serialized_file
    if model_file:
        model["modelFile"] = model_file
    manifest = {"runtime": "python", "model": model, "archiverVersion": "0.12.0"}
    return LoadSpec(
        model_name=model_name,
        model_version="1.0",
        model_dir=str(model_dir),
        handler=handler,
        batch_size=batch_size,
        gpu_id=gpu_id,
        manifest=manifest,
        model_yaml_config=config or {},
    )


def model_source(classes: Sequence[type]) -> str:
    """A ``model.py`` text defining ``classes`` (dependencies first)."""
    parts = ["from __future__ import annotations\n", "import torch\nfrom torch import nn\n"]
    parts += [inspect.getsource(cls) for cls in classes]
    return "\n\n".join(parts)


def save_eager(
    model: nn.Module,
    model_dir: Path,
    classes: Sequence[type] | None = None,
    *,
    safetensors: bool = False,
) -> tuple[str, str]:
    """Write ``model.py`` and the state dict; returns ``(model_file, serialized_file)``."""
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / "model.py").write_text(model_source(classes or [type(model)]))
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    if safetensors:
        from safetensors.torch import save_file

        save_file(state, str(model_dir / "model.safetensors"))
        return "model.py", "model.safetensors"
    torch.save(state, model_dir / "model.pt")
    return "model.py", "model.pt"


def save_torchscript(
    model: nn.Module, model_dir: Path, example: Any = None, *, script: bool = False
) -> str:
    """Trace (or script) ``model`` to ``model_dir/model.ts.pt``; returns the file name."""
    model_dir.mkdir(parents=True, exist_ok=True)
    model.eval()
    if script:
        compiled: Any = torch.jit.script(model)
    else:
        args = example if isinstance(example, tuple) else (example,)
        compiled = torch.jit.trace(model, args)  # type: ignore[no-untyped-call]
    compiled.save(str(model_dir / "model.ts.pt"))
    return "model.ts.pt"


def save_onnx(
    model: nn.Module,
    model_dir: Path,
    example: Any,
    *,
    input_names: Sequence[str] = ("input",),
    output_names: Sequence[str] = ("output",),
    dynamic_axes: dict[str, dict[int, str]] | None = None,
) -> str:
    """Export ``model`` with the TorchScript-based exporter (no onnxscript needed)."""
    model_dir.mkdir(parents=True, exist_ok=True)
    model.eval()
    args = example if isinstance(example, tuple) else (example,)
    axes = dynamic_axes or {name: {0: "batch"} for name in (*input_names, *output_names)}
    torch.onnx.export(
        model,
        args,
        str(model_dir / "model.onnx"),
        input_names=list(input_names),
        output_names=list(output_names),
        dynamic_axes=axes,
        opset_version=17,
        dynamo=False,
    )
    return "model.onnx"


def write_labels(model_dir: Path, labels: Sequence[str], *, as_lists: bool = False) -> None:
    """``index_to_name.json``; ``as_lists`` writes ImageNet-style ``[id, name]`` entries."""
    mapping: dict[str, Any] = {
        str(i): ([f"n{i:08d}", name] if as_lists else name) for i, name in enumerate(labels)
    }
    (model_dir / "index_to_name.json").write_text(json.dumps(mapping))


def model_dir_for(
    runtime: str,
    model: nn.Module,
    model_dir: Path,
    handler: str,
    *,
    example: Any = None,
    classes: Sequence[type] | None = None,
    config: dict[str, Any] | None = None,
    script: bool = False,
    onnx_model: nn.Module | None = None,
    onnx_kwargs: dict[str, Any] | None = None,
) -> LoadSpec:
    """Lay ``model`` out for ``runtime`` (``eager``, ``safetensors``, ``torchscript``, ``onnx``).

    ``onnx_model`` replaces ``model`` for export when the served graph needs another output
    layout (e.g. batched detector tensors).
    """
    model.eval()
    if runtime in ("eager", "safetensors"):
        model_file, weights = save_eager(
            model, model_dir, classes, safetensors=runtime == "safetensors"
        )
        return write_spec(
            model_dir, handler, serialized_file=weights, model_file=model_file, config=config
        )
    if runtime == "torchscript":
        name = save_torchscript(model, model_dir, example, script=script)
    elif runtime == "onnx":
        name = save_onnx(onnx_model or model, model_dir, example, **(onnx_kwargs or {}))
    else:
        raise ValueError(f"unknown runtime {runtime!r}")
    return write_spec(model_dir, handler, serialized_file=name, config=config)
