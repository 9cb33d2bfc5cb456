"""The typed ``MAR-INF/MANIFEST.json`` of a model archive, as TorchServe 0.12 reads and writes it.

Reading is lenient where TorchServe is lenient (old manifests with ``modelServerVersion`` and
friends, a missing ``archiverVersion`` or ``createdOn``, numbers where strings belong) and strict
where a bad value would be dangerous later (a model name the server would have to put into URLs
and paths, an unknown runtime). Fields this module does not know are kept and written back, so a
manifest survives a read/write round trip. Validation failures raise ``ArchiveError``.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .errors import ArchiveError

MANIFEST_PATH = "MAR-INF/MANIFEST.json"
#: The ``archiverVersion`` torchwick writes: the torch-model-archiver release whose format it
#: reproduces (torchwick's own version is printed by ``--archiver-version``).
ARCHIVER_FORMAT_VERSION = "0.12.0"
#: TorchServe's model name rule, used by both the archiver CLI and the reader. ``\Z``, not
#: ``$``: ``$`` also matches before a trailing newline, which would let a name forge log lines.
MODEL_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-.]*\Z")
RUNTIMES = ("python", "python3", "LSP")
CREATED_ON_FORMAT = "%d/%m/%Y %H:%M:%S"

# The JSON key order of torch-model-archiver 0.12: known keys first in this order, then any
# unknown keys in the order they were read. Top-level unknown keys go before archiverVersion.
_MODEL_KEYS = (
    ("modelName", "model_name"),
    ("serializedFile", "serialized_file"),
    ("handler", "handler"),
    ("modelFile", "model_file"),
    ("modelVersion", "model_version"),
    ("extensions", "extensions"),
    ("requirementsFile", "requirements_file"),
    ("configFile", "config_file"),
)


def version_problem(version: str) -> str | None:
    """Why ``version`` cannot be a model version, or ``None`` when it can.

    The version becomes a URL path segment (``/models/{name}/{version}``), part of a folder
    and log names: no ``/`` or ``\\``, no control characters (a newline would forge log
    lines), and not ``.`` or ``..``.
    """
    if "/" in version or "\\" in version:
        return f"{version!r} may not contain '/' or '\\'"
    if not version.isprintable():
        return f"{version!r} may not contain control characters"
    if version in (".", ".."):
        return f"{version!r} is not a version"
    return None


def _as_optional_text(value: Any) -> Any:
    """Accept numbers where TorchServe's JSON reader would turn them into strings."""
    if isinstance(value, bool):
        return value  # left for pydantic to reject: true/false is never a name or a path
    if isinstance(value, int | float):
        return str(value)
    return value


class ModelSection(BaseModel):
    """The ``model`` object of the manifest. Every field may be absent (``None``)."""

    model_config = ConfigDict(extra="allow", populate_by_name=True, frozen=True)

    model_name: str | None = Field(default=None, alias="modelName")
    model_version: str | None = Field(default=None, alias="modelVersion")
    serialized_file: str | None = Field(default=None, alias="serializedFile")
    handler: str | None = Field(default=None, alias="handler")
    model_file: str | None = Field(default=None, alias="modelFile")
    extensions: str | None = Field(default=None, alias="extensions")
    requirements_file: str | None = Field(default=None, alias="requirementsFile")
    config_file: str | None = Field(default=None, alias="configFile")

    @field_validator("*", mode="before")
    @classmethod
    def _numbers_to_text(cls, value: Any) -> Any:
        return _as_optional_text(value)

    @field_validator("model_name")
    @classmethod
    def _check_name(cls, value: str | None) -> str | None:
        # The name ends up in URLs, log file names and snapshot keys: keep TorchServe's rule.
        if value is not None and not MODEL_NAME_PATTERN.match(value):
            raise ValueError(f"{value!r} does not match {MODEL_NAME_PATTERN.pattern}")
        return value

    @field_validator("model_version")
    @classmethod
    def _check_version(cls, value: str | None) -> str | None:
        problem = version_problem(value) if value else None
        if problem is not None:
            raise ValueError(problem)
        return value

    def to_json_dict(self) -> dict[str, Any]:
        """The camelCase dict, known keys in TorchServe's order, ``None`` values left out."""
        out: dict[str, Any] = {}
        for key, attr in _MODEL_KEYS:
            value = getattr(self, attr)
            if value is not None:
                out[key] = value
        out.update(self.model_extra or {})
        return out


class Manifest(BaseModel):
    """``MAR-INF/MANIFEST.json``; ``to_json_dict`` gives TorchServe's JSON shape back."""

    model_config = ConfigDict(extra="allow", populate_by_name=True, frozen=True)

    created_on: str | None = Field(default=None, alias="createdOn")
    runtime: str = "python"
    model: ModelSection
    archiver_version: str | None = Field(default=None, alias="archiverVersion")

    @field_validator("created_on", "archiver_version", mode="before")
    @classmethod
    def _numbers_to_text(cls, value: Any) -> Any:
        return _as_optional_text(value)

    @field_validator("runtime")
    @classmethod
    def _check_runtime(cls, value: str) -> str:
        if value not in RUNTIMES:
            raise ValueError(f"{value!r} is not one of {', '.join(RUNTIMES)}")
        return value

    def to_json_dict(self) -> dict[str, Any]:
        """The camelCase dict in TorchServe's key order; unknown keys kept."""
        out: dict[str, Any] = {}
        if self.created_on is not None:
            out["createdOn"] = self.created_on
        out["runtime"] = self.runtime
        out["model"] = self.model.to_json_dict()
        out.update(self.model_extra or {})
        if self.archiver_version is not None:
            out["archiverVersion"] = self.archiver_version
        return out

    def to_json(self) -> str:
        """The text torch-model-archiver would write: ``json.dumps(..., indent=2)``."""
        return json.dumps(self.to_json_dict(), indent=2)

    @classmethod
    def from_json_bytes(cls, data: bytes, *, where: str = MANIFEST_PATH) -> Manifest:
        """Parse manifest bytes; raise ``ArchiveError`` naming ``where`` and the first problem."""
        try:
            raw = json.loads(data.decode("utf-8-sig"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ArchiveError(f"{where}: not valid JSON ({exc})") from exc
        if not isinstance(raw, dict):
            raise ArchiveError(f"{where}: must be a JSON object")
        if not isinstance(raw.get("model"), dict):
            raise ArchiveError(f"{where}: missing the 'model' object")
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            first = exc.errors()[0]
            field = ".".join(str(part) for part in first["loc"])
            raise ArchiveError(f"{where}: field {field!r}: {first['msg']}") from exc


def format_created_on(epoch_seconds: int) -> str:
    """``createdOn`` for a Unix time, in UTC so the same inputs give the same text anywhere."""
    return datetime.fromtimestamp(epoch_seconds, tz=UTC).strftime(CREATED_ON_FORMAT)


def synthesized_manifest(model_name: str | None) -> Manifest:
    """The manifest TorchServe assumes for an archive without one: version ``1.0``, python.

    ``model_name`` (usually the archive's file name without suffix) is dropped when it does not
    satisfy the model name rule; the server then uses the name given at registration.
    """
    name = model_name if model_name and MODEL_NAME_PATTERN.match(model_name) else None
    return Manifest(runtime="python", model=ModelSection(model_name=name, model_version="1.0"))
