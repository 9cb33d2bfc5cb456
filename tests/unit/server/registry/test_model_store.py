"""Model store: containment, allowed_urls before any fetch, downloads, extraction, cleanup."""

from __future__ import annotations

import http.server
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest

from torchwick.server.errors import (
    BadRequest,
    DownloadFailed,
    InternalError,
    InvalidArchive,
    ModelNotFound,
)
from torchwick.server.model_store import HttpFetcher, ModelStore
from torchwick.server.settings import Settings
from torchwick.server.store import UrlPolicy

from .archives import build_archive


class RecordingFetcher:
    """Writes ``body`` and records every URL it was asked for."""

    def __init__(self, body: bytes = b"", error: Exception | None = None) -> None:
        self.calls: list[str] = []
        self.body = body
        self.error = error

    def __call__(self, url: str, destination: IO[bytes], max_bytes: int) -> None:
        self.calls.append(url)
        if self.error is not None:
            raise self.error
        destination.write(self.body)


@pytest.fixture
def store_dir(tmp_path: Path) -> Path:
    path = tmp_path / "store"
    path.mkdir()
    return path


def make_store(
    store_dir: Path, fetcher: RecordingFetcher | None = None, **settings: object
) -> ModelStore:
    return ModelStore(
        Settings(model_store=store_dir, **settings),  # type: ignore[arg-type]
        fetcher=fetcher,
        work_root=store_dir.parent / "work",
    )


async def test_empty_url_is_a_bad_request(store_dir: Path) -> None:
    with pytest.raises(BadRequest, match=r"^Parameter url is required\.$"):
        await make_store(store_dir).resolve("")


async def test_plain_name_inside_the_store(store_dir: Path) -> None:
    archive = build_archive(store_dir)
    source = await make_store(store_dir).resolve("echo.mar")
    assert source.path == archive.resolve()
    assert (source.mar_name, source.downloaded) == ("echo.mar", False)


async def test_missing_file(store_dir: Path) -> None:
    with pytest.raises(ModelNotFound, match=r"^Model not found at: nope\.mar$"):
        await make_store(store_dir).resolve("nope.mar")


@pytest.mark.parametrize("url", ["../outside.mar", "sub/../../outside.mar", "a/../echo.mar"])
async def test_relative_parts_are_refused(store_dir: Path, url: str) -> None:
    (store_dir.parent / "outside.mar").write_bytes(b"x")
    with pytest.raises(ModelNotFound, match="Relative path is not allowed in url"):
        await make_store(store_dir).resolve(url)


async def test_absolute_paths_are_refused_even_inside_the_store(store_dir: Path) -> None:
    outside = store_dir.parent / "outside.mar"
    outside.write_bytes(b"x")
    inside = build_archive(store_dir)
    for path in (outside, inside):
        with pytest.raises(ModelNotFound, match="Absolute path is not allowed in url"):
            await make_store(store_dir).resolve(str(path))


async def test_store_symlinks_are_followed_wherever_they_point(store_dir: Path) -> None:
    outside = store_dir.parent / "shared"
    outside.mkdir()
    archive = build_archive(outside)
    (store_dir / "link.mar").symlink_to(archive)
    (store_dir / "linkdir").symlink_to(outside)
    store = make_store(store_dir)
    for url in ("link.mar", "linkdir/echo.mar"):
        source = await store.resolve(url)
        assert (source.path, source.mar_name) == (archive.resolve(), url)


async def test_a_dangling_store_symlink_is_a_404_naming_it(store_dir: Path) -> None:
    (store_dir / "gone.mar").symlink_to(store_dir.parent / "nowhere.mar")
    with pytest.raises(ModelNotFound, match=r"^Model file gone\.mar is a symbolic link whose"):
        await make_store(store_dir).resolve("gone.mar")


async def test_url_not_allowed_is_refused_before_any_fetch(store_dir: Path) -> None:
    fetcher = RecordingFetcher(b"data")
    store = make_store(store_dir, fetcher, allowed_urls=(r"https://good\.example/models/.*",))
    for url in (
        "https://evil.example/m.mar",
        "https://evil.example/x?https://good.example/models/m.mar",  # full match, not search
        "http://good.example/models/m.mar",
        f"file://{store_dir}/m.mar",
        "s3://bucket/m.mar",
    ):
        with pytest.raises(ModelNotFound, match="does not match any allowed URL"):
            await store.resolve(url)
    assert fetcher.calls == []
    assert list(store_dir.iterdir()) == []


async def test_allowed_url_matching_is_case_insensitive(store_dir: Path) -> None:
    fetcher = RecordingFetcher(b"data")
    store = make_store(store_dir, fetcher, allowed_urls=(r"https://good\.example/.*",))
    source = await store.resolve("HTTPS://GOOD.EXAMPLE/m.mar")
    assert fetcher.calls == ["https://good.example/m.mar"]  # the canonical form is fetched
    assert source.path == store_dir.resolve() / "m.mar" and source.downloaded


async def test_download_lands_in_the_store_and_discard_removes_it(store_dir: Path) -> None:
    fetcher = RecordingFetcher(b"payload")
    store = make_store(store_dir, fetcher)
    source = await store.resolve("https://host/path/model.tar.gz?sig=abc")
    assert source.path.read_bytes() == b"payload"
    assert source.mar_name == "model.tar.gz"
    assert [p.name for p in store_dir.iterdir()] == ["model.tar.gz"]
    store.discard(None, store.downloaded_path(source))
    assert list(store_dir.iterdir()) == []


async def test_existing_file_name_is_refused_before_the_network(store_dir: Path) -> None:
    (store_dir / "m.mar").write_bytes(b"old")
    fetcher = RecordingFetcher(b"new")
    with pytest.raises(InternalError, match=r"Model file already exists m\.mar"):
        await make_store(store_dir, fetcher).resolve("http://host/m.mar")
    assert fetcher.calls == []
    assert (store_dir / "m.mar").read_bytes() == b"old"


async def test_url_must_name_an_archive_file(store_dir: Path) -> None:
    fetcher = RecordingFetcher(b"x")
    for url in ("http://host/", "http://host/run.sh", "http://host/.hidden.mar"):
        with pytest.raises(DownloadFailed):
            await make_store(store_dir, fetcher).resolve(url)
    assert fetcher.calls == []


async def test_failed_download_leaves_nothing(store_dir: Path) -> None:
    fetcher = RecordingFetcher(error=OSError("connection reset"))
    message = r"^Failed to download archive from: http://h/m\.mar \(the connection failed\)$"
    with pytest.raises(DownloadFailed, match=message):
        await make_store(store_dir, fetcher).resolve("http://h/m.mar")
    assert list(store_dir.iterdir()) == []


async def test_file_url_is_copied_into_the_store(store_dir: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    archive = build_archive(elsewhere)
    store = make_store(store_dir)
    source = await store.resolve(f"file://{archive}")
    assert source.downloaded and source.path.parent == store_dir.resolve()
    assert source.path.read_bytes() == archive.read_bytes()
    with pytest.raises(ModelNotFound, match="Model not found at"):
        await store.resolve(f"file://{elsewhere}/missing.mar")


async def test_prepare_extracts_privately_and_discard_cleans_up(store_dir: Path) -> None:
    build_archive(store_dir, config_yaml="batchSize: 4\n")
    store = make_store(store_dir)
    prepared = await store.prepare(await store.resolve("echo.mar"))
    assert prepared.workdir is not None and prepared.extracted.root.is_relative_to(prepared.workdir)
    assert (prepared.extracted.root / "MAR-INF" / "MANIFEST.json").is_file()
    assert prepared.extracted.config.batch_size == 4
    store.discard(prepared.workdir, None)
    assert not prepared.workdir.exists()
    store.close()
    assert (store_dir.parent / "work").is_dir()  # an injected work root is left alone


async def test_no_archive_folder_is_used_in_place(store_dir: Path) -> None:
    folder = build_archive(store_dir, archive_format="no-archive")
    store = make_store(store_dir)
    prepared = await store.prepare(await store.resolve(folder.name))
    assert prepared.workdir is None and prepared.extracted.root == folder.resolve()


async def test_invalid_archive_is_a_400_with_the_archiver_message(store_dir: Path) -> None:
    (store_dir / "bad.mar").write_bytes(b"not a zip")
    store = make_store(store_dir)
    with pytest.raises(InvalidArchive, match="is not a model archive"):
        await store.prepare(await store.resolve("bad.mar"))


def test_discover_lists_archives_and_model_folders(store_dir: Path) -> None:
    build_archive(store_dir, "a")
    build_archive(store_dir, "b", archive_format="tgz")
    build_archive(store_dir, "c", archive_format="no-archive")
    (store_dir / "notes").mkdir()
    (store_dir / "readme.txt").write_text("x")
    assert make_store(store_dir).discover() == ["a.mar", "b.tar.gz", "c"]


# ------------------------------------------------------------------ the real http(s) fetcher
class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/big.mar":
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"x" * 5000)
        elif self.path == "/redirect.mar":
            self.send_response(302)
            self.send_header("Location", "http://127.0.0.1:1/elsewhere.mar")
            self.end_headers()
        else:
            self.send_response(404)
            self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def http_base() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_http_fetcher_caps_size_and_checks_redirects(http_base: str, tmp_path: Path) -> None:
    fetch = HttpFetcher(UrlPolicy((f"{re.escape(http_base)}/.*",)), read_timeout_s=5)
    with (tmp_path / "ok").open("wb") as out:
        fetch(f"{http_base}/big.mar", out, 10_000)
    assert (tmp_path / "ok").stat().st_size == 5000
    with (tmp_path / "cap").open("wb") as out, pytest.raises(OSError, match="larger than"):
        fetch(f"{http_base}/big.mar", out, 100)
    with (tmp_path / "r").open("wb") as out, pytest.raises(OSError, match="not allowed"):
        fetch(f"{http_base}/redirect.mar", out, 10_000)
    with (tmp_path / "404").open("wb") as out, pytest.raises(OSError):
        fetch(f"{http_base}/missing.mar", out, 10_000)
