"""A model's traffic policy: the JSON body at the edge (pydantic), frozen values inside.

``parse_policy`` is the only way in: it checks the body's shape and then its meaning against the
model's registered versions, and raises ``BadRequest`` whose message starts with the dotted
name of the offending field (``weights.2.0: ...``, ``canary.baseline: ...``). Nothing is
applied when it raises, so the policy in force stays. ``policy_json`` writes the same body
back (GET, describe, snapshots), so a policy read out can be PUT again unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from torchwick.server.errors import BadRequest

Compare = Literal["exact", "allclose", "top1"]

DEFAULT_TOLERANCE = 1e-5
DEFAULT_WINDOW_S = 60.0
DEFAULT_MAX_ERROR_RATE_DELTA = 0.05
DEFAULT_MAX_P99_RATIO = 1.5
DEFAULT_MIN_REQUESTS = 20


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class _StickyBody(_Strict):
    header: str | None = Field(default=None, min_length=1)
    cookie: str | None = Field(default=None, min_length=1)


class _ShadowBody(_Strict):
    version: str
    fraction: float = Field(default=1.0, ge=0.0, le=1.0)
    compare: Compare = "exact"
    tolerance: float = Field(default=DEFAULT_TOLERANCE, ge=0.0)


class _CanaryBody(_Strict):
    candidate: str
    baseline: str | None = None
    steps: list[float] = Field(min_length=1)
    window_s: float = Field(default=DEFAULT_WINDOW_S, gt=0.0)
    max_error_rate_delta: float = Field(default=DEFAULT_MAX_ERROR_RATE_DELTA, ge=0.0)
    max_p99_ratio: float = Field(default=DEFAULT_MAX_P99_RATIO, gt=0.0)
    min_requests: int = Field(default=DEFAULT_MIN_REQUESTS, ge=1)


class _PolicyBody(_Strict):
    weights: dict[str, float] | None = None
    sticky: _StickyBody | None = None
    shadow: _ShadowBody | None = None
    canary: _CanaryBody | None = None


@dataclass(frozen=True, slots=True)
class Sticky:
    """Where a request's routing key comes from: a header or a cookie (exactly one)."""

    header: str | None
    cookie: str | None


@dataclass(frozen=True, slots=True)
class ShadowSpec:
    """Mirror ``fraction`` of the policy-routed requests to ``version`` and compare."""

    version: str
    fraction: float
    compare: Compare
    tolerance: float


@dataclass(frozen=True, slots=True)
class CanarySpec:
    """Ramp ``candidate`` through ``steps`` (percent) against ``baseline``.

    Each step lasts at least ``window_s`` and until the candidate saw ``min_requests``; it
    passes when the candidate's error rate exceeds the baseline's by no more than
    ``max_error_rate_delta`` and its p99 latency is at most ``max_p99_ratio`` times the
    baseline's.
    """

    candidate: str
    baseline: str
    steps: tuple[float, ...]
    window_s: float
    max_error_rate_delta: float
    max_p99_ratio: float
    min_requests: int


@dataclass(frozen=True, slots=True)
class TrafficPolicy:
    """One model's routing for requests that name no version (see ``docs/traffic.md``).

    ``weights`` is empty when a ``canary`` drives the split instead.
    """

    weights: tuple[tuple[str, float], ...]
    sticky: Sticky | None
    shadow: ShadowSpec | None
    canary: CanarySpec | None

    def versions(self) -> frozenset[str]:
        """Every version the policy sends traffic to (weight > 0, canary arms, shadow)."""
        names = {v for v, w in self.weights if w > 0}
        if self.canary is not None:
            names |= {self.canary.candidate, self.canary.baseline}
        if self.shadow is not None:
            names.add(self.shadow.version)
        return frozenset(names)


def _bad(field: str, problem: str) -> BadRequest:
    return BadRequest(f"{field}: {problem}")


def _shape(raw: object) -> _PolicyBody:
    if not isinstance(raw, Mapping):
        raise BadRequest("traffic policy: expected a JSON object")
    try:
        return _PolicyBody.model_validate(dict(raw))
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "traffic policy"
        raise _bad(where, first["msg"]) from None


def _known(field: str, version: str, versions: Collection[str]) -> None:
    if version not in versions:
        raise _bad(field, f"version {version!r} is not registered for this model")


def parse_policy(raw: object, versions: Collection[str], default: str) -> TrafficPolicy:
    """Validate ``raw`` (the JSON body) against the model's registered ``versions``.

    ``default`` is the model's default version: a canary without ``baseline`` is refused
    (the field is required), a shadow may not be a version that serves primary traffic.
    Raises ``BadRequest`` naming the field; see the module docs.
    """
    body = _shape(raw)
    weights: list[tuple[str, float]] = []
    for version, weight in (body.weights or {}).items():
        if not math.isfinite(weight) or weight < 0:
            raise _bad(f"weights.{version}", "must be a non-negative number")
        _known(f"weights.{version}", version, versions)
        weights.append((version, float(weight)))
    canary = None
    if body.canary is not None:
        canary = _canary(body.canary, versions)
        if weights:
            raise _bad("weights", "cannot be combined with canary (the canary sets the split)")
    elif body.weights is not None and not any(w > 0 for _, w in weights):
        raise _bad("weights", "at least one version needs a positive weight")
    sticky = None
    if body.sticky is not None:
        if (body.sticky.header is None) == (body.sticky.cookie is None):
            raise _bad("sticky", 'give exactly one of "header" or "cookie"')
        sticky = Sticky(body.sticky.header, body.sticky.cookie)
    primaries = {v for v, w in weights if w > 0} or {default}
    if canary is not None:
        primaries = {canary.candidate, canary.baseline}
    shadow = None
    if body.shadow is not None:
        s = body.shadow
        _known("shadow.version", s.version, versions)
        if s.version in primaries:
            raise _bad("shadow.version", f"{s.version!r} serves primary traffic in this policy")
        shadow = ShadowSpec(s.version, s.fraction, s.compare, s.tolerance)
    return TrafficPolicy(tuple(weights), sticky, shadow, canary)


def _canary(c: _CanaryBody, versions: Collection[str]) -> CanarySpec:
    if c.baseline is None:
        raise _bad("canary.baseline", "required (the version the candidate is measured against)")
    _known("canary.candidate", c.candidate, versions)
    _known("canary.baseline", c.baseline, versions)
    if c.candidate == c.baseline:
        raise _bad("canary.candidate", "must differ from canary.baseline")
    previous = 0.0
    for index, step in enumerate(c.steps):
        if not (math.isfinite(step) and previous < step <= 100.0):
            raise _bad(f"canary.steps.{index}", "steps must increase, each in (0, 100]")
        previous = step
    return CanarySpec(
        c.candidate,
        c.baseline,
        tuple(float(s) for s in c.steps),
        c.window_s,
        c.max_error_rate_delta,
        c.max_p99_ratio,
        c.min_requests,
    )


def policy_json(policy: TrafficPolicy) -> dict[str, Any]:
    """The policy as its JSON body (what ``parse_policy`` accepts)."""
    out: dict[str, Any] = {}
    if policy.weights:
        out["weights"] = dict(policy.weights)
    if policy.sticky is not None:
        key = "header" if policy.sticky.header is not None else "cookie"
        out["sticky"] = {key: policy.sticky.header or policy.sticky.cookie}
    if policy.shadow is not None:
        s = policy.shadow
        out["shadow"] = {
            "version": s.version,
            "fraction": s.fraction,
            "compare": s.compare,
            "tolerance": s.tolerance,
        }
    if policy.canary is not None:
        c = policy.canary
        out["canary"] = {
            "candidate": c.candidate,
            "baseline": c.baseline,
            "steps": list(c.steps),
            "window_s": c.window_s,
            "max_error_rate_delta": c.max_error_rate_delta,
            "max_p99_ratio": c.max_p99_ratio,
            "min_requests": c.min_requests,
        }
    return out
