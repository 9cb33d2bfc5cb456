"""``ts.torch_handler.unit_tests.test_utils.model_dir``: laying out a model directory.

``copy_files(src_dir, dst_dir, {src_name: dst_name})`` copies files; ``download_model(url,
model_dir)`` fetches ``url`` once into ``REPO_DIR/.cache`` (``REPO_DIR`` is the current
directory when the module is imported) and copies it to ``model_dir/model.pt``.

Failure mode: ``OSError`` / ``urllib.error.URLError`` from the copy or the download.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from urllib import request
from urllib.parse import urlparse

REPO_DIR = Path.cwd()


def download_model(model_url: str, model_dir: Path) -> None:
    cache_dir = REPO_DIR / ".cache"
    cache_dir.mkdir(exist_ok=True)
    filename = Path(urlparse(model_url).path).name
    cached = cache_dir / filename
    if not cached.exists():
        with request.urlopen(model_url) as source:
            cached.write_bytes(source.read())
    shutil.copy(cached, Path(model_dir) / "model.pt")


def copy_files(src_dir: Path, dst_dir: Path, files: dict[str, str]) -> None:
    for src_file, dst_file in files.items():
        shutil.copyfile(Path(src_dir) / src_file, Path(dst_dir) / dst_file)
