"""Finding a model's handler: built-in name, module, ``module:function`` or ``file.py[:func]``.

Resolution order for the module part of ``handler``:

1. ``<name>.py`` (or the given ``file.py`` path) inside ``model_dir``: the archive's own code.
   Paths must stay inside ``model_dir``.
2. A built-in handler name (``image_classifier``, ``base_handler``, ...).
3. Any importable module (``package.module``, ``ts.torch_handler.image_classifier``, ...).

TorchServe tries a plain import before its built-ins; torchwick prefers its built-ins over a
same-named module elsewhere on ``sys.path`` so that an unrelated installed package can never
replace a default handler.

The entry point is then a function (``module:function``, or a module-level ``handle``), which
is initialised by calling it with ``(None, context)``, or the module's one handler class (a
class defined in that module with a ``handle`` method; if several, the single most derived
one), which is instantiated without arguments and initialised with ``initialize(context)``.

Failure mode: ``HandlerLoadError`` naming the handler and what was missing.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from .context import Context
from .errors import HandlerLoadError

BUILTIN_HANDLERS: dict[str, str] = {
    "base_handler": "torchwick.handlers.base_handler",
    "image_classifier": "torchwick.handlers.builtin.image_classifier",
    "image_segmenter": "torchwick.handlers.builtin.image_segmenter",
    "object_detector": "torchwick.handlers.builtin.object_detector",
    "text_classifier": "torchwick.handlers.builtin.text_classifier",
}

# Module names this loader bound to files of a model directory; only these may be rebound
# to a different file (a second model in the same process), never an unrelated module.
_OWNED_NAMES: set[str] = set()

HandleFn = Callable[[Any, Context], Any]


@dataclass(frozen=True, slots=True)
class EntryPoint:
    """A resolved handler: ``handle(data, context)`` plus how to initialise it."""

    handle: HandleFn
    initialize: Callable[[Context], Any]
    instance: object | None
    description: str


def import_file(path: Path, module_name: str) -> ModuleType:
    """Import ``path`` as ``module_name`` (kept in ``sys.modules`` so pickles and
    ``inspect`` work); falls back to a private name if that would replace an unrelated module.

    Errors raised by the module's own code propagate unchanged.
    """
    existing = sys.modules.get(module_name)
    if existing is not None and module_name not in _OWNED_NAMES:
        existing_file = getattr(existing, "__file__", None)
        if existing_file is None or Path(existing_file).resolve() != path.resolve():
            module_name = f"_torchwick_model__{module_name}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    _OWNED_NAMES.add(module_name)
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(module_name, None)
        raise
    return module


def contained_file(model_dir: Path, relative: str) -> Path:
    """``model_dir / relative`` if it is a file inside ``model_dir``; else ``HandlerLoadError``."""
    root = model_dir.resolve()
    candidate = (root / relative).resolve()
    if not candidate.is_relative_to(root):
        raise HandlerLoadError(f"handler file {relative!r} is outside the model directory")
    if not candidate.is_file():
        raise HandlerLoadError(f"handler file {relative!r} not found in the model directory")
    return candidate


def split_handler(handler: str) -> tuple[str, str | None]:
    """``'mod:fn'`` -> ``('mod', 'fn')``; a colon only splits before a valid identifier."""
    module_part, sep, function = handler.rpartition(":")
    if sep and function.isidentifier() and module_part:
        return module_part, function
    return handler, None


def import_handler_module(module_part: str, model_dir: Path) -> ModuleType:
    """Import the module part of a handler string following the documented order."""
    if module_part.endswith(".py"):
        path = contained_file(model_dir, module_part)
        return import_file(path, path.stem)
    local = model_dir / f"{module_part}.py"
    if "." not in module_part and local.is_file():
        return import_file(local, module_part)
    target = BUILTIN_HANDLERS.get(module_part, module_part)
    try:
        return importlib.import_module(target)
    except ModuleNotFoundError as exc:
        # Only "this module does not exist" is a lookup miss; a missing import *inside* the
        # handler must surface as itself.
        if exc.name is not None and (target == exc.name or target.startswith(exc.name + ".")):
            raise HandlerLoadError(
                f"handler {module_part!r} not found: no {module_part}.py in the model "
                f"directory, no built-in handler and no importable module of that name"
            ) from exc
        raise


def _handler_classes(module: ModuleType) -> list[type]:
    found = [
        obj
        for _, obj in inspect.getmembers(module, inspect.isclass)
        if obj.__module__ == module.__name__ and callable(getattr(obj, "handle", None))
    ]
    # Prefer the most derived classes: a module may define a shared base and its subclass.
    return [c for c in found if not any(o is not c and issubclass(o, c) for o in found)]


def resolve_entry_point(handler: str, model_dir: Path) -> EntryPoint:
    """Import the handler and find its entry point (does not initialise it)."""
    if not handler or not handler.strip():
        raise HandlerLoadError("no handler given for this model")
    module_part, function = split_handler(handler.strip())
    module = import_handler_module(module_part, model_dir)
    name = function or "handle"
    fn = getattr(module, name, None)
    if fn is not None and not inspect.isclass(fn):
        if not callable(fn):
            raise HandlerLoadError(f"{module_part}:{name} is not callable")
        func: HandleFn = fn
        return EntryPoint(
            handle=func,
            initialize=lambda ctx: func(None, ctx),
            instance=None,
            description=f"{module.__name__}:{name}",
        )
    if function is not None:
        raise HandlerLoadError(f"handler module {module_part!r} has no function {function!r}")
    classes = _handler_classes(module)
    if len(classes) != 1:
        names = ", ".join(c.__name__ for c in classes) or "none"
        raise HandlerLoadError(
            f"handler module {module_part!r} must define a module-level handle(data, context) "
            f"or exactly one handler class with a handle method (found: {names})"
        )
    instance = classes[0]()
    init = getattr(instance, "initialize", None)
    return EntryPoint(
        handle=instance.handle,
        initialize=init if callable(init) else (lambda _ctx: None),
        instance=instance,
        description=f"{module.__name__}.{classes[0].__name__}",
    )
