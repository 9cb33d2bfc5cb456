"""Build the one ``Settings`` from defaults, the config file, the environment and CLI flags.

The precedence is stated once, in ``torchwick.server.settings``; this module implements it.
``load_settings`` is pure apart from reading the config file and checking that the paths it
names exist: the environment and working directory are arguments, never globals. It raises
``ConfigError`` (one line naming the key, file or flag) for anything invalid. It does not log;
``log_startup_warnings`` reports unknown keys and risky defaults, once, when the server starts.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..settings import DEFAULT_ALLOWED_URLS, Settings
from .addresses import parse_address
from .errors import ConfigError
from .keys import IGNORED_KEYS, KEYS, META_KEYS, split_list, to_bool
from .properties import parse_properties, substitute_env

_LOGGER = logging.getLogger("torchwick.config")
CONFIG_FILE_ENV = "TS_CONFIG_FILE"
KEY_FILE_NAME = "key_file.json"


@dataclass(frozen=True, slots=True)
class CliOptions:
    """What the ``torchserve`` command line says about configuration.

    ``None`` (or ``False`` for switches) means the flag was not given. ``enable_model_api`` and
    ``disable_token_auth`` can only switch their setting on, as in TorchServe.
    """

    ts_config: Path | None = None
    model_store: Path | None = None
    models: tuple[str, ...] | None = None
    log_config: Path | None = None
    no_config_snapshots: bool = False
    disable_token_auth: bool = False
    enable_model_api: bool = False
    foreground: bool = False


def find_config_file(options: CliOptions, environ: Mapping[str, str], cwd: Path) -> Path | None:
    """The config file to read: ``TS_CONFIG_FILE``, else ``--ts-config``, else
    ``./config.properties`` if it exists, else None.

    Raises ``ConfigError`` when the named file (by env or flag) does not exist.
    """
    named = environ.get(CONFIG_FILE_ENV, "").strip()
    if named:
        path = cwd / Path(named).expanduser()
        if not path.is_file():
            raise ConfigError(f"{CONFIG_FILE_ENV}: config file {path} does not exist")
        return path
    if options.ts_config is not None:
        path = cwd / options.ts_config.expanduser()
        if not path.is_file():
            raise ConfigError(f"--ts-config: config file {path} does not exist")
        return path
    default = cwd / "config.properties"
    return default if default.is_file() else None


def read_config_file(path: Path) -> dict[str, str]:
    """Read and parse a properties file (UTF-8). Raises ``ConfigError`` naming the file."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"config file {path}: cannot be read ({error})") from None
    return parse_properties(text, source=str(path))


def load_settings(options: CliOptions, environ: Mapping[str, str], cwd: Path) -> Settings:
    """Resolve the settings for a server started in ``cwd`` with ``environ`` and ``options``.

    Raises ``ConfigError`` naming the key (and where its value came from) for a value that
    does not parse, a missing ``$$ENV$$`` variable, a path that does not exist, or an
    inconsistent TLS setup. A missing model store is not an error here; the CLI demands one.
    """
    from ..snapshots import SnapshotError, find_latest_snapshot, parse_model_snapshot

    cwd = cwd.absolute()
    log_location = cwd / (environ.get("LOG_LOCATION") or "logs")
    config_file = find_config_file(options, environ, cwd)
    problems: list[str] = []
    explicit = bool(environ.get(CONFIG_FILE_ENV, "").strip()) or options.ts_config is not None
    if not explicit and _snapshots_wanted(options, environ, cwd):
        # TorchServe's order: the newest snapshot comes before ./config.properties.
        latest, skipped = find_latest_snapshot(log_location)
        problems.extend(skipped)
        config_file = latest or config_file
    file_values = read_config_file(config_file) if config_file is not None else {}

    raw: dict[str, tuple[str, str]] = {}
    unknown: list[str] = []
    origin = str(config_file)
    for key, value in file_values.items():
        if key in KEYS or key in META_KEYS:
            raw[key] = (substitute_env(value, environ, key=key), origin)
        elif key not in IGNORED_KEYS:
            unknown.append(key)

    def file_flag(key: str) -> bool:
        found = raw.get(key)
        return found is not None and bool(to_bool(key, found[0], cwd))

    envvars_enabled = file_flag("enable_envvars_config")
    env_allowed_urls = file_flag("use_env_allowed_urls")
    for prefix, enabled in (("TS_", envvars_enabled), ("TORCHWICK_", True)):
        if not enabled:
            continue
        for key in KEYS:
            name = prefix + key.upper()
            if name in environ and (key != "allowed_urls" or env_allowed_urls):
                raw[key] = (environ[name], f"environment variable {name}")

    values: dict[str, Any] = {}
    for key, (text, source) in raw.items():
        if key in META_KEYS:
            continue
        spec = KEYS[key]
        try:
            values[spec.field] = spec.convert(key, text, cwd)
        except ConfigError as error:
            raise ConfigError(f"{error} (from {source})") from None
    if "models" in raw:
        # Imported here: its pydantic models cost start-up time to every server without it.
        from .models_json import parse_models_json

        text, source = raw["models"]
        try:
            values["models"], unknown_fields = parse_models_json("models", text)
        except ConfigError as error:
            raise ConfigError(f"{error} (from {source})") from None
        unknown.extend(unknown_fields)

    if "model_snapshot" in raw:
        text, source = raw["model_snapshot"]
        try:
            restored = parse_model_snapshot(text, source)
        except SnapshotError as error:
            problems.append(f"ignoring the model snapshot: {error}")
        else:
            # A snapshot replaces load_models/--models and the models= JSON, as in TorchServe.
            values["models"] = restored.models
            values["restore_models"] = restored.register
            unknown.extend(restored.unknown)
            options = dataclasses.replace(options, models=None)
    values["snapshot_problems"] = tuple(problems)

    _apply_cli(values, options, cwd)
    if values.get("restore_models"):
        values.pop("load_models", None)
    values["key_file"] = cwd / KEY_FILE_NAME
    values["log_location"] = log_location
    values["metrics_location"] = cwd / (environ.get("METRICS_LOCATION") or "logs")
    values["config_file"] = config_file
    values["unknown_keys"] = tuple(unknown)
    settings = dataclasses.replace(Settings(), **values)
    _check_paths(settings)
    _check_tls(settings)
    return settings


def _snapshots_wanted(options: CliOptions, environ: Mapping[str, str], cwd: Path) -> bool:
    """False with ``--ncs``, ``TORCHWICK_ENABLE_SNAPSHOTS=false``, or ``enable_snapshots=false``
    in ``./config.properties`` (read here because the snapshot is chosen before that file)."""
    if options.no_config_snapshots:
        return False
    candidates = [("TORCHWICK_ENABLE_SNAPSHOTS", environ.get("TORCHWICK_ENABLE_SNAPSHOTS"))]
    default = cwd / "config.properties"
    if default.is_file():
        # A broken file is reported when (if) it is read as the config.
        with contextlib.suppress(ConfigError):
            candidates.append(
                ("enable_snapshots", read_config_file(default).get("enable_snapshots"))
            )
    return all(text is None or to_bool(key, text, cwd) for key, text in candidates)


def _apply_cli(values: dict[str, Any], options: CliOptions, cwd: Path) -> None:
    """Let the CLI flags override what the file and environment said."""
    if options.model_store is not None:
        values["model_store"] = cwd / options.model_store.expanduser()
    if options.models is not None:
        values["load_models"] = tuple(
            item for entry in options.models for item in split_list(entry)
        )
    if options.log_config is not None:
        values["log_config"] = cwd / options.log_config.expanduser()
    if options.no_config_snapshots:
        values["snapshots_enabled"] = False
    if options.enable_model_api:
        values["enable_model_api"] = True
    if options.disable_token_auth:
        values["disable_token_authorization"] = True
    values["foreground"] = options.foreground


def _check_paths(settings: Settings) -> None:
    """Every path the settings name must exist (the model store as a directory)."""
    if settings.model_store is not None and not settings.model_store.is_dir():
        raise ConfigError(f"model_store: {settings.model_store} is not an existing directory")
    for key in (
        "log_config",
        "metrics_config",
        "private_key_file",
        "certificate_file",
        "token_file",
        "keystore",
    ):
        path = getattr(settings, key)
        if path is not None and not Path(path).is_file():
            raise ConfigError(f"{key}: file {path} does not exist")


def _check_tls(settings: Settings) -> None:
    """Key and certificate come together, HTTPS (or gRPC SSL) needs a keystore or both, and
    the TLS material must load (a wrong ``keystore_pass`` fails here, at start)."""
    from ..security.tls import load_tls_material

    has_key = settings.private_key_file is not None
    if has_key != (settings.certificate_file is not None):
        raise ConfigError("private_key_file and certificate_file: set both for TLS, or neither")
    if has_key or settings.keystore is not None:
        load_tls_material(settings)
        return
    for key in ("inference_address", "management_address", "metrics_address"):
        if parse_address(getattr(settings, key), key=key).is_tls:
            raise ConfigError(
                f"{key}: https needs a certificate: set private_key_file and certificate_file, "
                "or keystore (torchwick never generates a self-signed certificate)"
            )
    if settings.enable_grpc_ssl:
        raise ConfigError(
            "enable_grpc_ssl: needs private_key_file and certificate_file, or keystore"
        )


def startup_warnings(settings: Settings) -> tuple[str, ...]:
    """The warnings the server owes its operator at startup, in a fixed order."""
    warnings: list[str] = []
    warnings.extend(settings.snapshot_problems)
    if settings.unknown_keys:
        where = settings.config_file or "config.properties"
        warnings.append(
            f"{where}: ignoring keys torchwick does not know: {', '.join(settings.unknown_keys)}"
        )
    if settings.allowed_urls == DEFAULT_ALLOWED_URLS and not settings.strict_allowed_urls:
        warnings.append(
            "allowed_urls is the permissive default (any file:// or http(s):// URL may be "
            "registered); set allowed_urls to the sources you trust"
        )
    if settings.disable_token_authorization:
        warnings.append("token authorization is disabled: the APIs accept requests from anyone")
    return tuple(warnings)


def log_startup_warnings(settings: Settings, logger: logging.Logger | None = None) -> None:
    """Log each of ``startup_warnings(settings)`` once, at WARNING level.

    Call this exactly once per server start (the CLI's foreground path does).
    """
    target = logger or _LOGGER
    for message in startup_warnings(settings):
        target.warning("%s", message)
