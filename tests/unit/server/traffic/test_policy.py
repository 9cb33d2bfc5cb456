"""Policy validation: each bad input names its field; a valid body round-trips."""

from __future__ import annotations

from typing import Any

import pytest

from torchwick.server.errors import BadRequest
from torchwick.server.traffic import parse_policy, policy_json

VERSIONS = ("1.0", "2.0", "3.0")


def parse(body: Any) -> Any:
    return parse_policy(body, VERSIONS, "1.0")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"weights": {"1.0": -1}}, "weights.1.0"),
        ({"weights": {"1.0": "ten"}}, "weights.1.0"),
        ({"weights": {"1.0": True}}, "weights.1.0"),
        ({"weights": {"1.0": float("nan")}}, "weights.1.0"),
        ({"weights": {"9.9": 1}}, "weights.9.9"),
        ({"weights": {"1.0": 0}}, "weights"),
        ({"weights": [1, 2]}, "weights"),
        ({"sticky": {}}, "sticky"),
        ({"sticky": {"header": "a", "cookie": "b"}}, "sticky"),
        ({"shadow": {"version": "1.0"}}, "shadow.version"),
        ({"weights": {"1.0": 1, "2.0": 1}, "shadow": {"version": "2.0"}}, "shadow.version"),
        ({"shadow": {"version": "2.0", "fraction": 1.5}}, "shadow.fraction"),
        ({"shadow": {"version": "2.0", "fraction": -0.1}}, "shadow.fraction"),
        ({"shadow": {"version": "2.0", "compare": "close"}}, "shadow.compare"),
        ({"canary": {"candidate": "2.0", "steps": [10]}}, "canary.baseline"),
        ({"canary": {"candidate": "2.0", "baseline": "2.0", "steps": [10]}}, "canary.candidate"),
        ({"canary": {"candidate": "9", "baseline": "1.0", "steps": [10]}}, "canary.candidate"),
        ({"canary": {"candidate": "2.0", "baseline": "1.0", "steps": [50, 10]}}, "canary.steps.1"),
        ({"canary": {"candidate": "2.0", "baseline": "1.0", "steps": [101]}}, "canary.steps.0"),
        ({"canary": {"candidate": "2.0", "baseline": "1.0", "steps": []}}, "canary.steps"),
        (
            {
                "weights": {"1.0": 1},
                "canary": {"candidate": "2.0", "baseline": "1.0", "steps": [1]},
            },
            "weights",
        ),
        ({"split": {}}, "split"),
        ([], "traffic policy"),
    ],
)
def test_bad_input_names_the_field(body: Any, field: str) -> None:
    with pytest.raises(BadRequest) as raised:
        parse(body)
    assert raised.value.message.startswith(f"{field}: "), raised.value.message


def test_a_valid_policy_round_trips_through_its_json() -> None:
    body = {
        "weights": {"1.0": 90, "2.0": 10},
        "sticky": {"cookie": "uid"},
        "shadow": {"version": "3.0", "fraction": 0.5, "compare": "allclose", "tolerance": 0.01},
    }
    policy = parse(body)
    assert policy.weights == (("1.0", 90.0), ("2.0", 10.0))
    assert policy.sticky is not None and policy.sticky.cookie == "uid"
    assert parse(policy_json(policy)) == policy
    assert policy.versions() == {"1.0", "2.0", "3.0"}
    canary = parse({"canary": {"candidate": "2.0", "baseline": "1.0", "steps": [1, 10, 100]}})
    assert canary.canary is not None and canary.canary.steps == (1.0, 10.0, 100.0)
    assert parse(policy_json(canary)) == canary


def test_a_shadow_only_policy_keeps_the_default_as_primary() -> None:
    policy = parse({"shadow": {"version": "2.0"}})
    assert policy.weights == () and policy.shadow is not None
    assert policy.shadow.fraction == 1.0 and policy.shadow.compare == "exact"
