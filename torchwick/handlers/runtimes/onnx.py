"""ONNX runtime: an ``onnxruntime.InferenceSession`` that takes and returns tensors.

``OnnxModel(*tensors)`` feeds the tensors to the graph inputs in order (cast to each input's
declared element type), runs the session, and returns one tensor for a single-output graph or
``{output_name: tensor}`` for several, on the worker's device. The CUDA execution provider is
used when the worker has a CUDA device and onnxruntime offers it; otherwise CPU. Intra-op
threads follow ``torch.get_num_threads()`` so the worker keeps to its thread budget.

Failure mode: ``RuntimeError`` when onnxruntime is missing or the file is not a valid model;
at inference, onnxruntime's own errors (e.g. wrong rank) propagate as they are.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

logger = logging.getLogger("torchwick.model")

_ONNX_TYPES: dict[str, Any] = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8,
    "tensor(bool)": np.bool_,
}


class OnnxModel:
    """A callable wrapper over an onnxruntime session (see the module docstring)."""

    def __init__(self, session: Any, device: torch.device) -> None:
        self.session = session
        self.device = device
        self.inputs = list(session.get_inputs())
        self.output_names = [o.name for o in session.get_outputs()]

    @property
    def input_names(self) -> list[str]:
        return [i.name for i in self.inputs]

    def sample_shape(self, index: int = 0) -> tuple[int | None, ...] | None:
        """Input ``index``'s shape without the batch dimension; symbolic dims are ``None``."""
        if index >= len(self.inputs):
            return None
        dims = list(self.inputs[index].shape)[1:]
        return tuple(d if isinstance(d, int) and d > 0 else None for d in dims)

    def input_dtype(self, index: int = 0) -> torch.dtype | None:
        """The torch dtype of input ``index``, when it is a plain tensor type."""
        np_type = _ONNX_TYPES.get(self.inputs[index].type) if index < len(self.inputs) else None
        return None if np_type is None else torch.from_numpy(np.zeros(1, np_type)).dtype

    def __call__(self, *tensors: torch.Tensor) -> torch.Tensor | dict[str, torch.Tensor]:
        if len(tensors) != len(self.inputs):
            raise ValueError(
                f"the ONNX model takes {len(self.inputs)} input(s) ({self.input_names}), "
                f"got {len(tensors)}"
            )
        feeds = {}
        for meta, tensor in zip(self.inputs, tensors, strict=True):
            array = tensor.detach().cpu().numpy()
            np_type = _ONNX_TYPES.get(meta.type)
            feeds[meta.name] = array.astype(np_type, copy=False) if np_type else array
        outputs = self.session.run(None, feeds)
        results = [torch.from_numpy(np.ascontiguousarray(o)).to(self.device) for o in outputs]
        if len(results) == 1:
            return results[0]
        return dict(zip(self.output_names, results, strict=True))

    # nn.Module-like no-ops, so handlers that call these on self.model keep working.
    def eval(self) -> OnnxModel:
        return self

    def to(self, *_args: Any, **_kwargs: Any) -> OnnxModel:
        return self


def load_onnx(path: Path, device: torch.device) -> OnnxModel:
    """Open ``path`` with onnxruntime on the best provider for ``device``."""
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise RuntimeError(
            "this model is ONNX but onnxruntime is not installed (pip install torchwick[onnx])"
        ) from exc
    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, torch.get_num_threads())
    options.inter_op_num_threads = 1
    providers: list[Any] = ["CPUExecutionProvider"]
    if device.type == "cuda":
        if "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, ("CUDAExecutionProvider", {"device_id": device.index or 0}))
        else:
            logger.warning("onnxruntime has no CUDA provider here; the ONNX model runs on CPU")
    try:
        session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
    except Exception as exc:
        raise RuntimeError(f"{path.name} could not be loaded by onnxruntime: {exc}") from exc
    logger.info("ONNX model %s on providers %s", path.name, session.get_providers())
    return OnnxModel(session, device)
