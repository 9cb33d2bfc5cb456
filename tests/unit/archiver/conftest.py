"""Shared inputs for the archiver tests: a few-KB state dict, a handler, a model-config."""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path

import pytest

HANDLER_SOURCE = "def handle(data, context):\n    return [len(str(item)) for item in data or []]\n"
CONFIG_SOURCE = (
    "minWorkers: 1\nmaxWorkers: 2\nbatchSize: 4\nmaxBatchDelay: 50\nhandler:\n  scale: 2\n"
)
# Every input gets this mtime so that archives built in different tests compare equal.
INPUT_MTIME = 1_700_000_000


@dataclass(frozen=True)
class ModelInputs:
    """Paths of one model's inputs inside a test's tmp folder."""

    root: Path
    weights: Path
    handler: Path
    model_file: Path
    config: Path
    requirements: Path
    extra_dir: Path


def _tiny_state_dict() -> bytes:
    import torch

    buffer = io.BytesIO()
    torch.save({"weight": torch.arange(64, dtype=torch.float32).reshape(8, 8)}, buffer)
    return buffer.getvalue()


@pytest.fixture(scope="session")
def state_dict_bytes() -> bytes:
    """A real torch state dict of a few KB (built once per session)."""
    return _tiny_state_dict()


@pytest.fixture
def inputs(tmp_path: Path, state_dict_bytes: bytes) -> ModelInputs:
    """A folder of model inputs with fixed mtimes."""
    root = tmp_path / "inputs"
    extra = root / "extra"
    (extra / "sub").mkdir(parents=True)
    (extra / "__pycache__").mkdir()
    (extra / ".hidden").mkdir()
    files = {
        root / "model.pt": state_dict_bytes,
        root / "my_handler.py": HANDLER_SOURCE.encode(),
        root / "model.py": b"import torch\n\nclass Net(torch.nn.Module):\n    pass\n",
        root / "model-config.yaml": CONFIG_SOURCE.encode(),
        root / "requirements.txt": b"numpy\n",
        extra / "index_to_name.json": b'{"0": "zero"}\n',
        extra / "sub" / "vocab.txt": b"a\nb\n",
        extra / "__pycache__" / "x.pyc": b"\0",
        extra / ".hidden" / "secret": b"s",
    }
    for path, data in files.items():
        path.write_bytes(data)
        os.utime(path, (INPUT_MTIME, INPUT_MTIME))
    return ModelInputs(
        root=root,
        weights=root / "model.pt",
        handler=root / "my_handler.py",
        model_file=root / "model.py",
        config=root / "model-config.yaml",
        requirements=root / "requirements.txt",
        extra_dir=extra,
    )


@pytest.fixture(autouse=True)
def _no_source_date_epoch(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests decide about SOURCE_DATE_EPOCH themselves; the runner's value must not leak in."""
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
