"""Validation of management parameters at the edge."""

from __future__ import annotations

import pytest

from torchwick.server.api.management_params import (
    ListParams,
    RegisterParams,
    ScaleParams,
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
        (ScaleParams, {"min_worker": "1.5"}, "min_worker"),
        (ListParams, {"limit": "ten"}, "limit"),
    ],
)
def test_malformed_values_name_the_parameter(
    model: type, values: dict[str, str], name: str
) -> None:
    with pytest.raises(BadRequest, match=f"parameter {name}"):
        parse_params(model, values)


def test_scale_ignores_timeout_and_number_gpu() -> None:
    params = parse_params(ScaleParams, {"min_worker": "2", "timeout": "x", "number_gpu": "y"})
    assert params.min_worker == 2 and params.max_worker is None and params.synchronous is False


@pytest.mark.parametrize(
    ("limit", "token", "want_limit", "want_offset"),
    [("5", "2", 5, 2), ("500", "-3", 100, 0), ("-1", "0", 100, 0), ("0", "1", 0, 1)],
)
def test_list_clamps_like_torchserve(
    limit: str, token: str, want_limit: int, want_offset: int
) -> None:
    params = parse_params(ListParams, {"limit": limit, "next_page_token": token})
    assert (params.clamped_limit, params.offset) == (want_limit, want_offset)


def test_json_body_must_be_an_object() -> None:
    assert parse_json_object(b'{"url": "x"}') == {"url": "x"}
    for body in (b"[1]", b"{oops", b"\xff"):
        with pytest.raises(BadRequest):
            parse_json_object(body)
