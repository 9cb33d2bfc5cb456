"""The traffic engine: per-model policies, routing, mirrors, outcomes, canary transitions.

Owned by the data plane, which calls ``route`` for every inference request, ``mirror`` once the
primary is queued, ``record`` with each outcome and ``tick`` from its monitor. Management
calls (``set_policy``/``policy_status``/``clear_policy``) come from ``api/rest_traffic.py``.

Arms (the ``arm`` label): ``explicit`` (the request named its version), ``default`` (no policy),
``split`` (the policy's weights, no sticky key), ``sticky`` (a sticky key chose), ``candidate``
and ``baseline`` (a canary chose), ``shadow`` (a mirror). A request whose sticky header or
cookie is missing gets the weighted choice (arm ``split``).

Policies from configuration (``models=`` JSON, the archive's ``model-config.yaml``) are held
pending until every version they name is registered, then validated and applied, unless a
policy is already in force. One that is invalid then is logged and dropped.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http.cookies import CookieError, SimpleCookie
from typing import Any

from torchwick.handlers.messages import PredictRequest
from torchwick.server.contracts import InferenceRequest
from torchwick.server.errors import ForbiddenOperation
from torchwick.server.registry import ModelRegistry, ModelVersionEntry, ModelVersions

from .canary import Canary, CanaryState, Transition
from .hashing import FractionGate, SmoothRoundRobin, rendezvous
from .policy import TrafficPolicy, parse_policy, policy_json
from .shadow import ShadowCall, ShadowCounters

logger = logging.getLogger("torchwick.server.traffic")

EVENTS_KEPT = 20


class VariantCounters:
    """Requests, errors (status >= 500) and latency of one (version, arm)."""

    __slots__ = ("errors", "latency_s", "requests")

    def __init__(self) -> None:
        self.requests = 0
        self.errors = 0
        self.latency_s = 0.0


@dataclass(frozen=True, slots=True)
class Routed:
    """Where one request goes: the entry, the arm, and the policy state that chose it."""

    entry: ModelVersionEntry
    arm: str
    live: LivePolicy | None = None


class LivePolicy:
    """A policy in force and its running state (round robin, shadow gate, canary)."""

    def __init__(self, policy: TrafficPolicy, origin: str, now: float) -> None:
        self.policy = policy
        self.origin = origin
        self.canary = Canary(policy.canary, now) if policy.canary is not None else None
        self.gate = FractionGate(policy.shadow.fraction) if policy.shadow is not None else None
        self.shadow: dict[str, ShadowCounters] = {}
        self._split: tuple[tuple[str, float], ...] = ()
        self._rr: SmoothRoundRobin | None = None

    def split(self, default: str) -> tuple[tuple[str, float], ...]:
        """The weights in force now (the canary's, the policy's, or the default alone)."""
        if self.canary is not None:
            return self.canary.weights()
        return self.policy.weights or ((default, 1.0),)

    def pick(self, weights: tuple[tuple[str, float], ...]) -> str:
        if weights != self._split or self._rr is None:
            self._split, self._rr = weights, SmoothRoundRobin(weights)
        return self._rr.pick()


def _named_versions(raw: object) -> set[str]:
    """The versions a raw (unvalidated) body names, to know whether it can be applied yet."""
    if not isinstance(raw, Mapping):
        return set()
    names: set[str] = set()
    weights = raw.get("weights")
    if isinstance(weights, Mapping):
        names.update(str(v) for v in weights)
    for section, keys in (("shadow", ("version",)), ("canary", ("candidate", "baseline"))):
        body = raw.get(section)
        if isinstance(body, Mapping):
            names.update(str(body[k]) for k in keys if isinstance(body.get(k), str))
    return names


def _sticky_key(policy: TrafficPolicy, request: InferenceRequest) -> str | None:
    sticky = policy.sticky
    if sticky is None:
        return None
    if sticky.header is not None:
        return request.header(sticky.header.lower())
    raw = request.header("cookie")
    if not raw or sticky.cookie is None:
        return None
    try:
        jar = SimpleCookie(raw)
    except CookieError:
        return None
    morsel = jar.get(sticky.cookie)
    return morsel.value if morsel is not None else None


class TrafficEngine:
    """See the module docs. Only the event loop calls it."""

    def __init__(self, registry: ModelRegistry, clock: Callable[[], float]) -> None:
        self._registry = registry
        self._clock = clock
        self._live: dict[str, LivePolicy] = {}
        self._pending: dict[str, tuple[Any, str]] = {}
        self._variants: dict[str, dict[tuple[str, str], VariantCounters]] = {}
        self._events: dict[str, deque[dict[str, Any]]] = {}
        self.rollbacks: dict[tuple[str, str], int] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        #: Called after the policies in force change (the data plane's snapshot hook).
        self.on_change: Callable[[], object] | None = None

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()

    # -- hot path --------------------------------------------------------------------------

    def route(self, model: str, version: str | None, request: InferenceRequest) -> Routed:
        """The version that serves ``request``; raises the registry's 404s."""
        if version is not None:
            return Routed(self._registry.route(model, version, request), "explicit")
        live = self._live.get(model)
        if live is None:
            return Routed(self._registry.route(model, None, request), "default")
        versions = self._registry.model(model)
        weights = live.split(versions.default_version)
        key = _sticky_key(live.policy, request)
        chosen = rendezvous(key, weights) if key is not None else live.pick(weights)
        entry = versions.versions.get(chosen) or versions.default
        if live.canary is not None and live.canary.state is CanaryState.RAMPING:
            arm = "candidate" if entry.version == live.canary.spec.candidate else "baseline"
        else:
            arm = "sticky" if key is not None else "split"
        return Routed(entry, arm, live)

    def mirror(self, routed: Routed, predict: PredictRequest) -> ShadowCall | None:
        """Mirror ``predict`` to the policy's shadow when chosen and there is room; ``None``
        when not mirrored. Call it just before awaiting the primary: the mirror's task first
        runs when the caller suspends, i.e. after the primary's request is queued."""
        live = routed.live
        if live is None or live.gate is None or live.policy.shadow is None:
            return None
        spec = live.policy.shadow
        if spec.version == routed.entry.version or not live.gate.next():
            return None
        model = self._registry.model(routed.entry.name)
        target = model.versions.get(spec.version)
        counters = live.shadow.setdefault(routed.entry.version, ShadowCounters())
        if target is None:
            counters.dropped += 1
            return None
        batcher = target.batcher
        room = max(1, batcher.capacity // 2)
        if batcher.pending >= room or counters.outstanding >= batcher.capacity:
            counters.dropped += 1
            return None
        mirrored = PredictRequest(
            f"{predict.request_id}-shadow", predict.headers, predict.parameters
        )

        async def run() -> bytes | None:
            response = await batcher.infer(mirrored)
            return response.body if response.status < 400 else None

        self._count(routed.entry.name, spec.version, "shadow", False, 0.0)
        return ShadowCall(
            run,
            counters,
            compare=spec.compare,
            tolerance=spec.tolerance,
            clock=self._clock,
            tasks=self._tasks,
        )

    def record(self, routed: Routed, error: bool, latency_s: float) -> None:
        """Count one primary outcome; drive the canary that routed it."""
        entry = routed.entry
        self._count(entry.name, entry.version, routed.arm, error, latency_s)
        live = routed.live
        if live is not None and live.canary is not None and live is self._live.get(entry.name):
            transition = live.canary.record(entry.version, error, latency_s, self._clock())
            if transition is not None:
                self._transition(entry.name, live, transition)

    def _count(self, model: str, version: str, arm: str, error: bool, latency: float) -> None:
        per_model = self._variants.setdefault(model, {})
        counters = per_model.get((version, arm))
        if counters is None:
            counters = per_model[(version, arm)] = VariantCounters()
        counters.requests += 1
        counters.errors += error
        counters.latency_s += latency

    def tick(self) -> None:
        """Let running canaries close windows whose time is up (from the monitor loop)."""
        now = self._clock()
        for model, live in list(self._live.items()):
            if live.canary is not None:
                transition = live.canary.tick(now)
                if transition is not None:
                    self._transition(model, live, transition)

    def _transition(self, model: str, live: LivePolicy, transition: Transition) -> None:
        spec = live.canary.spec if live.canary is not None else None
        if spec is None:
            return
        event = {"event": transition.kind, "step": transition.step, "reason": transition.reason}
        self._events.setdefault(model, deque(maxlen=EVENTS_KEPT)).append(event)
        if transition.kind == "rolled_back":
            key = (model, spec.candidate)
            self.rollbacks[key] = self.rollbacks.get(key, 0) + 1
            logger.warning(
                "canary of %s version %s rolled back to %s: %s",
                model,
                spec.candidate,
                spec.baseline,
                transition.reason,
            )
        elif transition.kind == "promoted":
            self._registry.set_default(model, spec.candidate)
            logger.info("canary of %s version %s promoted to default", model, spec.candidate)
        if transition.kind != "advanced":
            self._changed()
        else:
            logger.info(
                "canary of %s version %s advanced to %g%%",
                model,
                spec.candidate,
                transition.percent,
            )

    # -- management ------------------------------------------------------------------------

    def set_policy(self, model: str, raw: object, origin: str = "api") -> TrafficPolicy:
        """Validate ``raw`` against ``model``'s versions and put it in force (replacing the
        policy and its state). Raises the 404 for an unknown model, ``BadRequest`` naming the
        field (nothing changes then)."""
        versions: ModelVersions = self._registry.model(model)
        policy = parse_policy(raw, versions.versions.keys(), versions.default_version)
        self._live[model] = LivePolicy(policy, origin, self._clock())
        self._pending.pop(model, None)
        logger.info("traffic policy of %s set (%s): %s", model, origin, policy_json(policy))
        if origin == "api":  # a configured one comes with a registration, which reports itself
            self._changed()
        return policy

    def clear_policy(self, model: str) -> None:
        """Back to "default version only" (404 for an unknown model)."""
        self._registry.model(model)
        self._live.pop(model, None)
        self._pending.pop(model, None)
        self._changed()

    def policy_status(self, model: str) -> dict[str, Any]:
        """The policy in force with its live counters (404 for an unknown model)."""
        versions = self._registry.model(model)
        live = self._live.get(model)
        out: dict[str, Any] = {
            "model": model,
            "default_version": versions.default_version,
            "policy": policy_json(live.policy) if live is not None else None,
            "origin": live.origin if live is not None else None,
        }
        if live is not None:
            out["split"] = dict(live.split(versions.default_version))
            if live.policy.shadow is not None:
                out["shadow"] = {p: c.as_json() for p, c in sorted(live.shadow.items())}
            if live.canary is not None:
                out["canary"] = live.canary.counters()
        elif model in self._pending:
            out["pending"] = self._pending[model][0]
        out["variants"] = [
            {"version": v, "arm": a, "requests": c.requests, "errors": c.errors}
            for (v, a), c in sorted(self._variants.get(model, {}).items())
        ]
        out["events"] = list(self._events.get(model, ()))
        return out

    def configure(self, model: str, raw: object, origin: str) -> None:
        """Hold a policy from configuration until its versions are registered."""
        self._pending[model] = (raw, origin)

    def offer_archive_policy(self, entry: ModelVersionEntry) -> None:
        """A new version whose ``model-config.yaml`` has ``traffic:`` proposes that policy
        (only when the model has none in force or pending); then try pending policies."""
        raw = entry.spec.yaml_config.get("traffic")
        name = entry.name
        if raw is not None and name not in self._live and name not in self._pending:
            self.configure(name, raw, "model-config")
        self.apply_pending(name)

    def apply_pending(self, model: str | None = None) -> None:
        """Apply the pending policies (of ``model``, or all) whose versions all exist."""
        for name in [model] if model is not None else list(self._pending):
            held = self._pending.get(name)
            if held is None or name not in self._registry:
                continue
            raw, origin = held
            if name in self._live:
                self._pending.pop(name, None)
                continue
            if not _named_versions(raw) <= self._registry.model(name).versions.keys():
                continue
            self._pending.pop(name, None)
            try:
                self.set_policy(name, raw, origin)
            except Exception as error:  # a bad config policy must not stop registration
                logger.error("traffic policy of %s from %s not applied: %s", name, origin, error)

    def check_removable(self, model: str, version: str) -> None:
        """``ForbiddenOperation`` when the policy in force sends traffic to ``version``."""
        live = self._live.get(model)
        if live is not None and version in self._carrying(live, model):
            raise ForbiddenOperation(
                f"Version {version} of model {model} carries traffic in its traffic policy; "
                "change the policy first or remove it with force=true"
            )

    def _carrying(self, live: LivePolicy, model: str) -> set[str]:
        default = self._registry.model(model).default_version
        versions = {v for v, w in live.split(default) if w > 0}
        if live.policy.shadow is not None:
            versions.add(live.policy.shadow.version)
        if live.canary is not None and live.canary.state is CanaryState.RAMPING:
            versions |= {live.canary.spec.candidate, live.canary.spec.baseline}
        return versions

    def forget_version(self, model: str, version: str) -> None:
        """A version went away: a policy that named it is dropped (logged)."""
        live = self._live.get(model)
        if live is not None and (model not in self._registry or version in live.policy.versions()):
            del self._live[model]
            logger.warning("traffic policy of %s dropped: version %s removed", model, version)
        if model not in self._registry:
            self._variants.pop(model, None)
            self._events.pop(model, None)

    def snapshot(self, model: str) -> dict[str, Any] | None:
        """The policy to restore after a restart: a finished canary as its outcome's weights."""
        live = self._live.get(model)
        if live is None:
            held = self._pending.get(model)
            return dict(held[0]) if held is not None and isinstance(held[0], Mapping) else None
        body = policy_json(live.policy)
        canary = live.canary
        if canary is not None and canary.state is not CanaryState.RAMPING:
            del body["canary"]
            body["weights"] = dict(canary.weights())
        return body

    # -- export ----------------------------------------------------------------------------

    def variant_counters(self) -> list[tuple[str, str, str, VariantCounters]]:
        """(model, version, arm, counters) for every variant seen."""
        return [(m, v, a, c) for m, per in self._variants.items() for (v, a), c in per.items()]

    def live_policies(self) -> list[tuple[str, LivePolicy]]:
        """(model, live policy) for every policy in force."""
        return list(self._live.items())

    async def close(self) -> None:
        """Cancel the mirrors still running."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
