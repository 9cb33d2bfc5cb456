"""Config snapshots: TorchServe's ``<log_location>/config/<yyyyMMddHHmmssSSS>-<kind>.cfg`` files.

A snapshot is a ``.properties`` file: the keys of the config file the server was started with
(as written there, ``$$ENV$$`` references unexpanded; ``models``, ``load_models`` and
``model_snapshot`` left out), ``model_store`` when the command line gave it, and
``model_snapshot``, TorchServe's JSON::

    {"name": "20250101120000000-snapshot.cfg", "modelCount": 2, "created": 1735732800000,
     "models": {"<name>": {"<version>": {"defaultVersion": true, "marName": "m.mar", ...}}}}

``models`` is whatever ``DataPlane.snapshot()`` returns (the ``models=`` JSON shape), so any
per-version field it gains round-trips. Files are written with mode 0600 (a config may hold
secrets such as ``keystore_pass``), atomically, by ``SnapshotWriter``: ``startup`` once the
startup models are loaded, ``snapshot`` after each management change, ``shutdown`` on a clean
stop. ``--ncs`` or ``enable_snapshots=false`` turns all of this off.

Restoring (``torchwick.server.config.loader``): without ``TS_CONFIG_FILE``/``--ts-config`` the
newest valid snapshot becomes the config file (before ``./config.properties``, as in
TorchServe); a config file holding ``model_snapshot`` (also one named by ``--ts-config``)
registers its models at startup instead of ``load_models``, with their versions, default
version, workers and batch settings taken through the ``models=`` path; the worker counts
are restored exactly as written (0 included, over the archive's yaml). A corrupt snapshot
is reported with its file and line and skipped (an older one is tried), never fatal.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config.errors import ConfigError
from .config.properties import parse_properties
from .security.files import write_private_file
from .settings import Settings

if TYPE_CHECKING:
    from .config.models_json import ModelsMapping

SNAPSHOT_KEY = "model_snapshot"
SNAPSHOT_DIR = "config"
_NAME = re.compile(r"(\d{17})-(startup|snapshot|shutdown)\.cfg")
#: Keys of the config file that a snapshot does not copy (the snapshot replaces them).
_NOT_COPIED = frozenset({"models", "load_models", SNAPSHOT_KEY})
log = logging.getLogger("torchwick.server.snapshots")

ModelsSource = Callable[[], Mapping[str, Mapping[str, Mapping[str, Any]]]]


class SnapshotError(ConfigError):
    """A snapshot file that cannot be used; the message names the file and line."""


@dataclass(frozen=True, slots=True)
class RestoredModels:
    """What a ``model_snapshot`` value asks for: ``models=`` overrides and what to register."""

    models: ModelsMapping
    #: (name, marName) per version, in file order.
    register: tuple[tuple[str, str], ...]
    #: Fields of ``models`` that ``parse_models_json`` did not know.
    unknown: tuple[str, ...]


def snapshot_directory(log_location: Path) -> Path:
    """``<log_location>/config``."""
    return log_location / SNAPSHOT_DIR


def parse_model_snapshot(text: str, where: str) -> RestoredModels:
    """Validate a ``model_snapshot`` JSON value. Raises ``SnapshotError`` naming ``where``."""
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        raise SnapshotError(
            f"{where}: {SNAPSHOT_KEY} is not valid JSON ({error.msg} at line {error.lineno} "
            f"column {error.colno} of the value)"
        ) from None
    models = document.get("models") if isinstance(document, dict) else None
    if not isinstance(models, dict):
        raise SnapshotError(f'{where}: {SNAPSHOT_KEY} has no "models" object')
    # Imported here: its pydantic models cost start-up time to every server (snapshots are
    # read only when one is restored).
    from .config.models_json import parse_models_json

    try:
        checked, unknown = parse_models_json(
            f"{SNAPSHOT_KEY}.models", json.dumps(models), zero_workers=True
        )
    except ConfigError as error:
        raise SnapshotError(f"{where}: {error}") from None
    register: list[tuple[str, str]] = []
    for name, versions in models.items():
        for version, fields in versions.items():
            mar = fields.get("marName")
            if not isinstance(mar, str) or not mar.strip():
                raise SnapshotError(f"{where}: {name} version {version} has no marName")
            register.append((name, mar))
    return RestoredModels(checked, tuple(register), unknown)


def read_snapshot(path: Path) -> tuple[dict[str, str], RestoredModels | None]:
    """The properties of a snapshot (or any config) file and its parsed ``model_snapshot``.

    Raises ``SnapshotError`` naming the file and the line of a malformed entry.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise SnapshotError(f"{path}: cannot be read ({error})") from None
    try:
        values = parse_properties(text, source=str(path))
    except ConfigError as error:
        raise SnapshotError(str(error)) from None
    if SNAPSHOT_KEY not in values:
        return values, None
    return values, parse_model_snapshot(values[SNAPSHOT_KEY], f"{path}:{_line_of(text)}")


def _line_of(text: str) -> int:
    """The 1-based line where the ``model_snapshot`` entry starts (0 when not found)."""
    for number, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith(SNAPSHOT_KEY):
            return number
    return 0


def find_latest_snapshot(log_location: Path) -> tuple[Path | None, tuple[str, ...]]:
    """The newest usable snapshot under ``<log_location>/config`` (by its timestamp prefix),
    and one message per newer snapshot skipped as corrupt. Never raises."""
    directory = snapshot_directory(log_location)
    try:
        names = [p for p in directory.iterdir() if _NAME.fullmatch(p.name) and p.is_file()]
    except OSError:
        return None, ()
    problems: list[str] = []
    for path in sorted(names, key=lambda p: p.name[:17], reverse=True):
        try:
            read_snapshot(path)
        except SnapshotError as error:
            problems.append(f"skipping corrupt config snapshot: {error}")
            continue
        return path, tuple(problems)
    return None, tuple(problems)


def _escape(text: str, *, key: bool) -> str:
    """Java ``Properties.store`` escaping (non-ASCII kept as UTF-8, which the reader accepts)."""
    out: list[str] = []
    for index, char in enumerate(text):
        if char == "\\":
            out.append("\\\\")
        elif char in "\t\n\r\f":
            out.append({"\t": "\\t", "\n": "\\n", "\r": "\\r", "\f": "\\f"}[char])
        elif char in "=:#!" or (char == " " and (key or index == 0)):
            out.append("\\" + char)
        else:
            out.append(char)
    return "".join(out)


class SnapshotWriter:
    """Writes snapshot files from ``source`` (``DataPlane.snapshot``). ``save`` never raises.

    The copied config keys are read once, at construction. ``clock`` gives epoch seconds;
    file names are strictly increasing even when two saves fall in the same millisecond.
    """

    def __init__(
        self, settings: Settings, source: ModelsSource, clock: Callable[[], float] = time.time
    ) -> None:
        self._directory = snapshot_directory(settings.log_location)
        self._source = source
        self._clock = clock
        self._last_ms = 0
        self._properties = self._base_properties(settings)

    @staticmethod
    def _base_properties(settings: Settings) -> dict[str, str]:
        properties: dict[str, str] = {}
        if settings.config_file is not None:
            try:
                values = parse_properties(
                    settings.config_file.read_text(encoding="utf-8"),
                    source=str(settings.config_file),
                )
            except (OSError, UnicodeDecodeError, ConfigError) as error:
                log.warning("config snapshots will not copy %s: %s", settings.config_file, error)
                values = {}
            properties.update((k, v) for k, v in values.items() if k not in _NOT_COPIED)
        if settings.model_store is not None:
            properties["model_store"] = str(settings.model_store)
        return properties

    def save(self, kind: str = "snapshot") -> Path | None:
        """Write ``<timestamp>-<kind>.cfg``; return its path, or None (logged) on failure."""
        now_ms = max(int(self._clock() * 1000), self._last_ms + 1)
        self._last_ms = now_ms
        stamp = datetime.fromtimestamp(now_ms / 1000, UTC)
        name = f"{stamp:%Y%m%d%H%M%S}{now_ms % 1000:03d}-{kind}.cfg"
        try:
            models = self._source()
            count = sum(len(versions) for versions in models.values())
            document = {"name": name, "modelCount": count, "created": now_ms, "models": models}
            lines = [f"#Saving snapshot\n#{stamp:%a %b %d %H:%M:%S UTC %Y}\n"]
            entries = {**self._properties, SNAPSHOT_KEY: json.dumps(document)}
            lines += [
                f"{_escape(k, key=True)}={_escape(v, key=False)}\n" for k, v in entries.items()
            ]
            self._directory.mkdir(parents=True, exist_ok=True)
            path = self._directory / name
            write_private_file(path, "".join(lines).encode("utf-8"))
        except (OSError, TypeError, ValueError) as error:
            log.error("cannot write config snapshot %s: %s", name, error)
            return None
        return path
