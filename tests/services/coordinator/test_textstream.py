"""Incremental detokenization: text appears once final; stop strings cut it, even across tokens."""

from __future__ import annotations

from collections.abc import Sequence

from services.coordinator.textstream import TextStream

PIECES = {1: "Hel", 2: "lo", 3: " wor", 4: "ld", 5: "!", 6: "\ufffd"}


def decode(ids: Sequence[int]) -> str:
    return "".join(PIECES[i] for i in ids)


def run(ids: list[int], stop: tuple[str, ...] = ()) -> tuple[list[str], TextStream]:
    ts = TextStream(decode, stop)
    out = []
    for i in ids:
        out.append(ts.feed(i))
        if ts.stopped:
            break
    if not ts.stopped:
        out.append(ts.flush())
    return out, ts


def test_plain_text_streams_every_token() -> None:
    out, ts = run([1, 2, 3, 4, 5])
    assert "".join(out) == "Hello world!"
    assert out[:5] == ["Hel", "lo", " wor", "ld", "!"]
    assert not ts.stopped


def test_stop_string_inside_one_token() -> None:
    out, ts = run([1, 2, 3, 4, 5], stop=("wor",))
    assert "".join(out) == "Hello "
    assert ts.stopped


def test_stop_string_across_tokens_is_held_back_then_cut() -> None:
    out, ts = run([1, 2, 3, 4, 5], stop=("lo w",))
    # The trailing "l" of "Hel" could start "lo w", so it waits; with "lo" it is released but "lo" waits;
    # " wor" completes the match and nothing more is shown.
    assert out[:3] == ["He", "l", ""]
    assert "".join(out) == "Hel"
    assert ts.stopped


def test_partial_prefix_released_when_it_does_not_match() -> None:
    out, _ = run([1, 2, 3, 4, 5], stop=("lox",))
    assert "".join(out) == "Hello world!"


def test_incomplete_character_waits() -> None:
    ts = TextStream(decode)
    assert ts.feed(1) == "Hel"
    assert ts.feed(6) == ""
    assert ts.flush() == "\ufffd"
