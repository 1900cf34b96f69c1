"""The pure rules of a live Load: which range takes a segment, beside or drained first, when drained."""

from __future__ import annotations

import pytest

from planner.errors import InvalidInput
from services.worker.ranges import EMPTY, Ranges, admit, drained, is_empty, load_mode, overlap


def test_serving_takes_everything_inside_it() -> None:
    r = Ranges(serving=(10, 30))
    assert admit(r, 15, 30, known=False) == ((10, 30), None)
    assert admit(r, 10, 12, known=True) == ((10, 30), None)


def test_loading_refuses_new_layers_retryably_while_the_old_range_serves() -> None:
    r = Ranges(serving=(15, 30), loading=(10, 30))
    assert admit(r, 15, 30, known=False) == ((15, 30), None)
    held, why = admit(r, 10, 30, known=False)
    assert why is not None and why.code == "unavailable" and "loading layers [10,30)" in why.message


def test_draining_keeps_known_requests_and_sends_new_ones_elsewhere() -> None:
    r = Ranges(serving=(0, 10), draining=(0, 15))
    assert admit(r, 0, 15, known=True) == ((0, 15), None)
    _, why = admit(r, 0, 15, known=False)
    assert why is not None and why.code == "unavailable" and "draining" in why.message
    assert "moving to [0,10)" in why.message


def test_a_segment_outside_every_range_is_left_to_the_usual_check() -> None:
    held, why = admit(Ranges(serving=(3, 6)), 0, 3, known=False)
    assert (held, why) == ((3, 6), None)  # check_segment then refuses it, naming [3,6)
    assert admit(Ranges(serving=None, draining=(0, 3)), 4, 6, known=False) == ((0, 3), None)


def test_load_mode_follows_the_layer_budget() -> None:
    held = frozenset(range(15, 30))
    assert load_mode(held, (10, 30), None) == "beside"
    assert load_mode(held, (10, 30), 20) == "beside"
    assert load_mode(held, (0, 15), 20) == "drained_first"  # 30 layers together, 15 alone
    with pytest.raises(InvalidInput, match="at most 10"):
        load_mode(held, (10, 30), 10)


def test_a_backend_that_reads_a_range_again_counts_both_copies() -> None:
    # vLLM: [15,30) stays in its runner while a second runner reads all of [10,30): 35 layers meanwhile.
    held = frozenset(range(15, 30))
    assert load_mode(held, (10, 30), 35, held_count=15) == "beside"
    assert load_mode(held, (10, 30), 34, held_count=15) == "drained_first"
    assert load_mode(frozenset(), (10, 30), 20, held_count=0) == "beside"  # an empty worker


def test_the_empty_range_and_an_unloaded_worker() -> None:
    assert EMPTY == (0, 0) and is_empty(EMPTY) and is_empty(None) and not is_empty((0, 1))
    # Nothing serves: every segment is left to check_segment, which refuses it against [0,0).
    assert admit(Ranges(serving=None), 0, 3, known=False) == ((0, 0), None)
    assert drained([], EMPTY) and not drained([(3, 6)], EMPTY)


def test_overlap_and_drained() -> None:
    assert overlap((0, 3), (2, 5)) == (2, 3)
    assert overlap((0, 3), (3, 6)) is None
    assert overlap(None, (3, 6)) is None
    assert drained([], (0, 10))
    assert drained([(0, 10), (2, 5)], (0, 10))
    assert not drained([(0, 10), (0, 15)], (0, 10))
