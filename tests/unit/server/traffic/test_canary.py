"""The canary state machine, driven by an injected clock and counted outcomes."""

from __future__ import annotations

from torchwick.server.traffic import Canary, CanarySpec, CanaryState


def spec(**overrides: float) -> CanarySpec:
    values: dict[str, object] = {
        "candidate": "2.0",
        "baseline": "1.0",
        "steps": (10.0, 50.0, 100.0),
        "window_s": 10.0,
        "max_error_rate_delta": 0.1,
        "max_p99_ratio": 2.0,
        "min_requests": 5,
    }
    values.update(overrides)
    return CanarySpec(**values)  # type: ignore[arg-type]


def feed(
    canary: Canary, version: str, n: int, now: float, *, errors: int = 0, latency: float = 0.01
) -> list[str]:
    kinds = []
    for i in range(n):
        t = canary.record(version, i < errors, latency, now)
        if t is not None:
            kinds.append(t.kind)
    return kinds


def test_healthy_candidate_ramps_through_every_step_and_is_promoted() -> None:
    canary = Canary(spec(), now=0.0)
    assert canary.weights() == (("2.0", 10.0), ("1.0", 90.0))
    now = 0.0
    for expected in (50.0, 100.0):
        feed(canary, "1.0", 20, now)
        assert feed(canary, "2.0", 5, now) == []  # window not over yet
        now += 10.0
        transition = canary.tick(now)
        assert transition is not None and transition.kind == "advanced"
        assert canary.percent == expected
    # The 100% step: no baseline traffic, the last baseline window is the reference.
    assert canary.weights() == (("2.0", 100.0),)
    now += 10.0
    assert canary.tick(now) is None  # too few candidate requests: the window is extended
    assert feed(canary, "2.0", 5, now) == ["promoted"]
    assert canary.state is CanaryState.PROMOTED and canary.weights() == (("2.0", 100.0),)


def test_error_rate_breach_rolls_back_at_once() -> None:
    canary = Canary(spec(), now=0.0)
    feed(canary, "1.0", 20, 0.0)
    kinds = feed(canary, "2.0", 5, 1.0, errors=2)  # 40% vs 0%: over the 10% allowed
    assert kinds == ["rolled_back"]
    assert canary.state is CanaryState.ROLLED_BACK
    assert canary.weights() == (("1.0", 100.0),)
    assert "error rate 0.400" in canary.reason and "step 0 (10%)" in canary.reason
    assert feed(canary, "2.0", 5, 2.0) == []  # finished: nothing changes any more


def test_an_error_rate_within_the_delta_of_the_baselines_passes() -> None:
    canary = Canary(spec(), now=0.0)
    feed(canary, "1.0", 10, 0.0, errors=1)  # baseline 10%
    assert feed(canary, "2.0", 5, 0.0, errors=1) == []  # 20%: exactly 10 points more
    transition = canary.tick(10.0)
    assert transition is not None and transition.kind == "advanced"


def test_p99_breach_rolls_back_at_the_end_of_the_window() -> None:
    canary = Canary(spec(), now=0.0)
    feed(canary, "1.0", 10, 0.0, latency=0.010)
    assert feed(canary, "2.0", 5, 0.0, latency=0.050) == []  # latency waits for the window
    transition = canary.tick(10.0)
    assert transition is not None and transition.kind == "rolled_back"
    assert "p99 latency 50.0 ms" in transition.reason


def test_a_window_is_not_closed_early() -> None:
    canary = Canary(spec(), now=100.0)
    feed(canary, "2.0", 50, 100.0)
    assert canary.tick(109.999) is None and canary.percent == 10.0
    assert canary.tick(110.0) is not None and canary.percent == 50.0
