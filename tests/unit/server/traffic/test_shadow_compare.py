"""How shadow answers are compared with the primary's."""

from __future__ import annotations

from torchwick.server.traffic import agree


def test_exact_compares_json_values_else_bytes() -> None:
    assert agree(b'{"a": 1, "b": [1, 2]}', b'{"b":[1,2],"a":1}', "exact", 0.0)
    assert not agree(b"[1, 2]", b"[1, 2.0001]", "exact", 0.0)
    assert agree(b"\xff\x00", b"\xff\x00", "exact", 0.0)
    assert not agree(b"\xff\x00", b"\xff\x01", "exact", 0.0)


def test_allclose_allows_the_tolerance_on_numbers_only() -> None:
    assert agree(b"[1.0, 2.0]", b"[1.0005, 1.9995]", "allclose", 1e-3)
    assert not agree(b"[1.0, 2.0]", b"[1.01, 2.0]", "allclose", 1e-3)
    assert not agree(b"[1.0, 2.0]", b"[1.0]", "allclose", 1e-3)
    assert not agree(b'{"label": "cat"}', b'{"label": "dog"}', "allclose", 1.0)


def test_top1_compares_the_best_class() -> None:
    assert agree(b'{"cat": 0.7, "dog": 0.3}', b'{"cat": 0.51, "dog": 0.49}', "top1", 0.0)
    assert not agree(b'{"cat": 0.4, "dog": 0.6}', b'{"cat": 0.6, "dog": 0.4}', "top1", 0.0)
    assert agree(b"[0.1, 0.8, 0.1]", b"[[0.0, 0.9, 0.1]]", "top1", 0.0)
    assert not agree(b"[0.1, 0.8, 0.1]", b"[0.8, 0.1, 0.1]", "top1", 0.0)
