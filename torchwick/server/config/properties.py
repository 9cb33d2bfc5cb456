"""A reader for Java ``.properties`` text, as TorchServe's ``config.properties`` uses it.

``parse_properties`` follows the rules of ``java.util.Properties.load``:

* natural lines end at ``\\n``, ``\\r`` or ``\\r\\n``; blank lines are skipped;
* a line whose first non-blank character is ``#`` or ``!`` is a comment (a comment never
  continues onto the next line);
* a line ending in an odd number of backslashes continues on the next line; the backslash is
  dropped, and so is the leading whitespace of the continued line (which is never a comment);
* the key ends at the first unescaped ``=``, ``:`` or whitespace; whitespace around the
  separator is skipped; the value is everything after it (trailing whitespace is kept);
* escapes ``\\t``, ``\\n``, ``\\r``, ``\\f``, ``\\uXXXX`` (surrogate pairs combine), and a
  backslash before any other character stands for that character (``\\=``, ``\\:``, ``\\ ``,
  ``\\\\``, ``\\#``);
* when a key repeats, the last value wins.

``substitute_env`` replaces ``$$NAME$$`` with the environment variable ``NAME``.
Both raise ``ConfigError`` with the line or key at fault; they never read ``os.environ``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from .errors import ConfigError

_BLANKS = " \t\f"
_SIMPLE_ESCAPES = {"t": "\t", "n": "\n", "r": "\r", "f": "\f"}
_NATURAL_LINE = re.compile(r"\r\n|\r|\n")
_ENV_REFERENCE = re.compile(r"\$\$([A-Za-z_][A-Za-z0-9_]*)\$\$")
_HEX4 = re.compile(r"[0-9A-Fa-f]{4}")


def parse_properties(text: str, *, source: str = "<properties>") -> dict[str, str]:
    """Parse properties text into an insertion-ordered ``{key: value}`` dict.

    ``source`` names the text in error messages. Raises ``ConfigError`` for a malformed
    ``\\uXXXX`` escape, naming the source and the line where the entry starts.
    """
    if text.startswith("\ufeff"):
        text = text[1:]
    natural = _NATURAL_LINE.split(text)
    result: dict[str, str] = {}
    index = 0
    while index < len(natural):
        line_number = index + 1
        line = natural[index].lstrip(_BLANKS)
        index += 1
        if not line or line[0] in "#!":
            continue
        pieces = [line]
        while _continues(pieces[-1]):
            pieces[-1] = pieces[-1][:-1]
            if index >= len(natural):
                break
            pieces.append(natural[index].lstrip(_BLANKS))
            index += 1
        raw_key, raw_value = _split_entry("".join(pieces))
        where = f"{source}, line {line_number}"
        key = _unescape(raw_key, where)
        result.pop(key, None)
        result[key] = _unescape(raw_value, where)
    return result


def substitute_env(value: str, environ: Mapping[str, str], *, key: str) -> str:
    """Replace every ``$$NAME$$`` in ``value`` with ``environ[NAME]``.

    Raises ``ConfigError`` naming ``key`` and the variable when ``NAME`` is not set.
    """

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in environ:
            raise ConfigError(
                f"{key}: refers to environment variable {name} ($${name}$$), which is not set"
            )
        return environ[name]

    return _ENV_REFERENCE.sub(replace, value)


def _continues(line: str) -> bool:
    """True when ``line`` ends in an odd number of backslashes."""
    trailing = len(line) - len(line.rstrip("\\"))
    return trailing % 2 == 1


def _split_entry(line: str) -> tuple[str, str]:
    """Split a logical line into its raw (still escaped) key and value."""
    key_end = len(line)
    value_start = len(line)
    has_separator = False
    escaped = False
    for position, char in enumerate(line):
        if not escaped and char in "=:":
            key_end, value_start, has_separator = position, position + 1, True
            break
        if not escaped and char in _BLANKS:
            key_end, value_start = position, position + 1
            break
        escaped = char == "\\" and not escaped
    while value_start < len(line):
        char = line[value_start]
        if char not in _BLANKS:
            if has_separator or char not in "=:":
                break
            has_separator = True
        value_start += 1
    return line[:key_end], line[value_start:]


def _unescape(raw: str, where: str) -> str:
    """Resolve backslash escapes; raise ``ConfigError`` for a malformed ``\\u`` escape."""
    if "\\" not in raw:
        return raw
    out: list[str] = []
    position = 0
    while position < len(raw):
        char = raw[position]
        position += 1
        if char != "\\" or position >= len(raw):
            if char != "\\":
                out.append(char)
            continue
        code = raw[position]
        position += 1
        if code == "u":
            digits = raw[position : position + 4]
            if not _HEX4.fullmatch(digits):
                raise ConfigError(f"{where}: malformed \\uXXXX escape '\\u{digits}'")
            out.append(chr(int(digits, 16)))
            position += 4
        else:
            out.append(_SIMPLE_ESCAPES.get(code, code))
    return _join_surrogates("".join(out))


def _join_surrogates(text: str) -> str:
    """Combine UTF-16 surrogate pairs written as two ``\\u`` escapes into one character."""
    if not any(0xD800 <= ord(char) <= 0xDFFF for char in text):
        return text
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
