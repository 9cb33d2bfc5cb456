"""Shadow traffic: mirror a request to another version, compare, never answer with it.

The caller's request is queued on its primary version first; the mirror is queued afterwards
on the shadow version's own queue (the ``ShadowCall``'s task first runs when the caller
suspends on its primary, which is after that request was queued; see ``TrafficEngine.mirror``),
and the caller never waits for it. A mirror is dropped (counted in ``dropped``) instead of
queued when the shadow version's queue is half full or this pair already has as many
mirrors outstanding as that queue holds: the other half stays for callers who name the
shadow version themselves.

Comparison is on the response bodies: ``exact`` (same JSON value, or same bytes when a body is
not JSON), ``allclose`` (same JSON structure, numbers within ``tolerance`` absolute plus
``tolerance`` relative) and ``top1`` (the same best class: the key with the largest number in
an object, or the index of the largest number in a list; a one-element list is unwrapped).
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Callable, Coroutine
from typing import Any

from .policy import Compare

_MISSING = object()


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return _MISSING


def _close(a: Any, b: Any, tolerance: float) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return math.isclose(a, b, rel_tol=tolerance, abs_tol=tolerance)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_close(x, y, tolerance) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k], tolerance) for k in a)
    return bool(a == b)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def top1(value: Any) -> Any:
    """The best class of a classification answer (see the module docs), or ``_MISSING``."""
    while isinstance(value, list) and len(value) == 1 and not _number(value[0]):
        value = value[0]
    if isinstance(value, dict) and value and all(_number(v) for v in value.values()):
        return max(value, key=lambda k: value[k])
    if isinstance(value, list) and value and all(_number(v) for v in value):
        return max(range(len(value)), key=lambda i: value[i])
    return _MISSING


def agree(primary: bytes, shadow: bytes, compare: Compare, tolerance: float) -> bool:
    """Whether the two answers agree under ``compare`` (see the module docs)."""
    a, b = _json(primary), _json(shadow)
    if a is _MISSING or b is _MISSING:
        return primary == shadow
    if compare == "exact":
        return bool(a == b)
    if compare == "allclose":
        return _close(a, b, tolerance)
    best_a, best_b = top1(a), top1(b)
    if best_a is _MISSING or best_b is _MISSING:
        return bool(a == b)
    return bool(best_a == best_b)


class ShadowCounters:
    """Counters of one (primary, shadow) version pair. Mutated on the event loop only."""

    __slots__ = (
        "agree",
        "disagree",
        "dropped",
        "latency_diff_s",
        "mirrored",
        "outstanding",
        "primary_errors",
        "shadow_errors",
    )

    def __init__(self) -> None:
        self.mirrored = 0
        self.dropped = 0
        self.agree = 0
        self.disagree = 0
        self.shadow_errors = 0
        self.primary_errors = 0
        #: Sum of (shadow latency - primary latency) over compared pairs.
        self.latency_diff_s = 0.0
        self.outstanding = 0

    def as_json(self) -> dict[str, Any]:
        """For describe."""
        compared = self.agree + self.disagree
        return {
            "mirrored": self.mirrored,
            "dropped": self.dropped,
            "agree": self.agree,
            "disagree": self.disagree,
            "shadow_errors": self.shadow_errors,
            "primary_errors": self.primary_errors,
            "mean_latency_diff_ms": (
                round(1000 * self.latency_diff_s / compared, 3) if compared else None
            ),
        }


ShadowRun = Callable[[], Coroutine[Any, Any, bytes | None]]


class ShadowCall:
    """One mirrored request: runs the shadow, waits for the primary's outcome, compares."""

    def __init__(
        self,
        run: ShadowRun,
        counters: ShadowCounters,
        *,
        compare: Compare,
        tolerance: float,
        clock: Callable[[], float],
        tasks: set[asyncio.Task[None]],
    ) -> None:
        self._run = run
        self._counters = counters
        self._compare = compare
        self._tolerance = tolerance
        self._clock = clock
        loop = asyncio.get_running_loop()
        self._primary: asyncio.Future[tuple[bytes | None, float]] = loop.create_future()
        counters.mirrored += 1
        counters.outstanding += 1
        task = loop.create_task(self._mirror())
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    def primary_done(self, body: bytes | None, latency_s: float) -> None:
        """The primary's answer (``None``: it failed) and latency."""
        if not self._primary.done():
            self._primary.set_result((body, latency_s))

    async def _mirror(self) -> None:
        counters = self._counters
        started = self._clock()
        try:
            try:
                body = await self._run()
            except Exception:  # any failure of the mirror is the shadow's error, never the caller's
                body = None
            latency = self._clock() - started
            primary, primary_latency = await self._primary
            if body is None:
                counters.shadow_errors += 1
            elif primary is None:
                counters.primary_errors += 1
            else:
                counters.latency_diff_s += latency - primary_latency
                if agree(primary, body, self._compare, self._tolerance):
                    counters.agree += 1
                else:
                    counters.disagree += 1
        finally:
            counters.outstanding -= 1
