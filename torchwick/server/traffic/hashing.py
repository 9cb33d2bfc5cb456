"""How a policy turns weights into a version: weighted rendezvous hashing for sticky keys,
smooth weighted round robin for everything else.

Sticky keys use weighted rendezvous (highest-random-weight) hashing: each (key, version) pair
gets a pseudo-random ``u`` in (0, 1) from BLAKE2b, its score is ``-weight / ln(u)``, and the
highest score wins. A key's choice depends only on the key and the weights, never on other
keys or on time; when one weight changes, only keys whose winner changes move, which is the
least movement any scheme can achieve for the new proportions (keys only move to a version
whose weight went up or away from one whose weight went down).

Requests without a key use smooth weighted round robin (nginx's scheme): deterministic, and
after ``n`` picks each version has had within one pick of ``n * weight / total``, so a split
is exact up to one request per version at every moment rather than only in expectation.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence

_SCALE = float(1 << 64)


def _unit(key: str, version: str) -> float:
    digest = hashlib.blake2b(f"{version}\x00{key}".encode(), digest_size=8).digest()
    # (n + 0.5) / 2**64 lies strictly inside (0, 1), so ln() is finite and negative.
    return (int.from_bytes(digest, "big") + 0.5) / _SCALE


def rendezvous(key: str, weights: Sequence[tuple[str, float]]) -> str:
    """The version ``key`` maps to under ``weights`` (positive weights only; ties: the
    earlier version). Raises ``ValueError`` when no weight is positive."""
    best: str | None = None
    best_score = -math.inf
    for version, weight in weights:
        if weight <= 0:
            continue
        score = -weight / math.log(_unit(key, version))
        if score > best_score:
            best, best_score = version, score
    if best is None:
        raise ValueError("no version has a positive weight")
    return best


class SmoothRoundRobin:
    """Deterministic weighted choice over a fixed set of weights (see the module docs).

    Not thread-safe: only the event loop picks.
    """

    __slots__ = ("_current", "_total", "_weights")

    def __init__(self, weights: Sequence[tuple[str, float]]) -> None:
        self._weights = [(v, w) for v, w in weights if w > 0]
        if not self._weights:
            raise ValueError("no version has a positive weight")
        self._total = sum(w for _, w in self._weights)
        self._current = [0.0] * len(self._weights)

    def pick(self) -> str:
        """The next version."""
        current = self._current
        best = 0
        for index, (_, weight) in enumerate(self._weights):
            current[index] += weight
            if current[index] > current[best]:
                best = index
        current[best] -= self._total
        return self._weights[best][0]


class FractionGate:
    """Says yes to exactly ``floor(n * fraction)`` of the first ``n`` calls (evenly spread):
    which requests a shadow mirrors, deterministic rather than sampled."""

    __slots__ = ("_fraction", "_seen")

    def __init__(self, fraction: float) -> None:
        self._fraction = fraction
        self._seen = 0

    def next(self) -> bool:
        """Whether this call is one of the chosen."""
        before = math.floor(self._seen * self._fraction)
        self._seen += 1
        return math.floor(self._seen * self._fraction) > before
