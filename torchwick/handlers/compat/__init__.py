"""Make ``import ts.…`` resolve to torchwick inside a worker, so TorchServe handlers run as is.

``install_ts_compat()`` puts a meta-path finder at the *front* of ``sys.meta_path``. It
answers every ``ts`` and ``ts.*`` import:

* ``ts``, ``ts.torch_handler``, ``ts.utils``, ... are empty namespace-like packages with an
  empty ``__path__``, so nothing from a real TorchServe installation can be found beneath them;
* the modules in ``ALIASES`` are *the same module objects* as their torchwick counterparts
  (``ts.context is torchwick.handlers.context``), so ``isinstance`` checks agree;
* any other ``ts.*`` name fails with ``ModuleNotFoundError``.

No ``ts`` package is ever installed in site-packages. If a real ``ts`` is importable, ours
still wins because the finder runs before the path finders, and any ``ts`` modules already
imported are dropped from ``sys.modules`` on installation. ``ModelService.load`` installs it;
it is idempotent.

Outside a worker (a handler's own unit tests) nothing happens until the user opts in:
``torchwick.handlers.compat.install()``, or the pytest plugin
``torchwick.handlers.compat.pytest_plugin`` (``pytest_plugins = [...]`` in a conftest, or
``-p torchwick.handlers.compat.pytest_plugin``), which calls it. It is never registered as
an automatic plugin, so a project that has the real TorchServe installed keeps it.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
from collections.abc import Sequence
from types import ModuleType

from ..context import SERVER_VERSION

PACKAGES = frozenset(
    {
        "ts",
        "ts.torch_handler",
        "ts.utils",
        "ts.metrics",
        "ts.handler_utils",
        "ts.protocol",
        "ts.torch_handler.unit_tests",
        "ts.torch_handler.unit_tests.test_utils",
        "ts.torch_handler.unit_tests.models",
    }
)
_C = "torchwick.handlers.compat"

ALIASES: dict[str, str] = {
    "ts.context": "torchwick.handlers.context",
    "ts.torch_handler.base_handler": "torchwick.handlers.base_handler",
    "ts.torch_handler.vision_handler": "torchwick.handlers.builtin.vision",
    "ts.torch_handler.image_classifier": "torchwick.handlers.builtin.image_classifier",
    "ts.torch_handler.image_segmenter": "torchwick.handlers.builtin.image_segmenter",
    "ts.torch_handler.object_detector": "torchwick.handlers.builtin.object_detector",
    "ts.torch_handler.text_handler": "torchwick.handlers.builtin.text",
    "ts.torch_handler.text_classifier": "torchwick.handlers.builtin.text_classifier",
    "ts.utils.util": "torchwick.handlers.compat.ts_util",
    "ts.handler_utils.utils": "torchwick.handlers.compat.handler_utils",
    "ts.handler_utils.timer": "torchwick.handlers.compat.timer",
    "ts.protocol.otf_message_handler": "torchwick.handlers.compat.otf_message_handler",
    "ts.metrics.dimension": "torchwick.handlers.metrics",
    "ts.metrics.metric_type_enum": "torchwick.handlers.metrics",
    "ts.metrics.caching_metric": "torchwick.handlers.metrics",
    "ts.metrics.metric_cache_errors": f"{_C}.ts_metrics",
    "ts.metrics.metric": f"{_C}.ts_metrics",
    "ts.metrics.metric_abstract": f"{_C}.ts_metrics",
    "ts.metrics.metric_cache_abstract": f"{_C}.ts_metrics",
    "ts.metrics.metric_cache_yaml_impl": f"{_C}.ts_metrics",
    "ts.metrics.metrics_store": f"{_C}.ts_metrics",
    "ts.metrics.unit": f"{_C}.ts_metrics",
    "ts.version": f"{_C}.small_modules",
    "ts.service": f"{_C}.small_modules",
    "ts.handler_utils.text_utils": f"{_C}.small_modules",
    "ts.handler_utils.micro_batching": f"{_C}.micro_batching",
    "ts.torch_handler.densenet_handler": f"{_C}.densenet_handler",
    "ts.torch_handler.request_envelope": "torchwick.handlers.envelopes",
    "ts.torch_handler.request_envelope.base": "torchwick.handlers.envelopes.base",
    "ts.torch_handler.request_envelope.body": "torchwick.handlers.envelopes.body",
    "ts.torch_handler.request_envelope.json": "torchwick.handlers.envelopes.json",
    "ts.torch_handler.request_envelope.kserve": "torchwick.handlers.envelopes.kserve",
    "ts.torch_handler.request_envelope.kservev2": "torchwick.handlers.envelopes.kservev2",
    "ts.torch_handler.unit_tests.test_utils.mock_context": f"{_C}.unit_tests.mock_context",
    "ts.torch_handler.unit_tests.test_utils.model_dir": f"{_C}.unit_tests.model_dir",
    "ts.torch_handler.unit_tests.models.base_model": f"{_C}.unit_tests.base_model",
}


class _PackageLoader(importlib.abc.Loader):
    """Creates the empty ``ts`` package nodes."""

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return None  # the default module, with __path__ from the spec

    def exec_module(self, module: ModuleType) -> None:
        module.__doc__ = "TorchServe compatibility package provided by torchwick."
        if module.__name__ == "ts":
            # Handlers that branch on the TorchServe version see the release we reproduce.
            module.__version__ = SERVER_VERSION  # type: ignore[attr-defined]


class _AliasLoader(importlib.abc.Loader):
    """Returns an already-importable torchwick module under a ``ts.*`` name."""

    def __init__(self, target: str) -> None:
        self.target = target

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return importlib.import_module(self.target)

    def exec_module(self, module: ModuleType) -> None:
        # The target module was executed by its own import; running it again would
        # re-create its classes and break isinstance checks.
        return None


class TsCompatFinder(importlib.abc.MetaPathFinder):
    """Answers ``ts`` imports with torchwick modules (see the module docstring)."""

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname in PACKAGES:
            return importlib.machinery.ModuleSpec(fullname, _PackageLoader(), is_package=True)
        alias = ALIASES.get(fullname)
        if alias is not None:
            return importlib.machinery.ModuleSpec(fullname, _AliasLoader(alias))
        return None


def _is_ours(module: ModuleType) -> bool:
    spec = getattr(module, "__spec__", None)
    loader = getattr(spec, "loader", None)
    return isinstance(loader, (_PackageLoader, _AliasLoader)) or (
        getattr(module, "__name__", "").startswith("torchwick.")
    )


def install() -> None:
    """Make ``import ts.*`` resolve to torchwick in this process (explicit opt-in outside a
    worker; see the module docstring). Idempotent."""
    install_ts_compat()


def install_ts_compat() -> None:
    """Install the ``ts`` finder first on ``sys.meta_path`` (idempotent)."""
    if not sys.meta_path or not isinstance(sys.meta_path[0], TsCompatFinder):
        # Move (or add) the finder to the front: a finder added later must not outrank it.
        sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, TsCompatFinder)]
        sys.meta_path.insert(0, TsCompatFinder())
    for name in [n for n in sys.modules if n == "ts" or n.startswith("ts.")]:
        module = sys.modules[name]
        if not _is_ours(module):
            del sys.modules[name]
