"""How deeply a JSON document nests, measured before it is parsed.

Python's ``json`` parser recurses once per level: a body of a few hundred kilobytes of ``[``
costs a deep recursion and ends in ``RecursionError``, which is not a ``ValueError`` and would
escape the per-request error handling. ``json_too_deep`` measures it with a few
whole-buffer byte operations (no Python loop over the bytes).
"""

from __future__ import annotations

import re

_STRINGS = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
#: Every byte except the four brackets (deleted by ``bytes.translate``).
#: The innermost pairs, all removed in one pass (one nesting level).
_INNERMOST = re.compile(rb"\[\]|\{\}")
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def json_too_deep(raw: bytes | bytearray | memoryview, limit: int) -> bool:
    """True when ``raw`` nests arrays/objects more than ``limit`` levels deep.

    Strings are removed and everything but brackets deleted (both at C speed); then each
    pass removes the innermost ``[]``/``{}`` pairs, one nesting level per pass, at most
    ``limit + 1`` passes. Malformed documents are measured as far as they go; the parser
    reports them afterwards.
    """
    data = bytes(raw)
    if data.count(b"[") + data.count(b"{") <= limit:
        return False  # cannot be deeper than the number of openers
    if b'"' in data:
        data = _STRINGS.sub(b"", data)
    brackets = data.translate(None, _NOT_BRACKETS)
    for removed in range(limit):
        shorter = _INNERMOST.sub(b"", brackets)
        if not shorter:
            return False
        if shorter == brackets:
            # Only unmatched brackets are left (a truncated or malformed document): the
            # parser would still descend into each opener.
            return removed + shorter.count(b"[") + shorter.count(b"{") > limit
        brackets = shorter
    return True
