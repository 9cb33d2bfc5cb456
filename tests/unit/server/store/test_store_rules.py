"""ModelStore rules that need no network: strict mode, file:// re-checks and caps, names."""

from __future__ import annotations

import re
from pathlib import Path
from typing import IO

import pytest

from torchwick.server.errors import BadRequest, DownloadFailed, ModelNotFound
from torchwick.server.model_store import ModelStore
from torchwick.server.settings import Settings


class NeverFetch:
    def __call__(self, url: str, destination: IO[bytes], max_bytes: int) -> None:
        raise AssertionError(f"fetched {url}")


def _store(tmp_path: Path, **settings: object) -> tuple[ModelStore, Path]:
    root = tmp_path / "store"
    root.mkdir(exist_ok=True)
    store = ModelStore(
        Settings(model_store=root, **settings),  # type: ignore[arg-type]
        fetcher=NeverFetch(),
        work_root=tmp_path / "work",
    )
    return store, root


async def test_strict_mode_refuses_urls_but_serves_store_names(tmp_path: Path) -> None:
    store, root = _store(tmp_path, strict_allowed_urls=True)
    (root / "m.mar").write_bytes(b"x")
    for url in ("https://example.com/m.mar", f"file://{root}/m.mar", "FILE:///etc/passwd"):
        with pytest.raises(ModelNotFound, match="strict_allowed_urls=true"):
            await store.resolve(url)
    assert (await store.resolve("m.mar")).path == (root / "m.mar").resolve()


async def test_a_file_url_through_a_link_is_checked_where_it_leads(tmp_path: Path) -> None:
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    (tmp_path / "secret.mar").write_bytes(b"secret")
    (allowed / "link.mar").symlink_to(tmp_path / "secret.mar")
    (allowed / "real.mar").write_bytes(b"real")
    (allowed / "inner.mar").symlink_to(allowed / "real.mar")
    patterns = (f"file://{re.escape(str(allowed))}/.*",)
    store, root = _store(tmp_path, allowed_urls=patterns)
    with pytest.raises(ModelNotFound, match="resolves to a file that does not match"):
        await store.resolve(f"file://{allowed}/link.mar")
    source = await store.resolve(f"file://{allowed}/inner.mar")  # a link that stays inside
    assert source.downloaded and source.path == root.resolve() / "real.mar"
    assert not (root / "secret.mar").exists()


async def test_a_file_url_copy_is_capped(tmp_path: Path) -> None:
    (tmp_path / "big.mar").write_bytes(bytes(5000))
    root = tmp_path / "store"
    root.mkdir()
    store = ModelStore(Settings(model_store=root), max_download_bytes=1000)
    with pytest.raises(DownloadFailed, match="max_download_size=1000"):
        await store.resolve(f"file://{tmp_path}/big.mar")
    assert list(root.iterdir()) == []


async def test_a_dangling_file_url_names_the_link(tmp_path: Path) -> None:
    store, _ = _store(tmp_path)
    (tmp_path / "gone.mar").symlink_to(tmp_path / "never.mar")
    with pytest.raises(ModelNotFound, match="is a symbolic link whose target does not exist"):
        await store.resolve(f"file://{tmp_path}/gone.mar")


@pytest.mark.parametrize("url", ["echo.mar\n", "a\x00.mar", "x\r\nINFO forged"])
async def test_control_characters_are_refused_before_anything(tmp_path: Path, url: str) -> None:
    store, _ = _store(tmp_path)
    with pytest.raises(BadRequest, match="control characters"):
        await store.resolve(url)


async def test_other_schemes_are_refused(tmp_path: Path) -> None:
    store, _ = _store(tmp_path, allowed_urls=(".*",))
    with pytest.raises(BadRequest, match="Unsupported URL scheme 'ftp'"):
        await store.resolve("ftp://example.com/m.mar")
