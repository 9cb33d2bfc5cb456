"""What the container tests serve: handler sources and the archive builder.

The handlers run inside the image, so they are plain source text here; ``archive`` builds a
``.mar`` with the project's own ``torch-model-archiver`` console script.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ARCHIVER = Path(sys.executable).with_name("torch-model-archiver")

#: TorchScript MLP: JSON {"x": [64 floats]} -> {"logits": [10 floats]}.
MLP_HANDLER = """
import json
import os

import torch

_model = {}


def handle(data, context):
    if not _model:
        model_dir = context.system_properties["model_dir"]
        _model["m"] = torch.jit.load(os.path.join(model_dir, "model.ts.pt")).eval()
    if data is None:
        return None
    out = []
    for row in data:
        body = row.get("body") if row.get("body") is not None else row.get("data")
        x = torch.tensor(json.loads(body)["x"], dtype=torch.float32)
        with torch.no_grad():
            out.append({"logits": _model["m"](x.unsqueeze(0))[0].tolist()})
    return out
"""

#: The default BaseHandler: an OIP row's first array is the sample (docs/oip.md).
OIP_HANDLER = """
from ts.torch_handler.base_handler import BaseHandler


class Handler(BaseHandler):
    pass
"""

#: Declared tensors, so the server checks each OIP request against them before queueing it.
OIP_METADATA = """metadata:
  platform: pytorch_torchscript
  inputs:
    - {name: input__0, datatype: FP32, shape: [-1, 64]}
  outputs:
    - {name: logits, datatype: FP32, shape: [-1, 10]}
"""

#: Holds each request until the test creates /sync/release (after touching /sync/started).
GATE_HANDLER = """
import os
import time


def handle(data, context):
    if data is None:
        return None
    open("/sync/started", "w").close()
    deadline = time.monotonic() + 120
    while not os.path.exists("/sync/release") and time.monotonic() < deadline:
        time.sleep(0.05)
    return ["released" for _ in data]
"""


def archive(
    tmp: Path, store: Path, name: str, handler: str, *extra: str, metadata: str = ""
) -> None:
    """Build ``store/<name>.mar`` with the project's console script."""
    handler_path = tmp / f"{name}_handler.py"
    handler_path.write_text(handler)
    config = tmp / f"{name}-config.yaml"
    config.write_text("minWorkers: 1\nmaxWorkers: 1\nresponseTimeout: 120\n" + metadata)
    command = [str(ARCHIVER), "--model-name", name, "--version", "1.0"]
    command += ["--handler", str(handler_path), "--config-file", str(config)]
    command += ["--export-path", str(store), *extra]
    subprocess.run(command, check=True, capture_output=True)
