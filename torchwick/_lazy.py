"""Lazy package exports: a name is imported from its module the first time it is used.

Packages that the frontend imports before its first ``/ping`` (``archiver``, ``server.oip``,
``server.workers``) re-export names whose modules pull in heavy dependencies (numpy, yaml,
the archive writer). ``lazy_exports`` builds the package's module-level ``__getattr__``
(PEP 562), so ``from package import name`` still works and costs the import only then.

Failure mode: an unknown name raises ``AttributeError`` like any module attribute; an
import error of the named module propagates to the first user.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, MutableMapping
from typing import Any


def lazy_exports(
    package: str, exports: Mapping[str, str], namespace: MutableMapping[str, Any]
) -> Callable[[str], Any]:
    """``__getattr__`` for ``package``: ``exports`` maps a name to its (relative) module;
    a loaded name is stored in ``namespace`` (the package's ``globals()``)."""

    def lazy_getattr(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module, package), name)
        namespace[name] = value
        return value

    return lazy_getattr
