"""``json.dumps(value, indent=2)`` for the shapes models usually return, without the pure-Python
encoder.

With ``indent`` set, the standard library gives up its C encoder and walks the value in
Python; for a list of ten floats that costs more than a small model's forward pass. TorchServe
answers with exactly that pretty-printed text, so clients may depend on it byte for byte.
``dumps_indent2`` produces the identical text for (nested) lists of numbers and for flat
``{str: number}`` dicts (the classifier shape), and defers to ``json.dumps`` for anything else.
"""

from __future__ import annotations

import json
import math
from json.encoder import encode_basestring_ascii
from typing import Any


class _Unsupported(Exception):
    """The value holds something the fast path does not encode."""


def dumps_indent2(value: Any) -> str:
    """Exactly ``json.dumps(value, indent=2)``; raises what ``json.dumps`` raises."""
    try:
        return _encode(value, "\n")
    except _Unsupported:
        return json.dumps(value, indent=2)


def _number(value: Any) -> str:
    kind = type(value)
    if kind is float:
        if math.isfinite(value):
            return float.__repr__(value)
        if math.isnan(value):
            return "NaN"
        return "Infinity" if value > 0 else "-Infinity"
    if kind is int:
        return int.__repr__(value)
    raise _Unsupported


def _encode(value: Any, newline: str) -> str:
    kind = type(value)
    if kind is list:
        if not value:
            return "[]"
        inner = newline + "  "
        if type(value[0]) is list:
            items = [_encode(item, inner) for item in value]
        else:
            items = [_number(item) for item in value]
        return "[" + inner + ("," + inner).join(items) + newline + "]"
    if kind is dict:
        if not value:
            return "{}"
        inner = newline + "  "
        parts = []
        for key, item in value.items():
            if type(key) is not str:
                raise _Unsupported
            parts.append(encode_basestring_ascii(key) + ": " + _number(item))
        return "{" + inner + ("," + inner).join(parts) + newline + "}"
    return _number(value)
