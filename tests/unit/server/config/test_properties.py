"""The Java-properties reader and $$ENV$$ substitution."""

from __future__ import annotations

import pytest

from torchwick.server.config import ConfigError, parse_properties, substitute_env


def test_separators_and_whitespace() -> None:
    text = "a=1\nb:2\nc 3\n  d   =   four  \ne\t:\tfive\nf = = six\n"
    assert parse_properties(text) == {
        "a": "1",
        "b": "2",
        "c": "3",
        "d": "four  ",
        "e": "five",
        "f": "= six",
    }


def test_comments_and_blank_lines() -> None:
    text = "# hash\n! bang\n\n   \n  # indented comment\nkey=value # not a comment\n"
    assert parse_properties(text) == {"key": "value # not a comment"}


def test_comment_never_continues() -> None:
    assert parse_properties("# ends in a backslash \\\nkey=v\n") == {"key": "v"}


def test_line_continuation_drops_leading_whitespace() -> None:
    text = "list = one, \\\n        two, \\\n    three\nnext=x\n"
    assert parse_properties(text) == {"list": "one, two, three", "next": "x"}


def test_continued_line_is_never_a_comment() -> None:
    assert parse_properties("k = a\\\n  # b\n") == {"k": "a# b"}


def test_even_backslashes_do_not_continue() -> None:
    assert parse_properties("k = path\\\\\nnext = 1\n") == {"k": "path\\", "next": "1"}


def test_blank_continuation_line_ends_the_entry() -> None:
    assert parse_properties("k = a\\\n\nj = b\n") == {"k": "a", "j": "b"}


def test_continuation_at_end_of_text() -> None:
    assert parse_properties("k = a\\") == {"k": "a"}


def test_escapes() -> None:
    text = r"k = tab\tnl\nret\rff\fuA\u0041 back\\slash \q" + "\n"
    assert parse_properties(text) == {"k": "tab\tnl\nret\rff\fuAA back\\slash q"}


def test_escaped_separators_in_keys() -> None:
    text = "a\\=b = 1\nc\\:d:2\ne\\ f 3\n"
    assert parse_properties(text) == {"a=b": "1", "c:d": "2", "e f": "3"}


def test_surrogate_pair_escapes_combine() -> None:
    assert parse_properties("k=\\uD83D\\uDE00\n") == {"k": "\U0001f600"}


def test_malformed_unicode_escape_names_line() -> None:
    with pytest.raises(ConfigError, match=r"cfg, line 2: malformed"):
        parse_properties("ok=1\nbad=\\u12G4\n", source="cfg")


def test_key_without_value_and_line_endings() -> None:
    assert parse_properties("alone\r\nx=1\ry=2") == {"alone": "", "x": "1", "y": "2"}


def test_last_value_wins_and_order_is_kept() -> None:
    parsed = parse_properties("b=1\na=2\nb=3\n")
    assert parsed == {"b": "3", "a": "2"}
    assert list(parsed) == ["a", "b"]


def test_byte_order_mark_is_ignored() -> None:
    assert parse_properties("\ufeffk=v") == {"k": "v"}


def test_env_substitution() -> None:
    environ = {"STORE": "/models", "PORT": "9000"}
    assert substitute_env("$$STORE$$/x:$$PORT$$", environ, key="k") == "/models/x:9000"
    assert substitute_env("no refs $HOME", environ, key="k") == "no refs $HOME"


def test_env_substitution_missing_variable_names_key_and_variable() -> None:
    with pytest.raises(ConfigError, match=r"model_store: .*NOPE.* not set"):
        substitute_env("$$NOPE$$", {}, key="model_store")
