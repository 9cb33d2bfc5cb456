"""The fast pretty-printer must give byte-identical text to json.dumps(indent=2)."""

from __future__ import annotations

import json
import math
import random
from typing import Any

import pytest

from torchwick.handlers.pretty_json import dumps_indent2


def _random_value(rng: random.Random, depth: int = 0) -> Any:
    roll = rng.random()
    if depth < 3 and roll < 0.3:
        return [_random_value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    if depth < 2 and roll < 0.45:
        keys = ["a", "tabby", 'quo"te', "ünï", "n\nl", "0"]
        return {rng.choice(keys): _random_value(rng, depth + 1) for _ in range(rng.randint(0, 3))}
    choices: list[Any] = [
        rng.uniform(-1e6, 1e6),
        rng.randint(-(10**12), 10**12),
        0.1,
        1e-300,
        math.inf,
        -math.inf,
        True,
        None,
        "text",
    ]
    return rng.choice(choices)


def test_matches_json_dumps_on_random_values() -> None:
    rng = random.Random(7)
    for _ in range(3000):
        value = _random_value(rng)
        assert dumps_indent2(value) == json.dumps(value, indent=2)


@pytest.mark.parametrize(
    "value",
    [
        [0.1, 2.5, -3.0],
        [[1, 2], [3.5, 4]],
        [[1.0], 2],
        {"tabby": 0.27, "lynx": 0.25},
        {"x": [1, 2]},
        [],
        {},
        [[]],
        math.nan,
        [float("nan")],
    ],
)
def test_matches_json_dumps_on_model_shapes(value: Any) -> None:
    assert dumps_indent2(value) == json.dumps(value, indent=2)


def test_unencodable_values_raise_like_json_dumps() -> None:
    with pytest.raises(TypeError):
        dumps_indent2([object()])
    with pytest.raises(TypeError):
        dumps_indent2({"a": object()})
