"""Registration URLs in one canonical form, and the ``allowed_urls`` check made on that form.

``normalise_url`` turns what a caller sent into a ``NormalUrl`` or refuses it; the allowlist is
then matched against ``NormalUrl.text`` only, so a URL cannot pass the check in one spelling and
be fetched in another (CVE-2024-35198 was ``..`` slipping past TorchServe's check). The form:

- the scheme and host lower-cased; the default port (80, 443) dropped; ``file://localhost/p``
  is ``file:///p`` (RFC 8089);
- the path percent-decoded once and its dot segments removed (RFC 3986 section 5.2.4);
  ``had_parent_refs`` says whether a ``..`` segment was there, so the caller can refuse it;
- the fragment dropped (it is never sent); the query kept as given.

Refused outright, with ``BadRequest`` naming the rule: control characters, spaces or a
backslash anywhere; user information (``user@host``, which would let ``https://good@evil/``
name another host); a path that still holds a percent escape after one decoding (double
encoding such as ``%252e``) or decodes to a control character, ``?``, ``#`` or a backslash;
a host that is not a DNS name or IP literal; a port that is not a number. The scheme is
only lower-cased here: which schemes are fetched is the model store's decision.

``UrlPolicy`` holds the compiled ``allowed_urls`` (full match, case-insensitive, as in
TorchServe) and ``strict_allowed_urls``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import quote, unquote, urlsplit

from torchwick.server.errors import BadRequest, ModelNotFound

#: ``scheme://`` at the start of a registration url: such a url is a URL, anything else a
#: model store name.
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")
_FORBIDDEN = re.compile(r"[\x00-\x20\x7f\\]")
# In the decoded path an encoded space (%20) is fine: folder names have them.
_FORBIDDEN_DECODED = re.compile(r"[\x00-\x1f\x7f\\?#]")
_ESCAPE = re.compile(r"%[0-9A-Fa-f]{2}")
_LABEL = r"[a-z0-9_](?:[a-z0-9_\-]{0,61}[a-z0-9_])?"
_HOST = re.compile(rf"^{_LABEL}(?:\.{_LABEL})*\.?\Z")
_IPV6 = re.compile(r"^[0-9a-f:.]+\Z")
_DEFAULT_PORTS = {"http": 80, "https": 443}
# Characters left as they are when the decoded path is encoded again for the request line.
_PATH_SAFE = "/!$&'()*+,;=:@-._~"


@dataclass(frozen=True, slots=True)
class NormalUrl:
    """A registration URL in canonical form.

    ``text`` is what ``allowed_urls`` is matched against and what is fetched (for http(s)
    ``request_url`` is the same URL with its path percent-encoded again); ``path`` is the
    decoded path with dot segments removed.
    """

    scheme: str
    host: str
    port: int | None
    path: str
    query: str
    had_parent_refs: bool

    @property
    def netloc(self) -> str:
        """``host[:port]`` (IPv6 literals in brackets)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port is None else f"{host}:{self.port}"

    @property
    def text(self) -> str:
        """The canonical URL, path decoded: what the allowlist sees."""
        query = f"?{self.query}" if self.query else ""
        return f"{self.scheme}://{self.netloc}{self.path}{query}"

    @property
    def request_url(self) -> str:
        """The canonical URL with its path encoded for the wire: what is requested."""
        query = f"?{self.query}" if self.query else ""
        return f"{self.scheme}://{self.netloc}{quote(self.path, safe=_PATH_SAFE)}{query}"


def url_scheme(url: str) -> str | None:
    """The lower-cased scheme when ``url`` starts with ``scheme://``, else ``None`` (a name)."""
    found = _SCHEME.match(url)
    return found.group(1).lower() if found else None


def remove_dot_segments(path: str) -> tuple[str, bool]:
    """RFC 3986 section 5.2.4 on a decoded path; also says whether a ``..`` segment occurred.

    ``..`` never climbs above the root (``/a/../../b`` is ``/b``), as the RFC says; the flag
    lets callers refuse such URLs rather than silently repair them.
    """
    output: list[str] = []
    had_parent = False
    segments = path.split("/")
    absolute = path.startswith("/")
    if absolute:
        segments = segments[1:]
    for index, segment in enumerate(segments):
        last = index == len(segments) - 1
        if segment == ".":
            if last:
                output.append("")
            continue
        if segment == "..":
            had_parent = True
            if output:
                output.pop()
            if last:
                output.append("")
            continue
        output.append(segment)
    joined = "/".join(output)
    return ("/" + joined if absolute else joined), had_parent


def _decoded_path(raw_path: str) -> str:
    """The path decoded once; double encoding and encoded delimiters are refused."""
    try:
        decoded = unquote(raw_path, errors="strict")
    except UnicodeDecodeError:
        raise BadRequest("url path has percent escapes that are not UTF-8") from None
    if _ESCAPE.search(decoded):
        raise BadRequest(
            "url path holds a percent escape after decoding (double encoding such as %252e "
            "is not allowed)"
        )
    if _FORBIDDEN_DECODED.search(decoded):
        raise BadRequest(
            "url path decodes to a control character, a backslash, '?' or '#', "
            "which are not allowed"
        )
    return decoded


def _host(raw_host: str) -> str:
    """The lower-cased host: a DNS name (IDNA-encoded) or an IP literal; else BadRequest."""
    host = unquote(raw_host).lower()
    if host.startswith("[") and host.endswith("]"):
        inner = host[1:-1]
        if not inner or not _IPV6.match(inner):
            raise BadRequest(f"url host {raw_host!r} is not a valid IPv6 literal")
        return inner
    try:
        host = host.encode("idna").decode("ascii")
    except UnicodeError:
        raise BadRequest(f"url host {raw_host!r} is not a valid host name") from None
    if not _HOST.match(host):
        raise BadRequest(f"url host {raw_host!r} is not a valid host name")
    return host


def normalise_url(url: str) -> NormalUrl:
    """Parse and canonicalise a ``scheme://`` URL; ``BadRequest`` naming the broken rule."""
    if _FORBIDDEN.search(url):
        raise BadRequest("url may not contain control characters, spaces or a backslash")
    scheme = url_scheme(url)
    if scheme is None:
        raise BadRequest("url has no scheme:// part")
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise BadRequest(f"url cannot be parsed: {exc}") from None
    netloc = parts.netloc
    if "@" in netloc:
        # Never echoed: the user information may be a password.
        raise BadRequest("url may not contain user information (user@ or user:password@)")
    raw_host, sep, raw_port = netloc.rpartition(":") if _has_port(netloc) else (netloc, "", "")
    port: int | None = None
    if sep:
        if not raw_port.isdigit() or not 0 < int(raw_port) < 65536:
            raise BadRequest(f"url port {raw_port!r} is not a valid port number")
        port = int(raw_port)
        if _DEFAULT_PORTS.get(scheme) == port:
            port = None
    host = _host(raw_host) if raw_host else ""
    if scheme == "file" and host == "localhost":
        host = ""
    path, had_parent = remove_dot_segments(_decoded_path(parts.path))
    if scheme in _DEFAULT_PORTS:
        if not host:
            raise BadRequest(f"url has no host: {url}")
        path = path or "/"
    return NormalUrl(scheme, host, port, path, parts.query, had_parent)


def _has_port(netloc: str) -> bool:
    """True when ``netloc`` ends in ``:port`` (an IPv6 literal's own colons do not count)."""
    if netloc.startswith("["):
        return "]:" in netloc
    return ":" in netloc


def not_allowed(url: str) -> ModelNotFound:
    """TorchServe's 404 for a URL that matches none of ``allowed_urls``."""
    return ModelNotFound(f"Given URL {url} does not match any allowed URL(s)")


def relative_path(url: str) -> ModelNotFound:
    """TorchServe's 404 for a url with a ``..`` segment (after decoding, here)."""
    return ModelNotFound(f"Relative path is not allowed in url: {url}")


class UrlPolicy:
    """``allowed_urls`` (regexes, full match, case-insensitive) plus the strict switch.

    ``strict`` refuses every URL, whatever the regexes say: registrations then name entries
    of the model store only.
    """

    def __init__(self, patterns: tuple[str, ...], *, strict: bool = False) -> None:
        self._patterns = [re.compile(p, re.IGNORECASE) for p in patterns]
        self.strict = strict

    def matches(self, text: str) -> bool:
        """True when ``text`` fully matches one of the patterns (strict mode ignored)."""
        return any(pattern.fullmatch(text) for pattern in self._patterns)

    def check(self, url: str) -> NormalUrl:
        """Normalise ``url`` and demand that its canonical form is allowed.

        Raises ``ModelNotFound`` (strict mode; a ``..`` segment, even percent-encoded; no
        pattern matches the canonical form) or ``BadRequest`` (malformed, see
        ``normalise_url``).
        """
        if self.strict:
            raise ModelNotFound(
                f"Given URL {url} does not match any allowed URL(s): "
                "strict_allowed_urls=true allows model store names only"
            )
        normal = normalise_url(url)
        if normal.had_parent_refs:
            raise relative_path(url)
        if not self.matches(normal.text):
            raise not_allowed(url)
        return normal
