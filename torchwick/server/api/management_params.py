"""Management API inputs, validated with pydantic at the edge.

Query strings (and, for register, a JSON body) become these models. Unknown parameters are
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

LIST_LIMIT_MAX = 100


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


class ScaleParams(_Params):
    """``PUT /models/{m}[/{v}]``; ``timeout`` and ``number_gpu`` are accepted and ignored."""

    min_worker: int = 1
    max_worker: int | None = None
    synchronous: bool = False
    model_version: str | None = None


class ListParams(_Params):
    """``GET /models``; out-of-range values are clamped as TorchServe does."""

    limit: int = LIST_LIMIT_MAX
    next_page_token: int = 0

    @property
    def clamped_limit(self) -> int:
        """``limit`` outside 0..100 means 100."""
        return self.limit if 0 <= self.limit <= LIST_LIMIT_MAX else LIST_LIMIT_MAX

    @property
    def offset(self) -> int:
        """``next_page_token`` below 0 means 0."""
        return max(self.next_page_token, 0)


class DescribeParams(_Params):
    """``GET /models/{m}[/{v}]``."""

    customized: bool = False


class TokenParams(_Params):
    """``GET /token``."""

    type: str | None = None


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
    if not isinstance(value, dict):
        raise BadRequest("Invalid JSON request body: expected an object")
    return value


_EXPECTED = {
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
        expected = _EXPECTED.get(error["type"], error["msg"])
        problems.append(f"Invalid value for parameter {name}: {values.get(name)!r} ({expected})")
    return "; ".join(problems)
