"""Where a registration's archive comes from, and its private extracted copy.

A registration ``url`` is one of:
- a file or folder name inside ``model_store`` (``.mar``, ``.tar.gz``, ``.tgz``, ``.model`` or a
  no-archive folder). Containment is decided on the name the caller gave: no ``..`` part, no
  absolute path, no control character. Entries of the store that are symlinks (to a shared
  volume, a build output) are followed wherever they point: the store belongs to whoever runs
  the server. A dangling one is a 404 naming the entry;
- ``http(s)://...``: normalised and checked against ``allowed_urls`` (``store.urls``) *before*
  any network access, then downloaded in its canonical form into ``model_store/<basename>``
  through a temporary file, bounded by ``max_download_size``, ``download_timeout_s`` and
  ``download_read_timeout_s``; every redirect is normalised and checked too (``store.fetch``);
- ``file://...``: normalised and checked the same way; the file is then resolved (symlinks
  included) and the resolved ``file://`` form must be allowed as well; it is used in place when
  it lies inside the store or is a folder, else copied into the store (size-capped).

``strict_allowed_urls=true`` refuses every URL: only store names are accepted.

The archive is then checked and extracted by ``torchwick.archiver.extract_archive`` into a
private temporary folder of its own, under the ``max_archive_*`` limits; ``discard`` removes
that folder, and the downloaded file when the registration fetched one. Every failure is a
``torchwick.server.errors`` type whose message names the problem and never a server path the
caller did not give.
"""

from __future__ import annotations

import asyncio
import http.client
import logging
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

from torchwick.archiver import ArchiveError, ArchiveLimits, ExtractedModel, extract_archive
from torchwick.server.errors import (
    BadRequest,
    DownloadFailed,
    InternalError,
    InvalidArchive,
    ModelNotFound,
    TorchwickError,
)
from torchwick.server.settings import Settings
from torchwick.server.store import FetchError, HttpFetcher, NormalUrl, UrlPolicy, url_scheme
from torchwick.server.store.urls import not_allowed, relative_path

__all__ = [
    "ARCHIVE_SUFFIXES",
    "ArchiveSource",
    "Fetcher",
    "HttpFetcher",
    "ModelStore",
    "PreparedModel",
    "archive_limits",
    "not_allowed",
]

logger = logging.getLogger(__name__)

#: Suffixes of archive files in the store, longest first (``.tar.gz`` before ``.gz``-less ones).
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".mar", ".model")
_CHUNK = 1 << 20
_SAFE_FILE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*\Z")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

#: ``fetch(url, destination, max_bytes)``: blocking download into an open binary file.
Fetcher = Callable[[str, IO[bytes], int], None]


@dataclass(frozen=True, slots=True)
class ArchiveSource:
    """A resolved registration url: ``path`` to open, the ``url`` as given, ``mar_name`` (the
    path relative to the model store when the archive lives there) and ``downloaded`` (True
    when this registration put the file into the store and must remove it again)."""

    path: Path
    url: str
    mar_name: str | None
    downloaded: bool


@dataclass(frozen=True, slots=True)
class PreparedModel:
    """An extracted archive and the private folder to delete with it (``None`` for a
    no-archive folder used in place)."""

    source: ArchiveSource
    extracted: ExtractedModel
    workdir: Path | None


def archive_limits(settings: Settings) -> ArchiveLimits:
    """The archive limits the ``max_archive_*`` settings ask for."""
    return ArchiveLimits(
        max_entries=settings.max_archive_entries,
        max_total_bytes=settings.max_archive_uncompressed_size,
        max_compression_ratio=settings.max_archive_compression_ratio,
    )


def _client_message(message: str, source: ArchiveSource, workdir: Path) -> str:
    """The archiver's message with the server's own paths replaced by what the caller knows."""
    return message.replace(str(workdir), "<workdir>").replace(str(source.path), source.url)


def _download_reason(exc: BaseException) -> str:
    """One client-safe line for a failed download (no server paths)."""
    if isinstance(exc, FetchError):
        return exc.reason
    if isinstance(exc, http.client.HTTPException):
        return "the origin's answer is not valid HTTP"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return "the connection failed"


class ModelStore:
    """Resolves registration urls, fetches archives and keeps their extracted copies.

    ``fetcher`` replaces the http(s) download (tests); ``max_download_bytes`` and ``limits``
    override the settings; ``work_root`` is where private extraction folders go (a fresh
    private temporary folder by default, removed by ``close``).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        fetcher: Fetcher | None = None,
        max_download_bytes: int | None = None,
        limits: ArchiveLimits | None = None,
        work_root: Path | None = None,
    ) -> None:
        self._root = settings.model_store.resolve() if settings.model_store else None
        self._policy = UrlPolicy(settings.allowed_urls, strict=settings.strict_allowed_urls)
        self._fetch: Fetcher = fetcher or HttpFetcher(
            self._policy,
            read_timeout_s=settings.download_read_timeout_s,
            deadline_s=settings.download_timeout_s,
        )
        self._max_download = (
            settings.max_download_size if max_download_bytes is None else max_download_bytes
        )
        self._limits = limits or archive_limits(settings)
        self._work_root = work_root
        self._own_work_root = work_root is None

    @staticmethod
    def downloaded_path(source: ArchiveSource) -> Path | None:
        """The file to delete on unregister: the archive, when this registration fetched it."""
        return source.path if source.downloaded else None

    @property
    def root(self) -> Path | None:
        """The model store folder (resolved), or ``None`` when none is configured."""
        return self._root

    def is_allowed(self, url: str) -> bool:
        """True when ``url``'s canonical form is allowed (``UrlPolicy.check`` passes)."""
        try:
            self._policy.check(url)
        except TorchwickError:
            return False
        return True

    # ------------------------------------------------------------------------------- resolve
    async def resolve(self, url: str) -> ArchiveSource:
        """Find (or fetch) the archive ``url`` names. Raises ``BadRequest`` (empty or malformed
        url), ``ModelNotFound`` (404: missing, dangling, ``..`` or absolute path, not an
        allowed URL), ``DownloadFailed`` (400) or ``InternalError`` (the file name is taken in
        the store)."""
        if not url or not url.strip():
            raise BadRequest("Parameter url is required.")
        if _CONTROL.search(url):
            # Refused before anything echoes it: a newline here would forge log lines.
            raise BadRequest("url may not contain control characters")
        scheme = url_scheme(url)
        if scheme is None:
            return await asyncio.to_thread(self._in_store, url)
        normal = self._policy.check(url)
        if scheme in ("http", "https"):
            return await self._download(url, normal)
        if scheme == "file":
            return await asyncio.to_thread(self._from_file_url, url, normal)
        raise BadRequest(f"Unsupported URL scheme {scheme!r} in url: {url}")

    def _store(self, url: str) -> Path:
        if self._root is None:
            raise ModelNotFound(f"Model not found at: {url} (no model_store is configured)")
        return self._root

    def _inside(self, path: Path) -> bool:
        root = self._root
        return root is not None and (path == root or path.is_relative_to(root))

    def _in_store(self, url: str) -> ArchiveSource:
        """A store entry, judged on the name given; the store's own symlinks are followed."""
        root = self._store(url)
        name = PurePosixPath(url)
        if name.is_absolute():
            raise ModelNotFound(
                f"Absolute path is not allowed in url: {url} (name an entry of the model store)"
            )
        if ".." in name.parts:
            raise relative_path(url)
        if not name.parts:
            raise ModelNotFound(f"Model not found at: {url}")
        candidate = root.joinpath(*name.parts)
        return ArchiveSource(self._existing(candidate, url), url, name.as_posix(), downloaded=False)

    @staticmethod
    def _existing(path: Path, url: str) -> Path:
        """``path`` resolved (symlinks followed); 404 naming ``url`` when missing or dangling."""
        if not path.exists():
            if path.is_symlink():
                raise ModelNotFound(
                    f"Model file {url} is a symbolic link whose target does not exist"
                )
            raise ModelNotFound(f"Model not found at: {url}")
        return path.resolve()

    def _from_file_url(self, url: str, normal: NormalUrl) -> ArchiveSource:
        if normal.host:
            raise ModelNotFound(
                f"Model not found at: {url} (a file:// URL names a file on this machine)"
            )
        real = self._existing(Path(normal.path), url)
        # The check on the URL as given is not enough: a symlink it names may lead anywhere.
        if not self._policy.matches(f"file://{real}"):
            raise ModelNotFound(
                f"Given URL {url} resolves to a file that does not match any allowed URL(s)"
            )
        if self._inside(real) and real != self._root:
            root = self._store(url)
            return ArchiveSource(real, url, real.relative_to(root).as_posix(), downloaded=False)
        if real.is_dir():
            return ArchiveSource(real, url, None, downloaded=False)
        target = self._download_target(url, real.name)
        if real.stat().st_size > self._max_download:
            raise DownloadFailed(
                f"Failed to download archive from: {url} (the archive is larger than "
                f"max_download_size={self._max_download} bytes)"
            )
        self._publish(url, target, lambda out: self._copy_file(real, out))
        return ArchiveSource(target, url, target.name, downloaded=True)

    def _copy_file(self, real: Path, destination: IO[bytes]) -> None:
        """Copy the checked file; refuse it if it was swapped for a link since, or grew."""
        expected = real.stat()
        descriptor = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
        with os.fdopen(descriptor, "rb") as source:
            opened = os.fstat(source.fileno())
            if (opened.st_dev, opened.st_ino) != (expected.st_dev, expected.st_ino) or (
                not stat.S_ISREG(opened.st_mode)
            ):
                raise FetchError("the file changed while it was being checked")
            copied = 0
            while chunk := source.read(_CHUNK):
                copied += len(chunk)
                if copied > self._max_download:
                    raise FetchError(
                        f"the archive is larger than max_download_size={self._max_download} bytes"
                    )
                destination.write(chunk)

    def _download_target(self, url: str, name: str) -> Path:
        root = self._store(url)
        if not _SAFE_FILE_NAME.match(name) or not name.lower().endswith(ARCHIVE_SUFFIXES):
            raise DownloadFailed(
                f"URL must end in an archive file name (.mar, .tar.gz, .tgz or .model): {url}"
            )
        target = root / name
        if target.exists() or target.is_symlink():
            # TorchServe answers 500 here, before any network access; so does torchwick.
            raise InternalError(f"Model file already exists {name}")
        return target

    async def _download(self, url: str, normal: NormalUrl) -> ArchiveSource:
        target = self._download_target(url, PurePosixPath(normal.path).name)

        def fetch(destination: IO[bytes]) -> None:
            self._fetch(normal.request_url, destination, self._max_download)

        await asyncio.to_thread(self._publish, url, target, fetch)
        return ArchiveSource(target, url, target.name, downloaded=True)

    def _publish(self, url: str, target: Path, write: Callable[[IO[bytes]], None]) -> None:
        """Write through a hidden temporary file in the store, then link it to ``target``
        (which fails rather than overwrite a file that appeared meanwhile)."""
        handle, temp_name = tempfile.mkstemp(prefix=".download-", suffix=".part", dir=target.parent)
        temp = Path(temp_name)
        try:
            with os.fdopen(handle, "wb") as out:
                write(out)
            os.link(temp, target)
        except FileExistsError as exc:
            raise InternalError(f"Model file already exists {target.name}") from exc
        except (OSError, ValueError, http.client.HTTPException) as exc:
            reason = _download_reason(exc)
            logger.warning("download of %r failed: %s (%s)", url, reason, exc)
            raise DownloadFailed(f"Failed to download archive from: {url} ({reason})") from exc
        finally:
            temp.unlink(missing_ok=True)

    # ------------------------------------------------------------------------------- extract
    def _new_workdir(self) -> Path:
        if self._work_root is None:
            self._work_root = Path(tempfile.mkdtemp(prefix="torchwick-models-"))
        self._work_root.mkdir(mode=0o700, parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix="model-", dir=self._work_root))

    async def prepare(self, source: ArchiveSource) -> PreparedModel:
        """Check and extract ``source`` into a private folder. ``InvalidArchive`` (400) with
        the archiver's one-line message when it is not a usable archive."""
        return await asyncio.to_thread(self._prepare, source)

    def _prepare(self, source: ArchiveSource) -> PreparedModel:
        workdir = self._new_workdir()
        try:
            extracted = extract_archive(source.path, workdir / "model", self._limits)
        except ArchiveError as exc:
            shutil.rmtree(workdir, ignore_errors=True)
            raise InvalidArchive(_client_message(exc.message, source, workdir)) from exc
        except OSError as exc:
            shutil.rmtree(workdir, ignore_errors=True)
            reason = exc.strerror or type(exc).__name__
            raise InvalidArchive(f"cannot read {source.url}: {reason}") from exc
        if extracted.root == source.path:  # a no-archive folder is used in place
            shutil.rmtree(workdir, ignore_errors=True)
            return PreparedModel(source, extracted, None)
        return PreparedModel(source, extracted, workdir)

    @staticmethod
    def discard(workdir: Path | None, downloaded: Path | None) -> None:
        """Remove a private extraction folder and an archive a registration downloaded."""
        if workdir is not None:
            shutil.rmtree(workdir, ignore_errors=True)
        if downloaded is not None:
            downloaded.unlink(missing_ok=True)

    def discover(self) -> list[str]:
        """Store entries ``load_models=all`` registers: archive files and folders holding a
        ``MAR-INF/MANIFEST.json``, sorted; hidden entries are skipped."""
        if self._root is None:
            return []
        found: list[str] = []
        for entry in sorted(self._root.iterdir()):
            if entry.name.startswith("."):
                continue
            if entry.is_dir():
                if (entry / "MAR-INF" / "MANIFEST.json").is_file():
                    found.append(entry.name)
            elif entry.name.lower().endswith(ARCHIVE_SUFFIXES):
                found.append(entry.name)
        return found

    def close(self) -> None:
        """Remove every private extraction folder this store created."""
        if self._own_work_root and self._work_root is not None:
            shutil.rmtree(self._work_root, ignore_errors=True)
            self._work_root = None
