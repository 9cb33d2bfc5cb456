"""Builds the example model: a small MLP (64 -> 256 -> 256 -> 10) with random weights, saved
as TorchScript, plus a sample request body.

Usage: python examples/mlp/build_model.py OUTPUT_DIR
Writes OUTPUT_DIR/mlp.pt and OUTPUT_DIR/sample.json (64 floats).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from examples.models import MLP


def build(output_dir: Path) -> None:
    """Write the scripted model and a sample input into ``output_dir``."""
    torch.manual_seed(0)
    model = MLP().eval()
    output_dir.mkdir(parents=True, exist_ok=True)
    torch.jit.script(model).save(str(output_dir / "mlp.pt"))
    sample = [round(float(x), 4) for x in torch.randn(64)]
    (output_dir / "sample.json").write_text(json.dumps(sample))


if __name__ == "__main__":
    build(Path(sys.argv[1]))
