"""Small ``ts`` modules: ``ts.version``, ``ts.service`` and ``ts.handler_utils.text_utils``.

* ``__version__``: the TorchServe release torchwick reproduces (``"0.12.0"``);
* ``PredictionException`` and ``PREDICTION_METRIC`` (what handlers import from ``ts.service``);
* ``get_tokenizer("basic_english" | None)`` and ``ngrams_iterator``, TorchServe's torchtext-free
  text helpers: ``basic_english`` lower-cases, spaces out ``' . , ( ) ! ?``, drops ``"``,
  turns ``<br />``, ``;`` and ``:`` into spaces and splits on whitespace; ``None`` splits on
  whitespace only.

Failure mode: ``get_tokenizer`` raises ``ValueError`` for any other tokenizer name (TorchServe
would need torchtext or spaCy for those).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence

from ..context import SERVER_VERSION
from ..errors import PredictionException

__all__ = [
    "PREDICTION_METRIC",
    "PredictionException",
    "__version__",
    "get_tokenizer",
    "ngrams_iterator",
]

__version__ = SERVER_VERSION
PREDICTION_METRIC = "PredictionTime"

_BASIC_ENGLISH: list[tuple[re.Pattern[str], str]] = [
    (re.compile(pattern), replacement)
    for pattern, replacement in (
        (r"\'", " '  "),
        (r"\"", ""),
        (r"\.", " . "),
        (r"<br \/>", " "),
        (r",", " , "),
        (r"\(", " ( "),
        (r"\)", " ) "),
        (r"\!", " ! "),
        (r"\?", " ? "),
        (r"\;", " "),
        (r"\:", " "),
        (r"\s+", " "),
    )
]


def _basic_english(line: str) -> list[str]:
    line = line.lower()
    for pattern, replacement in _BASIC_ENGLISH:
        line = pattern.sub(replacement, line)
    return line.split()


def get_tokenizer(tokenizer: str | None, language: str = "en") -> Callable[[str], list[str]]:
    """A text -> tokens function (see the module docstring)."""
    if tokenizer is None:
        return str.split
    if tokenizer == "basic_english":
        if language != "en":
            raise ValueError("basic_english normalisation is only available for English")
        return _basic_english
    raise ValueError(f"tokenizer {tokenizer!r} is not available (use 'basic_english' or None)")


def ngrams_iterator(token_list: Sequence[str], ngrams: int) -> Iterator[str]:
    """The tokens, then every n-gram for n = 2..``ngrams`` joined with spaces."""
    yield from token_list
    for n in range(2, ngrams + 1):
        for gram in zip(*[token_list[i:] for i in range(n)], strict=False):
            yield " ".join(gram)
