"""``ts.handler_utils.timer.timed``: time a handler method into a custom metric.

When the model-config has ``handler: {profile: true}``, each call of a decorated method emits
a gauge ``ts_handler_<method>`` in milliseconds through ``context.metrics``. Without it the
decorator only calls the method. Failure mode: none added; the method's errors propagate.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any, TypeVar, cast

F = TypeVar("F", bound=Callable[..., Any])


def timed(func: F) -> F:
    """Decorate a handler method (its instance must have a ``context``)."""

    @functools.wraps(func)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        context = getattr(self, "context", None)
        config = getattr(context, "model_yaml_config", None) or {}
        handler_config = config.get("handler") if isinstance(config, dict) else None
        if not (isinstance(handler_config, dict) and handler_config.get("profile")):
            return func(self, *args, **kwargs)
        started = time.perf_counter()
        try:
            return func(self, *args, **kwargs)
        finally:
            elapsed = (time.perf_counter() - started) * 1000.0
            context.metrics.add_time(f"ts_handler_{func.__name__}", elapsed)  # type: ignore[union-attr]

    return cast(F, wrapper)
