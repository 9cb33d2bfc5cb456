"""Where a registration's archive comes from, and its private extracted copy.

A registration ``url`` is one of:
- a file or folder name inside ``model_store`` (``.mar``, ``.tar.gz``, ``.tgz``, ``.model`` or a
  no-archive folder). Names with ``..`` parts, absolute paths outside the store and symlinks
  that lead out of it are refused before anything is opened;
- ``http(s)://...``: checked against ``allowed_urls`` (full match, case-insensitive) *before*
  any network access, then downloaded into ``model_store/<basename>`` through a temporary file,
  with a size cap; every redirect is checked against ``allowed_urls`` too;
- ``file://...``: checked against ``allowed_urls`` the same way, then copied into the store
  (or used in place when it already is inside the store, or is a folder).

The archive is then checked and extracted by ``torchwick.archiver.extract_archive`` into a
private temporary folder of its own; ``discard`` removes that folder, and the downloaded file
when the registration fetched one. Every failure is a ``torchwick.server.errors`` type.
"""

from __future__ import annotations

import asyncio
import http.client
import logging
import os
import re
import shutil
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any
from urllib.parse import unquote, urlsplit

from torchwick.archiver import ArchiveError, ArchiveLimits, ExtractedModel, extract_archive
from torchwick.server.errors import (
    BadRequest,
    DownloadFailed,
    InternalError,
    InvalidArchive,
    ModelNotFound,
)
from torchwick.server.settings import Settings

logger = logging.getLogger(__name__)

#: Suffixes of archive files in the store, longest first (``.tar.gz`` before ``.gz``-less ones).
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".mar", ".model")
#: Largest archive a URL registration may download.
DEFAULT_MAX_DOWNLOAD_BYTES = 20 * 1024**3
DOWNLOAD_TIMEOUT_S = 60.0
_CHUNK = 1 << 20
_SAFE_FILE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")

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


def not_allowed(url: str) -> ModelNotFound:
    """TorchServe's 404 for a URL that matches none of ``allowed_urls``."""
    return ModelNotFound(f"Given URL {url} does not match any allowed URL(s)")


def _relative_path_error(url: str) -> ModelNotFound:
    return ModelNotFound(f"Relative path is not allowed in url: {url}")


class _CheckedRedirects(urllib.request.HTTPRedirectHandler):
    """Follow a redirect only to an http(s) URL that ``allowed_urls`` also permits."""

    def __init__(self, allowed: Callable[[str], bool]) -> None:
        super().__init__()
        self._allowed = allowed

    def redirect_request(  # noqa: PLR0917 - the signature urllib calls
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: Any,
        newurl: str,
    ) -> urllib.request.Request | None:
        if urlsplit(newurl).scheme.lower() not in ("http", "https") or not self._allowed(newurl):
            raise urllib.error.URLError(f"redirect to a URL that is not allowed: {newurl}")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


class HttpFetcher:
    """Blocking http(s) download with a size cap and checked redirects (run it in a thread)."""

    def __init__(self, allowed: Callable[[str], bool], timeout_s: float = DOWNLOAD_TIMEOUT_S):
        # Only the handlers needed: no file://, ftp:// or data: handling behind a redirect.
        self._opener = urllib.request.OpenerDirector()
        for handler in (
            urllib.request.ProxyHandler(),
            urllib.request.HTTPHandler(),
            urllib.request.HTTPSHandler(),
            urllib.request.HTTPDefaultErrorHandler(),
            urllib.request.HTTPErrorProcessor(),
            _CheckedRedirects(allowed),
        ):
            self._opener.add_handler(handler)
        self._timeout = timeout_s

    def __call__(self, url: str, destination: IO[bytes], max_bytes: int) -> None:
        """Write the body of ``url`` to ``destination``; ``OSError`` on any failure."""
        with self._opener.open(url, timeout=self._timeout) as response:
            declared = response.headers.get("Content-Length")
            if declared is not None and declared.isdigit() and int(declared) > max_bytes:
                raise OSError(f"archive is larger than the limit of {max_bytes} bytes")
            received = 0
            while chunk := response.read(_CHUNK):
                received += len(chunk)
                if received > max_bytes:
                    raise OSError(f"archive is larger than the limit of {max_bytes} bytes")
                destination.write(chunk)


class ModelStore:
    """Resolves registration urls, fetches archives and keeps their extracted copies.

    ``fetcher`` replaces the http(s) download (tests); ``work_root`` is where private
    extraction folders go (a fresh private temporary folder by default, removed by ``close``).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        fetcher: Fetcher | None = None,
        max_download_bytes: int = DEFAULT_MAX_DOWNLOAD_BYTES,
        limits: ArchiveLimits | None = None,
        work_root: Path | None = None,
    ) -> None:
        self._root = settings.model_store.resolve() if settings.model_store else None
        self._patterns = [re.compile(p, re.IGNORECASE) for p in settings.allowed_urls]
        self._fetch: Fetcher = fetcher or HttpFetcher(self.is_allowed)
        self._max_download = max_download_bytes
        self._limits = limits
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
        """True when ``url`` fully matches one of ``allowed_urls`` (case-insensitive)."""
        return any(pattern.fullmatch(url) for pattern in self._patterns)

    # ------------------------------------------------------------------------------- resolve
    async def resolve(self, url: str) -> ArchiveSource:
        """Find (or fetch) the archive ``url`` names. Raises ``BadRequest`` (empty url),
        ``ModelNotFound`` (404: missing, escaping the store, or not an allowed URL),
        ``DownloadFailed`` (400) or ``InternalError`` (the file name is taken in the store)."""
        if not url or not url.strip():
            raise BadRequest("Parameter url is required.")
        if "://" in url:
            if not self.is_allowed(url):
                raise not_allowed(url)
            scheme = url.split("://", 1)[0].lower()
            if scheme in ("http", "https"):
                return await self._download(url)
            if scheme == "file":
                return await asyncio.to_thread(self._from_file_url, url)
            raise BadRequest(f"Unsupported URL scheme {scheme!r} in url: {url}")
        return self._in_store(url)

    def _store(self, url: str) -> Path:
        if self._root is None:
            raise ModelNotFound(f"Model not found at: {url} (no model_store is configured)")
        return self._root

    def _inside(self, path: Path) -> bool:
        root = self._root
        return root is not None and (path == root or path.is_relative_to(root))

    def _in_store(self, url: str) -> ArchiveSource:
        """A store entry; containment is checked on the name, then on the resolved path."""
        root = self._store(url)
        if ".." in PurePosixPath(url).parts or ".." in Path(url).parts:
            raise _relative_path_error(url)
        candidate = Path(os.path.normpath(root / url))
        if not self._inside(candidate):
            raise ModelNotFound(f"Model path is outside the model store: {url}")
        # resolve() follows symlinks (reading link targets only, never file contents).
        real = candidate.resolve()
        if not self._inside(real) or real == root:
            raise ModelNotFound(f"Model path is outside the model store: {url}")
        if not real.exists():
            raise ModelNotFound(f"Model not found at: {url}")
        return ArchiveSource(real, url, str(candidate.relative_to(root)), downloaded=False)

    def _from_file_url(self, url: str) -> ArchiveSource:
        parts = urlsplit(url)
        if parts.netloc not in ("", "localhost"):
            raise ModelNotFound(f"Model not found at: {url}")
        path = Path(unquote(parts.path))
        if not path.is_absolute():
            raise ModelNotFound(f"Model not found at: {url}")
        if ".." in path.parts:
            raise _relative_path_error(url)
        real = path.resolve()
        if not real.exists():
            raise ModelNotFound(f"Model not found at: {url}")
        if self._inside(real):
            root = self._store(url)
            return ArchiveSource(real, url, str(real.relative_to(root)), downloaded=False)
        if real.is_dir():
            return ArchiveSource(real, url, None, downloaded=False)
        target = self._download_target(url, real.name)
        size = real.stat().st_size
        if size > self._max_download:
            raise DownloadFailed(f"Failed to download archive from: {url}")

        def copy(destination: IO[bytes]) -> None:
            with real.open("rb") as source:
                shutil.copyfileobj(source, destination, _CHUNK)

        self._publish(url, target, copy)
        return ArchiveSource(target, url, target.name, downloaded=True)

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

    async def _download(self, url: str) -> ArchiveSource:
        name = PurePosixPath(unquote(urlsplit(url).path)).name
        target = self._download_target(url, name)

        def fetch(destination: IO[bytes]) -> None:
            self._fetch(url, destination, self._max_download)

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
            logger.warning("download of %s failed: %s", url, exc)
            raise DownloadFailed(f"Failed to download archive from: {url}") from exc
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
            raise InvalidArchive(exc.message) from exc
        except OSError as exc:
            shutil.rmtree(workdir, ignore_errors=True)
            raise InvalidArchive(f"cannot read {source.url}: {exc.strerror or exc}") from exc
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
