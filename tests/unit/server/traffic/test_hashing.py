"""Rendezvous hashing, smooth weighted round robin and the shadow's fraction gate."""

from __future__ import annotations

import pytest

from torchwick.server.traffic import FractionGate, SmoothRoundRobin, rendezvous

KEYS = [f"user-{i}" for i in range(10_000)]


def test_a_key_always_maps_to_the_same_version() -> None:
    weights = (("1.0", 90.0), ("2.0", 10.0))
    first = [rendezvous(k, weights) for k in KEYS]
    assert first == [rendezvous(k, weights) for k in KEYS]
    # Independent of the order the versions are listed in.
    assert first == [rendezvous(k, tuple(reversed(weights))) for k in KEYS]


def test_keys_spread_by_weight() -> None:
    # 10,000 keys at p = 0.1: one standard deviation is 0.003, so +-0.02 is over 6 sigma.
    share = sum(rendezvous(k, (("a", 90.0), ("b", 10.0))) == "b" for k in KEYS) / len(KEYS)
    assert share == pytest.approx(0.10, abs=0.02)
    three = [rendezvous(k, (("a", 1.0), ("b", 1.0), ("c", 2.0))) for k in KEYS]
    assert three.count("c") / len(KEYS) == pytest.approx(0.5, abs=0.02)


def test_a_weight_change_moves_only_the_keys_it_must() -> None:
    before = {k: rendezvous(k, (("a", 90.0), ("b", 10.0))) for k in KEYS}
    after = {k: rendezvous(k, (("a", 80.0), ("b", 20.0))) for k in KEYS}
    moved = [k for k in KEYS if before[k] != after[k]]
    # Only towards the version whose weight went up, and about the 10% that must move.
    assert all(before[k] == "a" and after[k] == "b" for k in moved)
    assert len(moved) / len(KEYS) == pytest.approx(0.10, abs=0.02)


def test_adding_a_version_only_takes_keys_for_it() -> None:
    before = {k: rendezvous(k, (("a", 1.0), ("b", 1.0))) for k in KEYS}
    after = {k: rendezvous(k, (("a", 1.0), ("b", 1.0), ("c", 1.0))) for k in KEYS}
    moved = [k for k in KEYS if before[k] != after[k]]
    assert all(after[k] == "c" for k in moved)
    assert len(moved) / len(KEYS) == pytest.approx(1 / 3, abs=0.02)


def test_zero_weights_never_win_and_no_weight_is_an_error() -> None:
    assert {rendezvous(k, (("a", 0.0), ("b", 1.0))) for k in KEYS[:500]} == {"b"}
    with pytest.raises(ValueError):
        rendezvous("k", (("a", 0.0),))
    with pytest.raises(ValueError):
        SmoothRoundRobin((("a", 0.0),))


def test_round_robin_is_within_one_pick_of_the_weights_at_every_moment() -> None:
    weights = (("a", 70.0), ("b", 20.0), ("c", 10.0))
    rr = SmoothRoundRobin(weights)
    counts = {"a": 0, "b": 0, "c": 0}
    for n in range(1, 1001):
        counts[rr.pick()] += 1
        for version, weight in weights:
            assert abs(counts[version] - n * weight / 100) < 1.0 + 1e-9


def test_fraction_gate_chooses_exactly_floor_n_times_fraction() -> None:
    gate = FractionGate(0.3)
    chosen = 0
    for n in range(1, 101):
        chosen += gate.next()
        assert chosen == int(n * 0.3 + 1e-9)
    assert not any(FractionGate(0.0).next() for _ in range(10))
    assert all(FractionGate(1.0).next() for _ in range(10))
