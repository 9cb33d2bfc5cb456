"""Registration urls as an attacker writes them: traversal in every encoding, file:// tricks,
SSRF against a local origin (redirects included), and downloads that never end or never stop.
"""

from __future__ import annotations

import pytest

from .conftest import DOWNLOAD_TIMEOUT_S, MAX_DOWNLOAD, READ_TIMEOUT_S, World, assert_refused


# ------------------------------------------------------------------------ model store names
@pytest.mark.parametrize(
    ("url", "status", "fragment"),
    [
        ("../outside/secret.mar", 404, "Relative path is not allowed"),
        ("sub/../../outside/secret.mar", 404, "Relative path is not allowed"),
        ("%2e%2e/outside/secret.mar", 404, "Model not found at: %2e%2e/outside/secret.mar"),
        ("%252e%252e/outside/secret.mar", 404, "Model not found at"),
        ("echo.mar\nINFO forged log line", 400, "control characters"),
        ("echo.mar\x00", 400, "control characters"),
    ],
)
def test_store_name_traversal(world: World, url: str, status: int, fragment: str) -> None:
    assert_refused(world.register(url), status, fragment)


def test_raw_encoded_traversal_in_the_query(world: World) -> None:
    # The API decodes the query once; the store then sees "../outside/secret.mar".
    response = world.mgmt.post("/models?url=%2e%2e%2Foutside%2Fsecret.mar")
    assert_refused(response, 404, "Relative path is not allowed")


def test_absolute_paths_are_refused_inside_and_outside_the_store(world: World) -> None:
    for path in (world.outside / "secret.mar", world.store / "echo.mar"):
        response = world.register(str(path), model_name="absolute")
        assert_refused(response, 404, "Absolute path is not allowed")


# ------------------------------------------------------------------------------ file:// URLs
def test_an_allowed_file_url_registers(world: World) -> None:
    response = world.register(f"file://{world.allowed}/filegood.mar")
    assert response.status_code == 200, response.text
    world.unregister("filegood")


@pytest.mark.parametrize(
    ("template", "status", "fragment"),
    [
        ("file://{allowed}/../outside/secret.mar", 404, "Relative path is not allowed"),
        ("file://{allowed}/%2e%2e/outside/secret.mar", 404, "Relative path is not allowed"),
        ("FiLe://{allowed}/%2E%2e/outside/secret.mar", 404, "Relative path is not allowed"),
        ("file://{allowed}/%252e%252e/outside/secret.mar", 400, "double encoding"),
        ("file://{allowed}/link.mar", 404, "resolves to a file that does not match"),
        ("file://user@localhost{allowed}/filegood.mar", 400, "user information"),
        ("file://{outside}/secret.mar", 404, "does not match any allowed URL"),
        ("file://otherhost{allowed}/filegood.mar", 404, "does not match any allowed URL"),
    ],
)
def test_file_url_attacks(world: World, template: str, status: int, fragment: str) -> None:
    url = template.format(allowed=world.allowed, outside=world.outside)
    assert_refused(world.register(url), status, fragment)
    assert not (world.store / "secret.mar").exists()


# ---------------------------------------------------------------------- SSRF: http(s) URLs
def test_an_allowed_http_url_registers(world: World) -> None:
    response = world.register(f"{world.origin.base}/models/good.mar")
    assert response.status_code == 200, response.text
    world.unregister("httpgood")


def test_a_redirect_inside_the_allowlist_is_followed_in_canonical_form(world: World) -> None:
    response = world.register(f"{world.origin.base}/models/to-good.mar")
    assert response.status_code == 200, response.text
    assert world.origin.requests[-1] == "/models/good.mar"
    world.unregister("httpgood")
    (world.store / "to-good.mar").unlink(missing_ok=True)


@pytest.mark.parametrize(
    ("path", "status", "fragment"),
    [
        ("/models/../private/secret.mar", 404, "Relative path is not allowed"),
        ("/models/%2e%2e/private/secret.mar", 404, "Relative path is not allowed"),
        ("/models/%2E%2E%2Fprivate%2Fsecret.mar", 404, "Relative path is not allowed"),
        ("/models/.%2e/private/secret.mar", 404, "Relative path is not allowed"),
        ("/models/%252e%252e/private/secret.mar", 400, "double encoding"),
        ("/private/secret.mar", 404, "does not match any allowed URL"),
        ("/models/to-private.mar", 400, "redirect to a URL that is not allowed"),
        ("/models/to-dotdot.mar", 400, "redirect to a URL that is not allowed"),
        ("/models/to-file.mar", 400, "redirect to a URL that is not allowed"),
    ],
)
def test_ssrf_attempts(world: World, path: str, status: int, fragment: str) -> None:
    assert_refused(world.register(f"{world.origin.base}{path}"), status, fragment)


@pytest.mark.parametrize("scheme", ["HTTP", "HtTp"])
def test_mixed_case_schemes_are_normalised_too(world: World, scheme: str) -> None:
    url = f"{scheme}://127.0.0.1:{world.origin.port}/models/%2e%2e/private/secret.mar"
    assert_refused(world.register(url), 404, "Relative path is not allowed")


def test_userinfo_is_refused_and_never_echoed(world: World) -> None:
    url = f"http://127.0.0.1:{world.origin.port}:hunter2@127.0.0.1:{world.origin.port}/private/secret.mar"
    body = assert_refused(world.register(url), 400, "user information")
    assert "hunter2" not in body["message"]


# ------------------------------------------------------------------------- download limits
@pytest.mark.parametrize("name", ["big.mar", "big-unsized.mar"])
def test_the_download_size_is_capped(world: World, name: str) -> None:
    response = world.register(f"{world.origin.base}/models/{name}")
    assert_refused(response, 400, f"max_download_size={MAX_DOWNLOAD}")
    assert not (world.store / name).exists()
    assert not [p for p in world.store.iterdir() if p.name.startswith(".download-")]


def test_a_dripping_origin_hits_the_overall_deadline(world: World) -> None:
    response = world.register(f"{world.origin.base}/models/drip.mar")
    assert_refused(response, 400, f"download_timeout_s={DOWNLOAD_TIMEOUT_S:g}")
    assert not (world.store / "drip.mar").exists()


def test_a_silent_origin_hits_the_read_timeout(world: World) -> None:
    response = world.register(f"{world.origin.base}/models/stall.mar")
    assert_refused(response, 400, f"download_read_timeout_s={READ_TIMEOUT_S:g}")
    assert not (world.store / "stall.mar").exists()
