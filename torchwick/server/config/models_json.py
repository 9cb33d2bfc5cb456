"""Validation of the ``models=`` property: per-model, per-version overrides as JSON.

The shape is TorchServe's: ``{"<name>": {"<version>": {"minWorkers": 1, ...}}}``. Known fields
are type-checked; fields torchwick does not know are dropped and reported so the loader can warn
about them with the other unknown keys. Values <= 0 mean "not set", as in TorchServe.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic.alias_generators import to_camel

from .errors import ConfigError


class _VersionOverrides(BaseModel):
    """The schema of one model version's entry, read from TorchServe's camelCase JSON names.

    Only a validator: the checked values stay a plain mapping (``Settings.models``, the shape
    snapshots write back), and ``registry.precedence`` folds them, with the archive's yaml and
    the registration parameters, into the version's one ``ModelVersionConfig``.
    """

    model_config = ConfigDict(extra="allow", frozen=True, alias_generator=to_camel)

    default_version: bool | None = None
    mar_name: str | None = None
    min_workers: int | None = None
    max_workers: int | None = None
    batch_size: int | None = None
    max_batch_delay: int | None = None
    response_timeout: int | None = None
    startup_timeout: int | None = None
    runtime_type: str | None = None
    parallel_level: int | None = None
    #: The model's traffic policy (``docs/traffic.md``); its shape is checked when applied.
    traffic: dict[str, Any] | None = None


_KNOWN_FIELDS = frozenset(
    field.alias or name for name, field in _VersionOverrides.model_fields.items()
)

ModelsMapping = Mapping[str, Mapping[str, Mapping[str, Any]]]


#: Worker counts a config snapshot records as they were: 0 is a version scaled to zero.
_WORKER_FIELDS = frozenset({"minWorkers", "maxWorkers"})


def _unset(field: str, value: Any, zero_workers: bool) -> bool:
    if not isinstance(value, int) or isinstance(value, bool):
        return False
    if zero_workers and field in _WORKER_FIELDS:
        return value < 0
    return value <= 0


def parse_models_json(
    key: str, raw: str, *, zero_workers: bool = False
) -> tuple[ModelsMapping, tuple[str, ...]]:
    """Validate the ``models`` JSON text.

    Returns a read-only ``{name: {version: {field: value}}}`` holding the known fields that are
    set (non-positive numbers dropped; with ``zero_workers``, the reading of a config
    snapshot, worker counts of 0 are kept), and the dotted names
    (``models.<name>.<version>.<field>``) of fields it did not know. Raises ``ConfigError``
    naming ``key`` for invalid JSON or a field of the wrong type.
    """
    text = raw.strip()
    if not text:
        return MappingProxyType({}), ()
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        raise ConfigError(f"{key}: not valid JSON ({error.msg} at char {error.pos})") from None
    if not isinstance(document, dict):
        raise ConfigError(f"{key}: expected a JSON object of model names")
    models: dict[str, Mapping[str, Mapping[str, Any]]] = {}
    unknown: list[str] = []
    for name, versions in document.items():
        if not isinstance(versions, dict):
            raise ConfigError(f"{key}: model {name!r} must map versions to objects")
        checked: dict[str, Mapping[str, Any]] = {}
        for version, fields in versions.items():
            where = f"{key}.{name}.{version}"
            if not isinstance(fields, dict):
                raise ConfigError(f"{where}: expected a JSON object")
            try:
                overrides = _VersionOverrides.model_validate(fields)
            except ValidationError as error:
                first = error.errors()[0]
                location = ".".join(str(part) for part in first["loc"])
                raise ConfigError(f"{where}.{location}: {first['msg']}") from None
            unknown.extend(f"{where}.{field}" for field in fields if field not in _KNOWN_FIELDS)
            kept = {
                field: value
                for field, value in overrides.model_dump(by_alias=True, exclude_none=True).items()
                if field in _KNOWN_FIELDS and not _unset(field, value, zero_workers)
            }
            checked[str(version)] = MappingProxyType(kept)
        models[str(name)] = MappingProxyType(checked)
    return MappingProxyType(models), tuple(unknown)
