"""Open any model archive (zip ``.mar``, ``.tar.gz``, or a no-archive directory) safely.

The order of work is what makes it safe: list every member and check it (``safety``), read and
check the manifest and model-config from the archive itself, and only then extract, into a
private temporary directory beside the destination that is renamed into place when complete.
A refused or broken archive therefore never leaves anything at the destination. Every failure is
an ``ArchiveError`` (``UnsafeArchiveError`` for the containment rules) with a one-line message.
"""

from __future__ import annotations

import os
import shutil
import stat
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .errors import ArchiveError
from .formats import ArchiveReader, DirectoryReader, TarReader, ZipReader
from .manifest import MANIFEST_PATH, Manifest, synthesized_manifest
from .model_config import ModelConfig, parse_model_config
from .safety import ArchiveLimits, ByteBudget, Entry, check_inner_path

MAX_MANIFEST_BYTES = 1 << 20
MAX_CONFIG_BYTES = 4 << 20
_ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".mar", ".model", ".zip")


@dataclass(frozen=True, slots=True)
class ExtractedModel:
    """A model ready to load: ``root`` holds ``MAR-INF/`` and the artifacts."""

    root: Path
    manifest: Manifest
    config: ModelConfig
    source: Path


@dataclass(frozen=True, slots=True)
class ArchiveContents:
    """What an archive holds, read without extracting it (``torchwick archive inspect``)."""

    source: Path
    #: ``zip``, ``tgz`` or ``directory``.
    kind: str
    entries: tuple[Entry, ...]
    manifest: Manifest
    #: False when the archive has no ``MAR-INF/MANIFEST.json`` and ``manifest`` was assumed.
    manifest_found: bool
    config: ModelConfig
    config_text: str | None


def inspect_archive(source: Path, limits: ArchiveLimits | None = None) -> ArchiveContents:
    """List and check ``source`` and read its manifest and model-config, writing nothing."""
    source = Path(source)
    with _reading(source), _open_reader(source, limits or ArchiveLimits()) as reader:
        return _contents(reader, source)


def read_manifest(source: Path) -> Manifest:
    """The manifest of an archive or directory without extracting it (checked like extract)."""
    return inspect_archive(source).manifest


def extract_archive(
    source: Path, destination: Path, limits: ArchiveLimits | None = None
) -> ExtractedModel:
    """Check ``source`` completely, then extract it to ``destination``.

    ``destination`` must not exist or be an empty directory; its parent is created. A directory
    ``source`` (the no-archive format) is checked and used in place: ``root == source`` and
    ``destination`` is left alone. A ``.tar.gz`` with a single top-level folder (what
    ``--archive-format tgz`` writes) is extracted without that folder, so ``root`` always holds
    ``MAR-INF/`` directly. Raises ``ArchiveError``; on any failure nothing remains at
    ``destination``.
    """
    source = Path(source)
    destination = Path(destination)
    limits = limits or ArchiveLimits()
    with _reading(source), _open_reader(source, limits) as reader:
        contents = _contents(reader, source)
        _check_handler_file(reader, contents.manifest, source.name or str(source))
        if isinstance(reader, DirectoryReader):
            return ExtractedModel(source, contents.manifest, contents.config, source)
        _check_destination(destination, contents)
        staging = Path(
            tempfile.mkdtemp(
                prefix=f".{destination.name}.", suffix=".partial", dir=destination.parent
            )
        )
        try:
            reader.extract(staging, ByteBudget(limits, reader.size))
            # mkdtemp makes the folder private (0700); the model dir is shared with workers.
            staging.chmod(0o755)
            os.rename(staging, destination)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    return ExtractedModel(destination, contents.manifest, contents.config, source)


def _check_destination(destination: Path, contents: ArchiveContents) -> None:
    if destination.is_symlink() or (destination.exists() and not destination.is_dir()):
        raise ArchiveError(f"cannot extract to {destination}: it exists and is not a folder")
    if destination.is_dir() and any(destination.iterdir()):
        raise ArchiveError(f"cannot extract to {destination}: the folder is not empty")
    destination.parent.mkdir(parents=True, exist_ok=True)
    needed = sum(entry.size for entry in contents.entries)
    free = shutil.disk_usage(destination.parent).free
    if needed > free:
        raise ArchiveError(
            f"cannot extract {contents.source.name}: it needs {needed} bytes, "
            f"{free} are free under {destination.parent}"
        )


@contextmanager
def _reading(source: Path) -> Iterator[None]:
    """Turn the many ways a corrupt file fails inside zipfile/tarfile into one ArchiveError."""
    try:
        yield
    except ArchiveError:
        raise
    except (OSError, EOFError, zlib.error, zipfile.BadZipFile, tarfile.TarError) as exc:
        raise ArchiveError(f"cannot read {source}: {exc}") from exc
    except (NotImplementedError, RuntimeError, ValueError) as exc:
        raise ArchiveError(f"cannot read {source}: {exc}") from exc


@contextmanager
def _open_reader(source: Path, limits: ArchiveLimits) -> Iterator[ArchiveReader]:
    if not source.exists():
        raise ArchiveError(f"model archive not found: {source}")
    reader: ArchiveReader
    if source.is_dir():
        reader = DirectoryReader(source, limits)
    elif zipfile.is_zipfile(source):
        reader = ZipReader(source, limits)
    elif stat.S_ISREG(source.stat().st_mode) and tarfile.is_tarfile(source):
        reader = TarReader(source, limits)
    else:
        raise ArchiveError(
            f"{source} is not a model archive (expected a zip .mar, a .tar.gz or a folder)"
        )
    try:
        yield reader
    finally:
        reader.close()


def _contents(reader: ArchiveReader, source: Path) -> ArchiveContents:
    label = source.name or str(source)
    entry = reader.lookup(MANIFEST_PATH)
    if entry is None or entry.is_dir:
        manifest = synthesized_manifest(_stem(source))
        found = False
    else:
        data = _read_limited(reader, entry, MAX_MANIFEST_BYTES)
        manifest = Manifest.from_json_bytes(data, where=f"{label}: {MANIFEST_PATH}")
        found = True
    model = manifest.model
    inner = {
        "serializedFile": model.serialized_file,
        "modelFile": model.model_file,
        "requirementsFile": model.requirements_file,
        "configFile": model.config_file,
        # "file.py:fn" and "module:fn" both name their file (or module) before the colon.
        "handler": (model.handler or "").split(":", 1)[0] or None,
    }
    for field, value in inner.items():
        if value is not None:
            check_inner_path(value, field=field)
    config = ModelConfig()
    config_text: str | None = None
    if model.config_file is not None:
        name = check_inner_path(model.config_file, field="configFile")
        config_entry = reader.lookup(name)
        if config_entry is None or config_entry.is_dir:
            raise ArchiveError(
                f"{label}: manifest configFile {model.config_file!r} is not in the archive"
            )
        raw = _read_limited(reader, config_entry, MAX_CONFIG_BYTES)
        config = parse_model_config(raw, where=f"{label}: {name}")
        config_text = raw.decode("utf-8", errors="replace")
    return ArchiveContents(
        source=source,
        kind=reader.kind,
        entries=tuple(reader.entries),
        manifest=manifest,
        manifest_found=found,
        config=config,
        config_text=config_text,
    )


def handler_file(handler: str) -> str | None:
    """The file a manifest ``handler`` names, or ``None`` for a module or built-in name.

    ``file.py`` and ``path/file.py`` (each optionally ``:function``) name that file;
    ``path/module`` names ``path/module.py`` (the worker's loader reads it so). A plain
    ``module`` or ``package.module`` (``image_classifier``, ``ts.torch_handler.x``,
    ``module:function``) may come from outside the archive and names no file.
    """
    module, sep, function = handler.strip().rpartition(":")
    if not (sep and function.isidentifier() and module):
        module = handler.strip()
    if module.endswith(".py"):
        return module
    if "/" in module:
        return f"{module}.py"
    return None


def _check_handler_file(reader: ArchiveReader, manifest: Manifest, label: str) -> None:
    """A handler file the manifest names must be in the archive (else every worker fails)."""
    handler = manifest.model.handler
    name = handler_file(handler) if handler else None
    if handler is None or name is None:
        return
    inner = check_inner_path(name, field="handler")
    entry = reader.lookup(inner)
    if entry is None or entry.is_dir:
        raise ArchiveError(
            f"{label}: manifest handler {handler!r} names the file {inner!r}, "
            "which is not in the archive"
        )


def _read_limited(reader: ArchiveReader, entry: Entry, limit: int) -> bytes:
    if entry.size > limit:
        raise ArchiveError(f"{entry.name} is larger than {limit} bytes")
    data = reader.read(entry, limit + 1)
    if len(data) > limit:
        raise ArchiveError(f"{entry.name} is larger than {limit} bytes")
    return data


def _stem(source: Path) -> str:
    name = source.name
    for suffix in _ARCHIVE_SUFFIXES:
        if name.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return name
