"""``archive_model``: the Python API behind ``torch-model-archiver``, with TorchServe's meanings.

Inputs are validated and collected before anything is created, so a bad option or a missing
file fails with an ``ArchiveError`` and leaves the export folder untouched. Artifacts are stored
flat under their base names, as TorchServe does; the contents of an ``--extra-files`` folder are
stored at the archive root (its sub-folders keep their relative paths). Unlike TorchServe, two
different inputs that would land on the same archive path are an error rather than a silent
overwrite, and the archive's timestamps come from ``SOURCE_DATE_EPOCH`` or the newest input, so
the same inputs always give the same bytes.
"""

from __future__ import annotations

import contextlib
import filecmp
import glob
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ArchiveError, UnsafeArchiveError
from .manifest import (
    ARCHIVER_FORMAT_VERSION,
    MANIFEST_PATH,
    MODEL_NAME_PATTERN,
    RUNTIMES,
    Manifest,
    ModelSection,
    format_created_on,
)
from .model_config import parse_model_config
from .progress import ProgressBar, wants_progress
from .safety import clean_name
from .writer import ARCHIVE_FORMATS, Member, output_path, write_archive

log = logging.getLogger("torchwick.archiver")

BUILTIN_HANDLERS = (
    "base_handler",
    "image_classifier",
    "object_detector",
    "image_segmenter",
    "text_classifier",
    "dali_image_classifier",
    "vllm_handler",
    "trt_llm_handler",
)
#: Handlers of the C++ (LSP) backend that live in the server, not in the archive.
LSP_BUILTIN_HANDLERS = ("BaseHandler", "TorchScriptHandler")
_SKIPPED_FOLDERS = frozenset({"__pycache__", "__MACOSX"})
# createdOn and zip timestamps when no input file gives a time (zip cannot go below 1980).
_FALLBACK_EPOCH = 315_532_800

PathArg = str | os.PathLike[str]


@dataclass(frozen=True, slots=True)
class ArchiveResult:
    """What ``archive_model`` wrote: the path, its sha256 (tree digest for no-archive)."""

    path: Path
    sha256: str
    manifest: Manifest
    archive_format: str
    input_bytes: int


def archive_model(
    *,
    model_name: str,
    version: str,
    handler: str | PathArg,
    serialized_file: PathArg | None = None,
    model_file: PathArg | None = None,
    extra_files: str | Sequence[PathArg] | None = None,
    runtime: str = "python",
    export_path: PathArg | None = None,
    archive_format: str = "default",
    force: bool = False,
    requirements_file: PathArg | None = None,
    config_file: PathArg | None = None,
    source_date_epoch: int | None = None,
    progress: bool | None = None,
) -> ArchiveResult:
    """Build a model archive; options mean what torch-model-archiver's flags mean.

    ``extra_files`` is a comma-separated string (as on the command line) or a list of paths or
    globs. ``export_path`` defaults to the working directory and is created if missing.
    ``source_date_epoch`` overrides the ``SOURCE_DATE_EPOCH`` environment variable; without
    either the newest input's modification time is used. ``progress`` forces the stderr bar on
    or off (default: on for inputs of 64 MiB or more when stderr is a TTY). Raises
    ``ArchiveError`` with a one-line message; no partial output is left behind.
    """
    _check_options(model_name, version, runtime, archive_format)
    export_dir = Path(export_path) if export_path is not None else Path.cwd()
    if export_dir.exists() and not export_dir.is_dir():
        raise ArchiveError(f"export path {export_dir} is not a folder")
    final = output_path(export_dir, model_name, archive_format)
    if (final.exists() or final.is_symlink()) and not force:
        raise ArchiveError(f"{final} already exists; pass -f/--force to overwrite it")

    collector = _Collector(exclude=final)
    model_path = collector.add_file(model_file, "model file")
    serialized_path = collector.add_file(serialized_file, "serialized file")
    handler_value = _add_handler(collector, str(handler), runtime)
    _add_extra_files(collector, extra_files)
    requirements_path = collector.add_file(requirements_file, "requirements file")
    config_path = collector.add_file(config_file, "config file")
    if config_path is not None:
        # Fail now rather than when the server loads the archive.
        parse_model_config(config_path.read_bytes(), where=str(config_file))

    epoch = _epoch(source_date_epoch, collector.members.values())
    manifest = Manifest(
        created_on=format_created_on(epoch),
        runtime=runtime,
        model=ModelSection(
            model_name=model_name,
            serialized_file=_base(serialized_path),
            handler=handler_value,
            model_file=_base(model_path),
            model_version=version,
            requirements_file=_base(requirements_path),
            config_file=_base(config_path),
        ),
        archiver_version=ARCHIVER_FORMAT_VERSION,
    )
    members = [*collector.members.values(), Member(MANIFEST_PATH, data=manifest.to_json().encode())]
    total = sum(member.size for member in members)
    show = wants_progress(total) if progress is None else progress
    bar = ProgressBar(total, f"archiving {model_name}") if show else None
    # Folders this call creates are removed again if writing fails, so a failed run leaves the
    # file system as it found it.
    created = [folder for folder in (export_dir, *export_dir.parents) if not folder.exists()]
    try:
        export_dir.mkdir(parents=True, exist_ok=True)
        path, digest = write_archive(
            members,
            export_dir=export_dir,
            model_name=model_name,
            archive_format=archive_format,
            epoch=epoch,
            force=force,
            progress=bar,
        )
    except BaseException as exc:
        for folder in created:
            with contextlib.suppress(OSError):
                folder.rmdir()
        if isinstance(exc, OSError):
            raise ArchiveError(f"cannot write {final}: {exc.strerror or exc}") from exc
        raise
    finally:
        if bar is not None:
            bar.close()
    return ArchiveResult(path, digest, manifest, archive_format, total)


def _check_options(model_name: str, version: str, runtime: str, archive_format: str) -> None:
    if not MODEL_NAME_PATTERN.match(model_name or ""):
        raise ArchiveError(
            f"model name {model_name!r} is not allowed: it must match {MODEL_NAME_PATTERN.pattern}"
        )
    if not version:
        raise ArchiveError("a model version is required (-v/--version)")
    # The version becomes a URL path segment (/models/{name}/{version}) and a folder name.
    if any(ch in version for ch in "/\\") or any(
        ch.isspace() or not ch.isprintable() for ch in version
    ):
        raise ArchiveError(
            f"model version {version!r} may not contain '/', '\\', spaces or control characters"
        )
    if runtime not in RUNTIMES:
        raise ArchiveError(f"unknown runtime {runtime!r}: choose from {', '.join(RUNTIMES)}")
    if archive_format not in ARCHIVE_FORMATS:
        raise ArchiveError(
            f"unknown archive format {archive_format!r}: choose from {', '.join(ARCHIVE_FORMATS)}"
        )


def _add_handler(collector: _Collector, handler: str, runtime: str) -> str:
    """Copy a handler file if one is named; return the manifest's ``handler`` value."""
    if not handler:
        raise ArchiveError("a handler is required (--handler)")
    builtins = LSP_BUILTIN_HANDLERS if runtime == "LSP" else BUILTIN_HANDLERS
    if handler in builtins:
        return handler
    file_part, colon, function = handler.partition(":")
    if colon and not function:
        raise ArchiveError(f"handler {handler!r} names no function after ':'")
    # TorchServe lets "path/my_handler" stand for path/my_handler.py (.so for the C++ backend).
    suffix = ".so" if runtime == "LSP" else ".py"
    candidates = [Path(file_part)]
    if not file_part.endswith(suffix):
        candidates.append(Path(file_part + suffix))
    found = next((path for path in candidates if path.is_file()), None)
    if found is None:
        tried = " or ".join(str(path) for path in candidates)
        raise ArchiveError(
            f"handler {handler!r} is not a built-in handler and {tried} does not exist"
        )
    collector.add_file(found, "handler")
    return Path(file_part).name + (f":{function}" if colon else "")


def _add_extra_files(collector: _Collector, extra_files: str | Sequence[PathArg] | None) -> None:
    if not extra_files:
        return
    items = (
        extra_files.split(",")
        if isinstance(extra_files, str)
        else [os.fspath(p) for p in extra_files]
    )
    for raw in items:
        item = raw.strip()
        if not item:
            continue
        wildcard = any(ch in item for ch in "*?") or ("[" in item and "]" in item)
        if wildcard:
            matches = sorted(glob.glob(item))
            if not matches:
                log.warning("extra-files pattern %r matched nothing", item)
        elif not os.path.lexists(item):
            raise ArchiveError(f"extra file not found: {item}")
        else:
            matches = [item]
        for match in matches:
            path = Path(match)
            if path.is_file():
                collector.add_file(path, "extra file")
            elif path.is_dir():
                # A folder contributes its contents, not itself (TorchServe's layout).
                for child in sorted(path.iterdir()):
                    if child.is_file():
                        collector.add_file(child, "extra file")
                    elif child.is_dir() and _keep_folder(child.name):
                        collector.add_tree(child, child.name)
            else:
                raise ArchiveError(f"extra file {match} is neither a file nor a folder")


def _keep_folder(name: str) -> bool:
    return name not in _SKIPPED_FOLDERS and not name.startswith(".")


class _Collector:
    """Maps archive paths to input files, refusing clashes and names the reader would refuse."""

    def __init__(self, exclude: Path) -> None:
        self.members: dict[str, Member] = {}
        self._exclude = exclude.resolve()

    def add_file(self, value: PathArg | None, what: str, arcname: str | None = None) -> Path | None:
        """Add one input file (``None`` is skipped); return its path."""
        if value is None or os.fspath(value) == "":
            return None
        path = Path(value)
        if not path.is_file():
            state = "is not a file" if path.exists() else "not found"
            raise ArchiveError(f"{what} {state}: {path}")
        if path.resolve() == self._exclude:
            return path  # never pack the archive being replaced into itself
        name = arcname or path.name
        try:
            if clean_name(name) != name:
                raise UnsafeArchiveError(name, "not a plain relative path")
        except UnsafeArchiveError as exc:
            raise ArchiveError(f"cannot store {path} as {name!r}: {exc.rule}") from exc
        if name.startswith("MAR-INF/"):
            raise ArchiveError(f"cannot store {path}: MAR-INF/ is reserved for the manifest")
        existing = self.members.get(name)
        if existing is not None and existing.source is not None:
            if existing.source.resolve() == path.resolve() or filecmp.cmp(
                existing.source, path, shallow=False
            ):
                return path
            raise ArchiveError(
                f"{existing.source} and {path} would both be stored as {name!r}; rename one"
            )
        self.members[name] = Member(name, source=path)
        return path

    def add_tree(self, folder: Path, prefix: str) -> None:
        """Add every file below ``folder`` under ``prefix/``, skipping caches and dot-folders."""
        seen: set[Path] = set()
        for current, dirnames, filenames in os.walk(folder, followlinks=True):
            real = Path(current).resolve()
            if real in seen:  # a link loop
                dirnames[:] = []
                continue
            seen.add(real)
            dirnames[:] = sorted(d for d in dirnames if _keep_folder(d))
            relative = Path(current).relative_to(folder).as_posix()
            base = prefix if relative == "." else f"{prefix}/{relative}"
            for filename in sorted(filenames):
                self.add_file(Path(current) / filename, "extra file", f"{base}/{filename}")


def _epoch(explicit: int | None, members: Iterable[Member]) -> int:
    if explicit is not None:
        if explicit < 0:
            raise ArchiveError("source_date_epoch must not be negative")
        return explicit
    env = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    if env:
        if not env.isdigit():
            raise ArchiveError(f"SOURCE_DATE_EPOCH must be a non-negative integer, got {env!r}")
        return int(env)
    times = [int(member.source.stat().st_mtime) for member in members if member.source is not None]
    return max(times, default=_FALLBACK_EPOCH)


def _base(path: Path | None) -> str | None:
    return path.name if path is not None else None


@dataclass
class ModelArchiverConfig:
    """TorchServe's ``model_archiver.ModelArchiverConfig``, field for field."""

    model_name: str
    handler: str
    version: str
    serialized_file: str | None = None
    model_file: str | None = None
    extra_files: str | None = None
    runtime: str = "python"
    export_path: str = field(default_factory=os.getcwd)
    archive_format: str = "default"
    force: bool = False
    requirements_file: str | None = None
    config_file: str | None = None


class ModelArchiver:
    """TorchServe's ``model_archiver.ModelArchiver`` entry point."""

    @staticmethod
    def generate_model_archive(config: ModelArchiverConfig) -> ArchiveResult:
        """Archive as ``config`` says (TorchServe returns nothing; the result is extra)."""
        return archive_model(
            model_name=config.model_name,
            version=config.version,
            handler=config.handler,
            serialized_file=config.serialized_file,
            model_file=config.model_file,
            extra_files=config.extra_files,
            runtime=config.runtime,
            export_path=config.export_path,
            archive_format=config.archive_format,
            force=config.force,
            requirements_file=config.requirements_file,
            config_file=config.config_file,
        )
