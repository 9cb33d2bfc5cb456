"""The traffic metrics, exported through prometheus-client at scrape time.

Registered on ``FrontendMetrics.registry`` next to TorchServe's metrics (names prefixed
``torchwick_traffic_`` so they never collide with TorchServe's):

- ``torchwick_traffic_requests_total`` / ``torchwick_traffic_errors_total`` /
  ``torchwick_traffic_latency_seconds_total`` (model_name, model_version, arm): every
  inference request by the version that served it and the arm that chose it (shadow mirrors
  count under arm ``shadow``; errors are answers with status >= 500; latency only for
  primaries);
- ``torchwick_traffic_shadow_total`` (model_name, primary_version, shadow_version, outcome:
  ``agree``/``disagree``/``shadow_error``/``primary_error``/``dropped``) and
  ``torchwick_traffic_shadow_latency_diff_seconds_total`` (shadow minus primary, summed over
  compared pairs);
- ``torchwick_traffic_canary_percent`` (model_name, candidate, baseline, state) gauge: the
  candidate's share now; ``torchwick_traffic_canary_rollbacks_total`` (model_name, candidate).
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from .engine import TrafficEngine

_OUTCOMES = (
    ("agree", "agree"),
    ("disagree", "disagree"),
    ("shadow_error", "shadow_errors"),
    ("primary_error", "primary_errors"),
    ("dropped", "dropped"),
)


def _metric(name: str, documentation: str, kind: str = "counter") -> Metric:
    return Metric(name, documentation, kind)


class TrafficCollector(Collector):
    """Reads the engine's counters at scrape time; costs nothing per request."""

    def __init__(self, engine: TrafficEngine) -> None:
        self._engine = engine

    def collect(self) -> Iterator[Metric]:
        """Yield the families in the module docs."""
        engine = self._engine
        variants = sorted(engine.variant_counters(), key=lambda row: row[:3])
        for name, attribute, doc in (
            ("torchwick_traffic_requests_total", "requests", "Requests by version and arm"),
            ("torchwick_traffic_errors_total", "errors", "Answers with status >= 500"),
            ("torchwick_traffic_latency_seconds_total", "latency_s", "Summed latency"),
        ):
            family = _metric(name, doc)
            for model, version, arm, counters in variants:
                labels = {"model_name": model, "model_version": version, "arm": arm}
                family.add_sample(name, labels, float(getattr(counters, attribute)))
            yield family
        shadow_name = "torchwick_traffic_shadow_total"
        shadow = _metric(shadow_name, "Shadow comparisons by outcome")
        diff_name = "torchwick_traffic_shadow_latency_diff_seconds_total"
        diff = _metric(diff_name, "Shadow minus primary latency, summed")
        canary_name = "torchwick_traffic_canary_percent"
        canary = _metric(canary_name, "Candidate share of a canary", "gauge")
        for model, live in sorted(engine.live_policies(), key=lambda row: row[0]):
            spec = live.policy.shadow
            for primary, pair_counters in sorted(live.shadow.items()):
                if spec is None:
                    continue
                pair = {"model_name": model, "primary_version": primary}
                pair["shadow_version"] = spec.version
                for outcome, attribute in _OUTCOMES:
                    value = float(getattr(pair_counters, attribute))
                    shadow.add_sample(shadow_name, {**pair, "outcome": outcome}, value)
                diff.add_sample(diff_name, pair, pair_counters.latency_diff_s)
            if live.canary is not None:
                c = live.canary
                labels = {
                    "model_name": model,
                    "candidate": c.spec.candidate,
                    "baseline": c.spec.baseline,
                    "state": c.state.value,
                }
                canary.add_sample(canary_name, labels, c.percent)
        yield shadow
        yield diff
        yield canary
        rollbacks_name = "torchwick_traffic_canary_rollbacks_total"
        rollbacks = _metric(rollbacks_name, "Canaries rolled back")
        for (model, candidate), count in sorted(engine.rollbacks.items()):
            labels = {"model_name": model, "candidate": candidate}
            rollbacks.add_sample(rollbacks_name, labels, float(count))
        yield rollbacks
