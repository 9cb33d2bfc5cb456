"""Model name -> versions -> state, the default version, and request routing.

The registry is plain in-memory bookkeeping on the event loop thread: no awaits, so every
method is atomic with respect to other coroutines. Versions are keyed by the manifest's
``modelVersion``; the first version registered under a name becomes its default.

Routing goes through a ``Router``: an explicit version is looked up directly; without one the
router picks. The default router returns the default version; weighted A/B or sticky routing
can be added later as other routers without touching callers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from torchwick.server.contracts import InferenceRequest
from torchwick.server.errors import (
    Conflict,
    ForbiddenOperation,
    ModelNotFound,
    ModelVersionNotFound,
)
from torchwick.server.scheduling import AnyManagedPool, Batcher

from .types import ModelVersionConfig


@dataclass(eq=False)
class ModelVersionEntry:
    """Everything the server holds for one registered model version.

    ``spec``, the version's one ``ModelVersionConfig``, is replaced (never mutated) when
    scaling changes the worker counts; the pool keeps the config it was created with, whose
    worker-facing fields never change. ``workdir``
    (the private extraction directory) and ``downloaded`` (an archive fetched into the model
    store for this registration) are deleted when the version is unregistered.
    ``short_since`` is when the pool last dropped below ``min_workers`` ready (for health);
    ``lock`` serialises management operations on this version.
    """

    spec: ModelVersionConfig
    pool: AnyManagedPool
    batcher: Batcher
    workdir: Path | None = None
    downloaded: Path | None = None
    short_since: float | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def name(self) -> str:
        """The model name."""
        return self.spec.name

    @property
    def version(self) -> str:
        """The model version."""
        return self.spec.version

    @property
    def model_dir(self) -> Path:
        """The extracted archive the workers load (``spec.model_dir``)."""
        return Path(self.spec.model_dir)

    @property
    def manifest(self) -> Mapping[str, Any]:
        """The archive's MANIFEST as TorchServe's camelCase JSON (``spec.manifest``)."""
        return self.spec.manifest


@dataclass(eq=False)
class ModelVersions:
    """All versions of one model name, in registration order, and the default version."""

    name: str
    versions: dict[str, ModelVersionEntry] = field(default_factory=dict)
    default_version: str = ""

    @property
    def default(self) -> ModelVersionEntry:
        """The entry requests without a version go to."""
        return self.versions[self.default_version]


class Router(Protocol):
    """Chooses the version for a request that named none."""

    def route(self, model: ModelVersions, request: InferenceRequest | None) -> ModelVersionEntry:
        """The entry that should serve ``request`` (``None`` for non-inference lookups)."""
        ...


class DefaultVersionRouter:
    """Every unversioned request goes to the default version (TorchServe's behaviour)."""

    def route(self, model: ModelVersions, request: InferenceRequest | None) -> ModelVersionEntry:
        """The default version."""
        return model.default


def version_not_found(model: str, version: str) -> ModelVersionNotFound:
    """TorchServe's text for an unknown version of a known model."""
    return ModelVersionNotFound(f"Model version: {version} does not exist for model: {model}")


class ModelRegistry:
    """Registered models. All lookups raise ``ModelNotFound`` / ``ModelVersionNotFound``."""

    def __init__(self, router: Router | None = None) -> None:
        self._models: dict[str, ModelVersions] = {}
        self._router: Router = router or DefaultVersionRouter()

    def __len__(self) -> int:
        return len(self._models)

    def __contains__(self, name: object) -> bool:
        return name in self._models

    def model(self, name: str) -> ModelVersions:
        """All versions of ``name``."""
        found = self._models.get(name)
        if found is None:
            raise ModelNotFound(f"Model not found: {name}")
        return found

    def get(self, name: str, version: str | None = None) -> ModelVersionEntry:
        """The exact version, or the default one when ``version`` is ``None``."""
        model = self.model(name)
        if version is None:
            return model.default
        entry = model.versions.get(version)
        if entry is None:
            raise version_not_found(name, version)
        return entry

    def route(self, name: str, version: str | None, request: InferenceRequest) -> ModelVersionEntry:
        """The entry that serves an inference request (the router picks when no version)."""
        model = self._models.get(name)
        if model is None:
            raise ModelNotFound(f"Model not found: {name}")
        if version is None:
            return self._router.route(model, request)
        entry = model.versions.get(version)
        if entry is None:
            raise version_not_found(name, version)
        return entry

    def check_free(self, name: str, version: str) -> None:
        """Raise ``Conflict`` when ``name``/``version`` is already registered."""
        model = self._models.get(name)
        if model is not None and version in model.versions:
            raise Conflict(f"Model version {version} is already registered for model {name}")

    def add(self, entry: ModelVersionEntry) -> bool:
        """Register ``entry``; returns True when it became the default (first version)."""
        self.check_free(entry.name, entry.version)
        model = self._models.setdefault(entry.name, ModelVersions(entry.name))
        model.versions[entry.version] = entry
        if not model.default_version:
            model.default_version = entry.version
            return True
        return False

    def check_removable(self, entry: ModelVersionEntry) -> None:
        """Raise ``ForbiddenOperation`` for the default version while others exist."""
        model = self.model(entry.name)
        if entry.version == model.default_version and len(model.versions) > 1:
            raise ForbiddenOperation(f"Cannot remove default version for model {entry.name}")

    def remove(self, entry: ModelVersionEntry, *, force: bool = False) -> None:
        """Forget ``entry``. Without ``force`` the default version cannot go while others
        exist; with it (a registration that failed) the oldest other version becomes default."""
        model = self._models.get(entry.name)
        if model is None or model.versions.get(entry.version) is not entry:
            return
        if not force:
            self.check_removable(entry)
        del model.versions[entry.version]
        if not model.versions:
            del self._models[entry.name]
        elif model.default_version == entry.version:
            model.default_version = next(iter(model.versions))

    def set_default(self, name: str, version: str) -> None:
        """Make ``version`` the default of ``name``."""
        model = self.model(name)
        if version not in model.versions:
            raise ModelVersionNotFound(f"Model version {version} does not exist for model {name}")
        model.default_version = version

    def defaults(self) -> list[ModelVersionEntry]:
        """The default version of every model, sorted by model name."""
        return [self._models[name].default for name in sorted(self._models)]

    def entries(self) -> Iterator[ModelVersionEntry]:
        """Every registered version (snapshot: safe against changes while iterating)."""
        return iter([e for m in list(self._models.values()) for e in m.versions.values()])
