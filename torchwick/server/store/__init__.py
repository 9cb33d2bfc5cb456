"""Parts of the model store: URL normalisation and the allowlist (``urls``), bounded http(s)
downloads (``fetch``). ``torchwick.server.model_store.ModelStore`` puts them together."""

from .fetch import FetchError, HttpFetcher
from .urls import (
    NormalUrl,
    UrlPolicy,
    normalise_url,
    not_allowed,
    relative_path,
    remove_dot_segments,
    url_scheme,
)

__all__ = [
    "FetchError",
    "HttpFetcher",
    "NormalUrl",
    "UrlPolicy",
    "normalise_url",
    "not_allowed",
    "relative_path",
    "remove_dot_segments",
    "url_scheme",
]
