"""Which models ``load_models`` / ``--models`` asks for, and how many workers they get.

Entries are ``all`` (every archive in the model store), ``file.mar`` (name = the file name
without its archive suffix, non-word characters replaced by ``_``), or ``name=url`` where url
is a store entry or an allowed ``http(s)://``/``file://`` URL.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from torchwick.server.errors import TorchwickError

from .registry import ModelRegistry

#: Archive suffixes recognised in the model store, longest first so ``.tar.gz`` wins.
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".mar", ".model")
#: Without ``default_workers_per_model`` or GPUs, a startup model gets one worker per core,
#: but no more than this: dozens of CPU workers per model only fight over the same cores.
MAX_DEFAULT_CPU_WORKERS = 4

_NON_WORD = re.compile(r"\W")


@dataclass(frozen=True, slots=True)
class StartupModel:
    """One model to register at startup under ``name`` from ``url``."""

    name: str
    url: str


def default_model_name(url: str) -> str:
    """The name TorchServe gives ``url``: its last path part minus the archive suffix, with
    every non-word character replaced by ``_``."""
    base = url.rstrip("/").rsplit("/", 1)[-1]
    for suffix in ARCHIVE_SUFFIXES:
        if base.lower().endswith(suffix):
            base = base[: -len(suffix)]
            break
    return _NON_WORD.sub("_", base)


def parse_load_models(
    entries: Iterable[str], discover: Callable[[], list[str]]
) -> list[StartupModel]:
    """Expand the ``load_models`` entries (``discover`` lists the store for ``all``).

    Entries may themselves be comma-separated; empty parts are skipped; a model named twice is
    kept once (the first mention wins).
    """
    wanted: list[StartupModel] = []
    seen: set[str] = set()
    for entry in entries:
        for raw in entry.split(","):
            part = raw.strip()
            if not part:
                continue
            if part.lower() == "all":
                found = [StartupModel(default_model_name(u), u) for u in discover()]
            elif "=" in part and "://" not in part.split("=", 1)[0]:
                name, url = part.split("=", 1)
                found = [StartupModel(name.strip(), url.strip())]
            else:
                found = [StartupModel(default_model_name(part), part)]
            for model in found:
                if model.name not in seen:
                    seen.add(model.name)
                    wanted.append(model)
    return wanted


def startup_workers(default_workers_per_model: int, gpu_count: int, cpu_count: int) -> int:
    """Workers for a startup model: the configured default, else one per GPU, else one per
    core (at most ``MAX_DEFAULT_CPU_WORKERS``)."""
    if default_workers_per_model > 0:
        return default_workers_per_model
    if gpu_count > 0:
        return gpu_count
    return max(1, min(cpu_count, MAX_DEFAULT_CPU_WORKERS))


def apply_default_versions(
    registry: ModelRegistry, models: Mapping[str, Mapping[str, Mapping[str, Any]]]
) -> None:
    """Make each version the ``models=`` JSON marks ``defaultVersion: true`` the default
    (versions not registered are ignored)."""
    for name, versions in models.items():
        for version, options in versions.items():
            if options.get("defaultVersion") is True and name in registry:
                with contextlib.suppress(TorchwickError):
                    registry.set_default(name, version)
