"""`relaxed_gc`: the cycle collector runs less often inside the block, as before after it."""

from __future__ import annotations

import gc

import pytest

from ingest.sources.rest import relaxed_gc


def test_thresholds_are_raised_inside_and_restored_after_even_on_error() -> None:
    before = gc.get_threshold()
    with pytest.raises(RuntimeError), relaxed_gc(threshold=123_456):
        assert gc.get_threshold() == (123_456, *before[1:])
        raise RuntimeError("the run failed")
    assert gc.get_threshold() == before


def test_a_higher_threshold_already_set_is_never_lowered() -> None:
    before = gc.get_threshold()
    gc.set_threshold(500_000, *before[1:])
    try:
        with relaxed_gc(threshold=100_000):
            assert gc.get_threshold()[0] == 500_000
    finally:
        gc.set_threshold(*before)


def test_cycles_are_still_collected_inside() -> None:
    class Node:
        other: object = None

    with relaxed_gc():
        a, b = Node(), Node()
        a.other, b.other = b, a
        del a, b
        assert gc.collect() >= 2
