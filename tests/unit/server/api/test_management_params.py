"""Validation of registration parameters at the edge (the other routes declare theirs to
FastAPI; see test_routing.py)."""

from __future__ import annotations

import pytest

from torchwick.server.api.management_params import (
    RegisterParams,
    parse_json_object,
    parse_params,
)
from torchwick.server.errors import BadRequest


def test_register_defaults_and_conversions() -> None:
    params = parse_params(
        RegisterParams, {"url": "a.mar", "batch_size": "4", "synchronous": "FALSE"}
    )
    assert params.url == "a.mar" and params.batch_size == 4 and params.synchronous is False
    assert params.initial_workers is None and params.max_batch_delay is None
    assert parse_params(RegisterParams, {"url": "a.mar"}).synchronous is True


@pytest.mark.parametrize(
    ("model", "values", "name"),
    [
        (RegisterParams, {"url": "a.mar", "batch_size": "abc"}, "batch_size"),
        (RegisterParams, {"url": "a.mar", "synchronous": "maybe"}, "synchronous"),
    ],
)
def test_malformed_values_name_the_parameter(
    model: type, values: dict[str, str], name: str
) -> None:
    with pytest.raises(BadRequest, match=f"parameter {name}"):
        parse_params(model, values)


def test_json_body_must_be_an_object() -> None:
    assert parse_json_object(b'{"url": "x"}') == {"url": "x"}
    for body in (b"[1]", b"{oops", b"\xff"):
        with pytest.raises(BadRequest):
            parse_json_object(body)
