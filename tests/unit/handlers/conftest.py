"""Fixtures for handler tests."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    """An empty model directory."""
    path = tmp_path / "model"
    path.mkdir()
    return path
