"""The hand-written router: matching, captures, trailing slashes, 404 and 405."""

from __future__ import annotations

import pytest

from torchwick.server.api.asgi import Request
from torchwick.server.api.router import ANY_METHOD, Route, Router
from torchwick.server.errors import MethodNotAllowed, ResourceNotFound


async def _endpoint(request: Request) -> None:
    return None


async def _other(request: Request) -> None:
    return None


def _router() -> Router:
    return Router(
        [
            Route.make("/", {"OPTIONS": _endpoint}, "none"),
            Route.make("/ping", {ANY_METHOD: _endpoint}, "none"),
            Route.make("/models", {"GET": _endpoint, "POST": _other}, "management"),
            Route.make("/models/{model_name}", {"GET": _endpoint}, "management"),
            Route.make(
                "/models/{model_name}/{model_version}/set-default", {"PUT": _other}, "management"
            ),
            Route.make(
                "/predictions/{model_name}/{model_version}", {ANY_METHOD: _endpoint}, "inference"
            ),
            Route.make(
                "/predictions/{model_name}/{model_version}/{url_path...}",
                {ANY_METHOD: _other},
                "inference",
            ),
        ]
    )


def test_literal_and_any_method_routes() -> None:
    router = _router()
    route, endpoint, params = router.resolve("DELETE", "/ping")
    assert route.pattern == "/ping" and endpoint is _endpoint and params == {}
    assert router.resolve("POST", "/models")[1] is _other
    assert router.resolve("OPTIONS", "/")[0].pattern == "/"


def test_captures_and_trailing_slash() -> None:
    router = _router()
    assert router.resolve("GET", "/models/resnet/")[2] == {"model_name": "resnet"}
    _, endpoint, params = router.resolve("PUT", "/models/m/2.0/set-default")
    assert endpoint is _other and params == {"model_name": "m", "model_version": "2.0"}


def test_rest_capture_needs_at_least_one_segment() -> None:
    router = _router()
    _, endpoint, params = router.resolve("POST", "/predictions/m/1.0")
    assert endpoint is _endpoint and "url_path" not in params
    _, endpoint, params = router.resolve("POST", "/predictions/m/1.0/v1/chat/completions")
    assert endpoint is _other and params["url_path"] == "v1/chat/completions"


@pytest.mark.parametrize("path", ["/nothing", "/models/a/b/c/d", "/predictions//1.0", "/ping/x"])
def test_unknown_paths_are_404(path: str) -> None:
    with pytest.raises(ResourceNotFound):
        _router().resolve("GET", path)


def test_known_path_wrong_method_is_405() -> None:
    router = _router()
    with pytest.raises(MethodNotAllowed):
        router.resolve("DELETE", "/models")
    with pytest.raises(MethodNotAllowed):
        router.resolve("GET", "/")


def test_routes_must_start_with_a_literal() -> None:
    with pytest.raises(ValueError, match="literal"):
        Router([Route.make("/{x}", {"GET": _endpoint}, "none")])
