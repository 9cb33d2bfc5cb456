"""The URL normaliser and the allowlist check made on its canonical form."""

from __future__ import annotations

import pytest

from torchwick.server.errors import BadRequest, ModelNotFound
from torchwick.server.store import UrlPolicy, normalise_url, remove_dot_segments, url_scheme


@pytest.mark.parametrize(
    ("path", "expected", "had_parent"),
    [
        # RFC 3986 section 5.2.4 examples and edge cases.
        ("/a/b/c/./../../g", "/a/g", True),
        ("mid/content=5/../6", "mid/6", True),
        ("/a/./b/", "/a/b/", False),
        ("/a/b/..", "/a/", True),
        ("/a/b/.", "/a/b/", False),
        ("/../../x", "/x", True),
        ("/a//b", "/a//b", False),
        ("", "", False),
    ],
)
def test_remove_dot_segments(path: str, expected: str, had_parent: bool) -> None:
    assert remove_dot_segments(path) == (expected, had_parent)


@pytest.mark.parametrize(
    ("url", "text"),
    [
        ("HTTP://Example.COM/Models/x.mar", "http://example.com/Models/x.mar"),
        ("https://example.com:443/x.mar", "https://example.com/x.mar"),
        ("http://example.com:80/x.mar", "http://example.com/x.mar"),
        ("http://example.com:8080/x.mar", "http://example.com:8080/x.mar"),
        ("http://example.com", "http://example.com/"),
        ("http://example.com/a/./b/x.mar#frag", "http://example.com/a/b/x.mar"),
        (
            "http://example.com/my%20model.mar?sig=a%2Fb",
            "http://example.com/my model.mar?sig=a%2Fb",
        ),
        ("http://ex.com/a%2fb.mar", "http://ex.com/a/b.mar"),
        ("http://[::1]:8080/x.mar", "http://[::1]:8080/x.mar"),
        ("FILE:///models/x.mar", "file:///models/x.mar"),
        ("file://LOCALHOST/models/x.mar", "file:///models/x.mar"),
        ("file:///models/%78.mar", "file:///models/x.mar"),
    ],
)
def test_canonical_form(url: str, text: str) -> None:
    assert normalise_url(url).text == text


def test_request_url_encodes_the_decoded_path_again() -> None:
    normal = normalise_url("http://ex.com/my%20model.mar?x=1")
    assert normal.request_url == "http://ex.com/my%20model.mar?x=1"
    assert normalise_url("http://ex.com/a%2e%2e/b.mar").request_url == "http://ex.com/a../b.mar"


@pytest.mark.parametrize(
    "url",
    [
        "http://ex.com/models/../secret.mar",
        "http://ex.com/models/%2e%2e/secret.mar",
        "http://ex.com/models/%2E%2e/secret.mar",
        "http://ex.com/models/.%2e/secret.mar",
        "http://ex.com/models%2f..%2fsecret.mar",
        "file:///models/../etc/x.mar",
    ],
)
def test_parent_segments_are_found_in_every_spelling(url: str) -> None:
    assert normalise_url(url).had_parent_refs


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://user@ex.com/x.mar", "user information"),
        ("http://user:secret@ex.com/x.mar", "user information"),
        ("http://good.example@evil.example/x.mar", "user information"),
        ("http://ex.com/%252e%252e/x.mar", "double encoding"),
        ("http://ex.com/x%3f.mar", "'?' or '#'"),
        ("http://ex.com/x%23.mar", "'?' or '#'"),
        ("http://ex.com/x%5c..%5cy.mar", "backslash"),
        ("http://ex.com/x%00.mar", "control character"),
        ("http://ex.com/x\\..\\y.mar", "backslash"),
        ("http://ex.com/x y.mar", "spaces"),
        ("http://ex.com/x\n.mar", "control characters"),
        ("http://ex.com:99999/x.mar", "port"),
        ("http://ex.com:8o/x.mar", "port"),
        ("http://ex%2ecom%2f@x/x.mar", "user information"),
        ("http://exa_mple.com!/x.mar", "host"),
        ("http:///x.mar", "no host"),
        ("http://[::1/x.mar", "parsed"),
        ("http://ex.com/%ff.mar", "UTF-8"),
    ],
)
def test_refused_spellings(url: str, problem: str) -> None:
    with pytest.raises(BadRequest, match=problem):
        normalise_url(url)


def test_a_lone_encoded_percent_is_a_percent() -> None:
    assert normalise_url("http://ex.com/a%25/x.mar").path == "/a%/x.mar"


def test_userinfo_is_never_echoed() -> None:
    with pytest.raises(BadRequest) as caught:
        normalise_url("https://admin:hunter2@ex.com/x.mar")
    assert "hunter2" not in caught.value.message


def test_url_scheme_tells_urls_from_store_names() -> None:
    assert url_scheme("HTTPS://x/y") == "https"
    assert url_scheme("file:///x") == "file"
    assert url_scheme("echo.mar") is None
    assert url_scheme("file:/etc/passwd") is None  # no "//": a (missing) store name
    assert url_scheme("sub/http://x") is None


class TestPolicy:
    policy = UrlPolicy((r"https://models\.example\.com/public/.*", r"file:///srv/models/.*"))

    @pytest.mark.parametrize(
        "url",
        [
            "https://models.example.com/public/a.mar",
            "HTTPS://MODELS.EXAMPLE.COM/public/a.mar",
            "https://models.example.com:443/public/./a.mar",
            "https://models.example.com/public/a%2Emar",
            "file:///srv/models/a.mar",
            "file://localhost/srv/models/a.mar",
        ],
    )
    def test_allowed(self, url: str) -> None:
        self.policy.check(url)

    @pytest.mark.parametrize(
        ("url", "problem"),
        [
            # CVE-2024-35198's shape: the raw text matches, the fetched path does not.
            ("https://models.example.com/public/../private/a.mar", "Relative path"),
            ("https://models.example.com/public/%2e%2e/private/a.mar", "Relative path"),
            ("https://models.example.com/public/%2E%2E%2Fprivate/a.mar", "Relative path"),
            ("file:///srv/models/../../etc/a.mar", "Relative path"),
            ("file:///srv/models/%2e%2e/%2e%2e/etc/a.mar", "Relative path"),
            ("https://models.example.com.evil.net/public/a.mar", "does not match"),
            ("https://evil.net/?https://models.example.com/public/a.mar", "does not match"),
            ("https://evil.net/#https://models.example.com/public/a.mar", "does not match"),
            ("http://models.example.com/public/a.mar", "does not match"),
            ("https://models.example.com:8443/public/a.mar", "does not match"),
            ("file://otherhost/srv/models/a.mar", "does not match"),
        ],
    )
    def test_refused_with_404(self, url: str, problem: str) -> None:
        with pytest.raises(ModelNotFound, match=problem):
            self.policy.check(url)

    def test_userinfo_host_confusion_is_refused(self) -> None:
        # With a loose pattern, "models.example.com@evil" would connect to evil.
        loose = UrlPolicy((r"https://models\.example\.com.*",))
        with pytest.raises(BadRequest, match="user information"):
            loose.check("https://models.example.com@evil.net/a.mar")

    def test_strict_mode_refuses_every_url(self) -> None:
        strict = UrlPolicy((".*",), strict=True)
        with pytest.raises(ModelNotFound, match="strict_allowed_urls=true"):
            strict.check("https://models.example.com/public/a.mar")
        assert strict.matches("https://anything")  # the patterns themselves are unchanged
