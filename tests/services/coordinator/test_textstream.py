"""Incremental detokenization: text appears once final; stop strings cut it, even across tokens."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import pytest

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


# -- the real tokenizer: streamed text equals a full decode, at linear cost ------------------------------

TEXTS = [
    "Hello world! The capital of France is Paris.",
    "Emoji split across byte tokens: 👋🏽 🇫🇷 🧑‍🚀 and 😀😀😀.",
    "Multi-byte scripts: 日本語のテキスト, Ελληνικά, русский, العربية, हिन्दी, 한국어.",
    "Combining marks: e\u0301 a\u0308 and a zero-width joiner\u200d.",
    "Code:\n\tdef f(x):\n\t\treturn x ** 2  # 𝛼𝛽𝛾\n\n\n    spaces    ",
    "  leading spaces and trailing  ",
]


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    from services.coordinator.serving import Tokenizer
    from services.modelstore.store import ensure_model

    return Tokenizer(ensure_model("smollm2-135m"))


def stream_all(decode: Any, ids: list[int], stop: tuple[str, ...] = ()) -> tuple[str, TextStream]:
    ts = TextStream(decode, stop)
    out = [ts.feed(i) for i in ids]
    out.append(ts.flush())
    return "".join(out), ts


@pytest.mark.parametrize("text", TEXTS)
def test_streamed_text_equals_the_full_decode(tokenizer: Any, text: str) -> None:
    ids = tokenizer.encode(text)
    streamed, _ = stream_all(tokenizer.decode, ids)
    assert streamed == tokenizer.decode(ids) == text


def test_every_byte_split_of_emoji_decodes_exactly(tokenizer: Any) -> None:
    # Token ids of single bytes: a 4-byte emoji fed one byte token at a time, amid ordinary text.
    hf = tokenizer._tok
    byte_ids = [
        hf.convert_tokens_to_ids(t)
        for t in hf.convert_ids_to_tokens(hf.encode("😀", add_special_tokens=False))
    ]
    assert len(byte_ids) >= 2  # the emoji is split across tokens
    ids = tokenizer.encode("a") + byte_ids + tokenizer.encode(" b") + byte_ids + byte_ids
    pieces = []
    ts = TextStream(tokenizer.decode)
    for i in ids:
        pieces.append(ts.feed(i))
        assert "\ufffd" not in pieces[-1]  # never half a character
    pieces.append(ts.flush())
    assert "".join(pieces) == tokenizer.decode(ids) == "a😀 b😀😀"


def test_random_token_streams_equal_the_full_decode(tokenizer: Any) -> None:
    # Random ids include byte tokens that never complete a character: the end still equals decode(all).
    rng = random.Random(0)
    for _ in range(30):
        ids = [rng.randrange(tokenizer.vocab_size) for _ in range(rng.randrange(1, 60))]
        streamed, _ = stream_all(tokenizer.decode, ids)
        assert streamed == tokenizer.decode(ids), ids


@pytest.mark.parametrize("stop", ["Paris", "capital of", "😀", "テ"])
def test_stop_strings_cut_the_real_text(tokenizer: Any, stop: str) -> None:
    text = TEXTS[0] + " " + TEXTS[1] + " " + TEXTS[2]
    streamed, ts = stream_all(tokenizer.decode, tokenizer.encode(text), (stop,))
    assert ts.stopped
    assert streamed == text[: text.index(stop)] == ts.text


def test_decoding_work_is_linear_in_the_stream_length(tokenizer: Any) -> None:
    """Honest linearity without a clock: count the ids handed to decode per token fed. A re-decode of the
    whole output would hand n(n+1)/2 ids for n tokens; the windowed decoder hands a constant per token."""
    text = (" ".join(TEXTS) + " ") * 40
    ids = tokenizer.encode(text)
    assert len(ids) > 2000
    decoded_ids = [0]

    def counting_decode(window: Sequence[int]) -> str:
        decoded_ids[0] += len(window)
        return str(tokenizer.decode(window))

    streamed, _ = stream_all(counting_decode, ids, ("never appears",))
    assert streamed == text
    assert decoded_ids[0] <= 8 * len(ids)  # vs ~n^2/2 = over 2 million before
