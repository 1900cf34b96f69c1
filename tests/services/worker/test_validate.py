"""Segment checks: every refusal names what is wrong; valid segments pass."""

from __future__ import annotations

import pytest

from services.worker.backends.base import ModelShape
from services.worker.records import HopAddress, Sampling, Segment, WireTensor
from services.worker.validate import Cached, check_segment

SHAPE = ModelShape(
    num_layers=6, hidden_size=4, vocab_size=10, num_heads=2, num_kv_heads=1, head_dim=2, max_positions=64
)
HELD = (2, 6)
NEXT = (HopAddress("h:1", 4, 6),)


def _hidden(n: int = 1, width: int = 4, dtype: str = "float32") -> WireTensor:
    return WireTensor(b"\0" * (n * width * 4), dtype, (n, width))


def _seg(**kw: object) -> Segment:
    base: dict[str, object] = dict(
        request_id="r", start_layer=2, end_layer=4, position=0, num_tokens=1, hidden=_hidden(), route=NEXT
    )
    base.update(kw)
    return Segment(**base)  # type: ignore[arg-type]


def test_valid_new_and_cached_segments_pass() -> None:
    assert check_segment(_seg(), SHAPE, HELD, "float32", None) is None
    assert check_segment(_seg(position=5), SHAPE, HELD, "float32", Cached(2, 4, 5)) is None
    last = _seg(start_layer=4, end_layer=6, route=(), sampling=Sampling(temperature=0.5))
    assert check_segment(last, SHAPE, HELD, "float32", None) is None


@pytest.mark.parametrize(
    ("segment", "cached", "code", "words"),
    [
        (_seg(position=3), None, "not_found", "unknown request"),
        (_seg(start_layer=0, end_layer=2), None, "failed_precondition", "not within"),
        (
            _seg(end_layer=5, route=(HopAddress("h:1", 5, 6),)),
            Cached(2, 4, 0),
            "failed_precondition",
            "runs layers",
        ),
        (_seg(position=2), Cached(2, 4, 5), "failed_precondition", "5 tokens cached"),
        (_seg(hidden=_hidden(width=3)), None, "invalid_argument", "shape"),
        (_seg(hidden=_hidden(dtype="bfloat16")), None, "invalid_argument", "dtype"),
        (_seg(hidden=WireTensor(b"\0" * 3, "float32", (1, 4))), None, "invalid_argument", "bytes"),
        (_seg(hidden=None), None, "invalid_argument", "needs a hidden state"),
        (_seg(num_tokens=0), None, "invalid_argument", "num_tokens"),
        (_seg(route=()), None, "invalid_argument", "no next hop"),
        (_seg(route=(HopAddress("h:1", 5, 6),)), None, "invalid_argument", "must start at layer 4"),
        (
            _seg(start_layer=4, end_layer=6, route=(), sampling=Sampling(top_p=0)),
            None,
            "invalid_argument",
            "top_p",
        ),
        (_seg(position=64), None, "invalid_argument", "exceed"),
        (_seg(request_id=""), None, "invalid_argument", "request_id"),
    ],
)
def test_refusals(segment: Segment, cached: Cached | None, code: str, words: str) -> None:
    refusal = check_segment(segment, SHAPE, HELD, "float32", cached)
    assert refusal is not None
    assert refusal.code == code
    assert words in refusal.message


def test_token_ids_checked_on_a_first_hop() -> None:
    seg = Segment("r", 0, 2, 0, 2, token_ids=(1, 99), route=(HopAddress("h", 2, 6),))
    refusal = check_segment(seg, SHAPE, (0, 6), "float32", None)
    assert refusal is not None and "token ids" in refusal.message
    short = Segment("r", 0, 2, 0, 3, token_ids=(1, 2), route=(HopAddress("h", 2, 6),))
    refusal = check_segment(short, SHAPE, (0, 6), "float32", None)
    assert refusal is not None and "num_tokens 3" in refusal.message
