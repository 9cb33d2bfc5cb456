"""The model archive format: manifest, model-config, safe reader, deterministic writer, CLI.

This is the seam the server uses (see ``docs/internal-contracts.md``): ``extract_archive`` and
``read_manifest`` to open a ``.mar``/``.tar.gz``/folder safely, ``Manifest`` and ``ModelConfig``
to read what it says, and ``archive_model`` (or TorchServe's ``ModelArchiver`` API) to build one.

Names are imported on first use: the server needs only the reader, and should not pay for the
writer's imports at start-up.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from torchwick._lazy import lazy_exports

if TYPE_CHECKING:
    from .errors import ArchiveError, UnsafeArchiveError
    from .manifest import MANIFEST_PATH, MODEL_NAME_PATTERN, Manifest, ModelSection
    from .model_config import ModelConfig, parse_model_config
    from .packaging import (
        BUILTIN_HANDLERS,
        ArchiveResult,
        ModelArchiver,
        ModelArchiverConfig,
        archive_model,
    )
    from .reader import (
        ArchiveContents,
        ExtractedModel,
        extract_archive,
        inspect_archive,
        read_manifest,
    )
    from .safety import ArchiveLimits, Entry

_EXPORTS = {
    "ArchiveContents": ".reader",
    "ArchiveError": ".errors",
    "ArchiveLimits": ".safety",
    "ArchiveResult": ".packaging",
    "BUILTIN_HANDLERS": ".packaging",
    "Entry": ".safety",
    "ExtractedModel": ".reader",
    "MANIFEST_PATH": ".manifest",
    "MODEL_NAME_PATTERN": ".manifest",
    "Manifest": ".manifest",
    "ModelArchiver": ".packaging",
    "ModelArchiverConfig": ".packaging",
    "ModelConfig": ".model_config",
    "ModelSection": ".manifest",
    "UnsafeArchiveError": ".errors",
    "archive_model": ".packaging",
    "extract_archive": ".reader",
    "inspect_archive": ".reader",
    "parse_model_config": ".model_config",
    "read_manifest": ".reader",
}

__all__ = [
    "BUILTIN_HANDLERS",
    "MANIFEST_PATH",
    "MODEL_NAME_PATTERN",
    "ArchiveContents",
    "ArchiveError",
    "ArchiveLimits",
    "ArchiveResult",
    "Entry",
    "ExtractedModel",
    "Manifest",
    "ModelArchiver",
    "ModelArchiverConfig",
    "ModelConfig",
    "ModelSection",
    "UnsafeArchiveError",
    "archive_model",
    "extract_archive",
    "inspect_archive",
    "parse_model_config",
    "read_manifest",
]


__getattr__ = lazy_exports(__name__, _EXPORTS, globals())
