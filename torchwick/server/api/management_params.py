"""``POST /models`` inputs, validated with pydantic at the edge.

Registration takes its parameters from the query string and a JSON body alike, so they are
merged and validated here rather than declared as FastAPI query parameters (the other routes
declare theirs). Unknown parameters are
ignored, as in TorchServe. A value that does not parse (``batch_size=abc``) is a 400 naming
the parameter; TorchServe silently treats such values as absent, which hides typos, so this is
a deliberate difference (``docs/api.md``). Booleans accept ``true/false`` in any case (also
``1/0``, ``yes/no``, ``on/off``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from torchwick.server.errors import BadRequest


class _Params(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, str_strip_whitespace=True)


class RegisterParams(_Params):
    """``POST /models``; ``None`` means "not given" (the data plane applies precedence)."""

    url: str | None = None
    model_name: str | None = None
    handler: str | None = None
    runtime: str | None = None
    batch_size: int | None = None
    max_batch_delay: int | None = None
    initial_workers: int | None = None
    #: REST registration is synchronous unless told otherwise (TorchServe's REST default).
    synchronous: bool = True
    response_timeout: int | None = None
    startup_timeout: int | None = None
    #: Accepted for compatibility; S3 signing is not supported, so the value is ignored.
    s3_sse_kms: bool = False


ParamsT = TypeVar("ParamsT", bound=_Params)


def parse_params(model: type[ParamsT], values: Mapping[str, Any]) -> ParamsT:
    """Validate ``values`` into ``model``; raises ``BadRequest`` naming the bad parameter."""
    try:
        return model.model_validate(dict(values))
    except ValidationError as exc:
        raise BadRequest(_describe(exc, values)) from None


def parse_json_object(body: bytes) -> dict[str, Any]:
    """A JSON request body that must be an object; ``BadRequest`` otherwise."""
    try:
        value = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadRequest(f"Invalid JSON request body: {exc}") from None
    except RecursionError:
        raise BadRequest("Invalid JSON request body: nested too deeply") from None
    if not isinstance(value, dict):
        raise BadRequest("Invalid JSON request body: expected an object")
    return value


#: What a parameter should have been, by pydantic error type (also used for FastAPI's).
EXPECTED_VALUE = {
    "int_parsing": "an integer",
    "int_type": "an integer",
    "int_from_float": "an integer",
    "bool_parsing": "true or false",
    "bool_type": "true or false",
    "string_type": "a string",
}


def _describe(exc: ValidationError, values: Mapping[str, Any]) -> str:
    problems = []
    for error in exc.errors():
        name = ".".join(str(part) for part in error["loc"]) or "request"
        expected = EXPECTED_VALUE.get(error["type"], error["msg"])
        problems.append(f"Invalid value for parameter {name}: {values.get(name)!r} ({expected})")
    return "; ".join(problems)
