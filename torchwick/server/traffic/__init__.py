"""Traffic policies over a model's versions: weighted split, sticky routing, shadow traffic,
canary with automatic promote or rollback (see ``docs/traffic.md``)."""

from .canary import Canary, CanaryState, Transition
from .engine import LivePolicy, Routed, TrafficEngine, VariantCounters
from .hashing import FractionGate, SmoothRoundRobin, rendezvous
from .metrics import TrafficCollector
from .policy import CanarySpec, ShadowSpec, Sticky, TrafficPolicy, parse_policy, policy_json
from .shadow import ShadowCall, ShadowCounters, agree

__all__ = [
    "Canary",
    "CanarySpec",
    "CanaryState",
    "FractionGate",
    "LivePolicy",
    "Routed",
    "ShadowCall",
    "ShadowCounters",
    "ShadowSpec",
    "SmoothRoundRobin",
    "Sticky",
    "TrafficCollector",
    "TrafficEngine",
    "TrafficPolicy",
    "Transition",
    "VariantCounters",
    "agree",
    "parse_policy",
    "policy_json",
    "rendezvous",
]
