"""The typed ``model-config.yaml`` of an archive (the file the manifest names as ``configFile``).

Only the keys the server acts on are typed; the whole document stays available as ``raw`` (the
handler sees it as ``context.model_yaml_config``) and the free ``handler:`` section as
``handler``. The text is parsed with ``yaml.safe_load`` only. A known key with the wrong type or
an out-of-range value raises ``ArchiveError`` naming the key, where TorchServe would log a warning
and silently run with a default the user did not ask for.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from .errors import ArchiveError

DEVICE_TYPES = ("cpu", "gpu")
PARALLEL_TYPES = ("pp", "tp", "pptp", "custom")

_T = TypeVar("_T")

# yaml key -> attribute, for the non-negative integer settings.
_INT_KEYS = {
    "minWorkers": "min_workers",
    "maxWorkers": "max_workers",
    "batchSize": "batch_size",
    "maxBatchDelay": "max_batch_delay",
    "responseTimeout": "response_timeout",
    "startupTimeout": "startup_timeout",
    "jobQueueSize": "job_queue_size",
    "parallelLevel": "parallel_level",
}


@dataclass(frozen=True, slots=True)
class ModelConfig:
    """Frontend settings from ``model-config.yaml``; ``None`` means "not given in the file"."""

    min_workers: int | None = None
    max_workers: int | None = None
    batch_size: int | None = None
    max_batch_delay: int | None = None
    response_timeout: int | None = None
    startup_timeout: int | None = None
    job_queue_size: int | None = None
    parallel_level: int | None = None
    device_type: str | None = None
    device_ids: tuple[int, ...] | None = None
    parallel_type: str | None = None
    handler: dict[str, Any] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict)


def parse_model_config(text: bytes | str, *, where: str = "model-config.yaml") -> ModelConfig:
    """Parse and check a model-config document; raise ``ArchiveError`` (naming ``where``)."""
    import yaml  # here: the server reads archives long after its start-up

    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        detail = " ".join(str(exc).split())
        raise ArchiveError(f"{where}: not valid YAML ({detail})") from exc
    if loaded is None:
        return ModelConfig()
    if not isinstance(loaded, dict):
        raise ArchiveError(f"{where}: the top level must be a mapping of keys to values")
    raw: dict[str, Any] = {str(key): value for key, value in loaded.items()}

    def fail(key: str, expected: str) -> ArchiveError:
        return ArchiveError(f"{where}: {key} must be {expected}, got {raw[key]!r}")

    ints: dict[str, int | None] = {}
    for key, attr in _INT_KEYS.items():
        ints[attr] = _optional(raw, key, _non_negative_int, fail, "a non-negative integer")

    device_type = _optional(raw, "deviceType", _lower_choice(DEVICE_TYPES), fail, "cpu or gpu")
    parallel_type = _optional(
        raw, "parallelType", _lower_choice(PARALLEL_TYPES), fail, "one of pp, tp, pptp, custom"
    )
    device_ids = _optional(raw, "deviceIds", _device_ids, fail, "a list of non-negative integers")
    handler = raw.get("handler")
    if handler is None:
        handler = {}
    elif not isinstance(handler, dict):
        raise fail("handler", "a mapping")

    config = ModelConfig(
        device_type=device_type,
        device_ids=device_ids,
        parallel_type=parallel_type,
        handler=handler,
        raw=raw,
        **ints,
    )
    if (
        config.min_workers is not None
        and config.max_workers is not None
        and config.max_workers < config.min_workers
    ):
        raise ArchiveError(
            f"{where}: maxWorkers ({config.max_workers}) is below minWorkers ({config.min_workers})"
        )
    return config


def _optional(
    raw: dict[str, Any],
    key: str,
    convert: Callable[[Any], _T | None],
    fail: Callable[[str, str], ArchiveError],
    expected: str,
) -> _T | None:
    """``convert(raw[key])``; absent or null keys give ``None``, a failed conversion raises."""
    value = raw.get(key)
    # An empty value ("parallelType:" or "parallelType: ''") means "not set", as in TorchServe.
    if value is None or value == "":
        return None
    converted = convert(value)
    if converted is None:
        raise fail(key, expected)
    return converted


def _non_negative_int(value: Any) -> int | None:
    # bool is an int subclass in Python; "minWorkers: yes" must not mean 1.
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None


def _lower_choice(choices: tuple[str, ...]) -> Callable[[Any], str | None]:
    def convert(value: Any) -> str | None:
        if isinstance(value, str):
            lowered = value.strip().lower()
            if lowered in choices:
                return lowered
        return None

    return convert


def _device_ids(value: Any) -> tuple[int, ...] | None:
    if not isinstance(value, list):
        return None
    ids = [_non_negative_int(item) for item in value]
    if any(item is None for item in ids):
        return None
    return tuple(item for item in ids if item is not None)
