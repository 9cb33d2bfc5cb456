"""The table of configuration keys: which ``Settings`` field each sets and how it is checked.

Every converter takes ``(key, raw_text, cwd)`` and returns the typed value, or raises
``ConfigError`` naming the key. Values are stripped of surrounding whitespace first (Java keeps
trailing blanks; no setting is meant to have them). Relative paths resolve against ``cwd``.

``IGNORED_KEYS`` are TorchServe keys that have no meaning in torchwick (the JVM, Netty, the C++
backend, IPEX launchers, ...): they are accepted without a word. Any other key that is in
neither table ends up in ``Settings.unknown_keys``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .addresses import parse_address
from .errors import ConfigError

Converter = Callable[[str, str, Path], object]

_TRUE = frozenset({"true", "yes", "on", "1"})
_FALSE = frozenset({"false", "no", "off", "0"})


@dataclass(frozen=True, slots=True)
class KeySpec:
    """How one key is read: the ``Settings`` field it sets and its converter."""

    field: str
    convert: Converter


def to_bool(key: str, raw: str, cwd: Path) -> bool:
    """``true/false`` (also ``yes/no``, ``on/off``, ``1/0``), case-insensitive."""
    text = raw.strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ConfigError(f"{key}: expected true or false, got {raw.strip()!r}")


def _parse_int(key: str, raw: str, minimum: int) -> int:
    try:
        value = int(raw.strip())
    except ValueError:
        raise ConfigError(f"{key}: expected an integer, got {raw.strip()!r}") from None
    if value < minimum:
        raise ConfigError(f"{key}: must be at least {minimum}, got {value}")
    return value


def _buckets(key: str, raw: str, cwd: Path) -> tuple[float, ...]:
    """Comma-separated histogram bounds in seconds, positive and strictly increasing."""
    try:
        bounds = tuple(float(part) for part in raw.split(",") if part.strip())
    except ValueError:
        raise ConfigError(f"{key}: expected comma-separated seconds, got {raw.strip()!r}") from None
    if not bounds or any(b <= 0 for b in bounds) or list(bounds) != sorted(set(bounds)):
        raise ConfigError(
            f"{key}: bounds must be positive and strictly increasing: {raw.strip()!r}"
        )
    return bounds


def _int(minimum: int) -> Converter:
    def convert(key: str, raw: str, cwd: Path) -> int:
        return _parse_int(key, raw, minimum)

    return convert


def _optional_int(minimum: int) -> Converter:
    def convert(key: str, raw: str, cwd: Path) -> int | None:
        return _parse_int(key, raw, minimum) if raw.strip() else None

    return convert


def _positive_float(key: str, raw: str, cwd: Path) -> float:
    try:
        value = float(raw.strip())
    except ValueError:
        raise ConfigError(f"{key}: expected a number, got {raw.strip()!r}") from None
    if not value > 0 or value == float("inf"):
        raise ConfigError(f"{key}: must be a positive finite number, got {raw.strip()!r}")
    return value


def _min_float(minimum: float) -> Converter:
    def convert(key: str, raw: str, cwd: Path) -> float:
        value = _positive_float(key, raw, cwd)
        if value < minimum:
            raise ConfigError(f"{key}: must be at least {minimum:g}, got {raw.strip()!r}")
        return value

    return convert


def _text(key: str, raw: str, cwd: Path) -> str:
    return raw.strip()


def _optional_text(key: str, raw: str, cwd: Path) -> str | None:
    return raw.strip() or None


def _choice(*allowed: str, optional: bool = False) -> Converter:
    def convert(key: str, raw: str, cwd: Path) -> str | None:
        text = raw.strip()
        if optional and not text:
            return None
        if text.lower() not in allowed:
            raise ConfigError(f"{key}: expected one of {', '.join(allowed)}, got {text!r}")
        return text.lower()

    return convert


def to_path(key: str, raw: str, cwd: Path) -> Path | None:
    """A path (``~`` expanded; relative to ``cwd``); empty text means unset."""
    text = raw.strip()
    return (cwd / Path(text).expanduser()) if text else None


def _address(key: str, raw: str, cwd: Path) -> str:
    parse_address(raw, key=key)
    return raw.strip()


def _host(key: str, raw: str, cwd: Path) -> str:
    text = raw.strip()
    if not text or re.search(r"[\s/]", text):
        raise ConfigError(f"{key}: expected a host name or IP address, got {text!r}")
    return text


def split_list(raw: str) -> tuple[str, ...]:
    """A comma-separated list, items stripped, empty items dropped."""
    return tuple(item.strip() for item in raw.split(",") if item.strip())


def _load_models(key: str, raw: str, cwd: Path) -> tuple[str, ...]:
    return split_list(raw)


def _allowed_urls(key: str, raw: str, cwd: Path) -> tuple[str, ...]:
    patterns = split_list(raw)
    if not patterns:
        raise ConfigError(f"{key}: needs at least one regular expression")
    for pattern in patterns:
        try:
            re.compile(pattern)
        except re.error as error:
            raise ConfigError(f"{key}: {pattern!r} is not a valid regex ({error})") from None
    return patterns


def _regex(key: str, raw: str, cwd: Path) -> str:
    text = raw.strip()
    try:
        re.compile(text)
    except re.error as error:
        raise ConfigError(f"{key}: {text!r} is not a valid regex ({error})") from None
    return text


def _same(convert: Converter, *names: str) -> dict[str, KeySpec]:
    return {name: KeySpec(name, convert) for name in names}


#: Keys torchwick reads, by property name. ``models`` is handled by ``models_json``.
KEYS: dict[str, KeySpec] = {
    **_same(_address, "inference_address", "management_address", "metrics_address"),
    **_same(_host, "grpc_inference_address", "grpc_management_address"),
    **_same(_int(0), "grpc_inference_port", "grpc_management_port"),
    **_same(
        _optional_int(0),
        "grpc_inference_max_connection_age_ms",
        "grpc_inference_max_connection_age_grace_ms",
        "grpc_management_max_connection_age_ms",
        "grpc_management_max_connection_age_grace_ms",
    ),
    **_same(
        to_bool,
        "enable_grpc_ssl",
        "enable_metrics_api",
        "enable_model_api",
        "disable_token_authorization",
        "install_py_dep_per_model",
        "decode_input_request",
        "limit_max_image_pixels",
        "disable_system_metrics",
        "enable_tracing",
    ),
    **_same(
        to_path,
        "model_store",
        "private_key_file",
        "certificate_file",
        "metrics_config",
        "token_file",
        "keystore",
    ),
    **_same(
        _int(0),
        "default_workers_per_model",
        "default_response_timeout",
        "default_startup_timeout",
        "unregister_model_timeout",
        "worker_threads",
        "warm_workers",
    ),
    **_same(_int(1), "job_queue_size", "max_request_size", "max_response_size"),
    # torchwick only: GOMP_SPINCOUNT for workers, -1 for OpenMP's default (docs/configuration.md)
    **_same(_int(-1), "worker_omp_spin_count"),
    **_same(_int(1), "metric_time_interval"),
    **_same(_optional_int(0), "number_of_gpu"),
    **_same(_positive_float, "token_expiration_min", "worker_heartbeat_s"),
    **_same(_optional_text, "default_service_handler", "keystore_pass", "keystore_type"),
    **_same(_optional_text, "cors_allowed_origin", "cors_allowed_methods", "cors_allowed_headers"),
    "metrics_mode": KeySpec("metrics_mode", _choice("log", "prometheus", "legacy")),
    "form_value_charset": KeySpec("form_value_charset", _choice("utf-8", "ascii")),
    "metrics_histogram_buckets": KeySpec("metrics_histogram_buckets", _buckets),
    "log_format": KeySpec("log_format", _choice("text", "json")),
    "service_envelope": KeySpec(
        "service_envelope", _choice("body", "json", "kserve", "kservev2", optional=True)
    ),
    "load_models": KeySpec("load_models", _load_models),
    "allowed_urls": KeySpec("allowed_urls", _allowed_urls),
    "blacklist_env_vars": KeySpec("blacklist_env_vars", _regex),
    # torchwick's model store and archive limits (docs/security.md)
    **_same(to_bool, "strict_allowed_urls"),
    # torchwick only: false stops writing and restoring config snapshots (like --ncs)
    "enable_snapshots": KeySpec("snapshots_enabled", to_bool),
    **_same(_int(1), "max_download_size", "max_archive_entries", "max_archive_uncompressed_size"),
    **_same(_positive_float, "download_timeout_s", "download_read_timeout_s"),
    **_same(_min_float(1.0), "max_archive_compression_ratio"),
    # connection, request and input limits (docs/security.md)
    **_same(_positive_float, "request_head_timeout_s", "grpc_max_connection_idle_s"),
    **_same(_positive_float, "worker_backoff_max_s"),
    **_same(_int(1), "keep_alive_timeout_s", "max_header_size", "max_header_count"),
    **_same(_int(1), "max_url_length", "max_connections", "max_inflight_requests"),
    **_same(_int(0), "fd_reserve", "retry_after_s"),
    **_same(_int(1), "max_json_depth", "max_multipart_parts", "max_image_pixels"),
    **_same(_int(1), "grpc_max_concurrent_streams", "grpc_max_concurrent_rpcs"),
    **_same(_int(1), "grpc_max_metadata_size"),
    # shared-memory IPC between the frontend and its workers (docs/architecture.md)
    **_same(_int(0), "ipc_shm_threshold", "ipc_shm_size"),
}

#: Keys that steer loading itself; read from the file only.
META_KEYS = frozenset({"enable_envvars_config", "use_env_allowed_urls", "models", "model_snapshot"})

#: TorchServe keys accepted and ignored: they configure parts torchwick does not have.
IGNORED_KEYS = frozenset(
    {
        "async_logging",
        "cpp_log_config",
        "cpu_launcher_args",
        "cpu_launcher_enable",
        "debug",
        "initial_distribution_port",
        "initial_worker_port",
        "io_ratio",
        "ipex_enable",
        "ipex_gpu_enable",
        "model_metrics_auto_detect",
        "model_server_home",
        "netty_client_threads",
        "number_of_netty_threads",
        "plugins_path",
        "prefer_direct_buffer",
        "system_metrics_cmd",
        "ts_header_key_sequence_end",
        "ts_header_key_sequence_id",
        "ts_header_key_sequence_start",
        "ts_open_inference_protocol",
        "use_native_io",
        "vmargs",
        "workflow_store",
        "tsConfigFile",
    }
)
