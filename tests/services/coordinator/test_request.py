"""A request's wire id per attempt, what it asks the router for after tokens came back, its request-log
record, and the Handle's token stream."""

from __future__ import annotations

import pytest

from planner.errors import Unavailable
from services.coordinator.request import Finished, GenParams, Handle, Request

pytestmark = pytest.mark.anyio


def make(prompt: list[int], max_tokens: int) -> Request:
    return Request("r1", list(prompt), GenParams(max_tokens=max_tokens), arrival_s=10.0, pending=list(prompt))


def test_each_attempt_gets_a_fresh_wire_id() -> None:
    r = make([1, 2], 4)
    seen = set()
    for _ in range(3):
        assert r.wire_id.startswith(r.id) and r.wire_id not in seen
        seen.add(r.wire_id)
        r.epoch += 1


def test_route_request_counts_the_tokens_already_generated() -> None:
    prompt, max_tokens = [1, 2, 3], 10
    r = make(prompt, max_tokens)
    r.generated = [4, 5, 6, 7]
    rr = r.route_request()
    assert rr.input_len == len(prompt) + len(r.generated)
    assert rr.expected_output_len == max_tokens - len(r.generated)
    r.generated = list(range(max_tokens + 2))
    assert r.route_request().expected_output_len == 0


def test_log_record_derives_latencies_from_the_token_times() -> None:
    r = make([1, 2, 3], 8)
    r.generated = [5, 6, 7, 8]
    r.first_token_s, r.last_token_s = 10.5, 11.1
    r.routes = [["a[0,2)", "b[2,4)"], ["a[0,2)", "c[2,4)"]]
    rec = r.log_record(now=12.0, error=None)
    assert rec["ttft_s"] == pytest.approx(r.first_token_s - r.arrival_s)
    assert rec["decode_latency_s"] == pytest.approx(
        (r.last_token_s - r.first_token_s) / (len(r.generated) - 1)
    )
    assert rec["e2e_s"] == pytest.approx(12.0 - r.arrival_s)
    assert (rec["input_len"], rec["output_len"]) == (len(r.prompt), len(r.generated))
    assert rec["route"] == r.routes[-1] and rec["routes"] == len(r.routes)


def test_log_record_without_tokens_has_no_latencies() -> None:
    rec = make([1], 4).log_record(now=11.0, error="boom")
    assert rec["ttft_s"] is None and rec["decode_latency_s"] is None
    assert rec["error"] == "boom" and rec["route"] is None


class CancelRecorder:
    def __init__(self) -> None:
        self.cancelled: list[tuple[Request, str]] = []

    def cancel(self, r: Request, reason: str = "cancelled") -> None:
        self.cancelled.append((r, reason))


async def test_handle_yields_tokens_until_finished_then_reads_usage() -> None:
    r = make([1, 2], 4)
    handle = Handle(CancelRecorder(), r)  # type: ignore[arg-type]
    for tok in (7, 8, 9):
        r.generated.append(tok)
        r.out.put_nowait(tok)
    r.finish_reason = "length"
    r.out.put_nowait(Finished("length"))
    assert [t async for t in handle.tokens()] == r.generated
    assert (handle.prompt_tokens, handle.completion_tokens, handle.finish_reason) == (2, 3, "length")


async def test_handle_raises_the_error_and_cancel_goes_to_the_engine() -> None:
    r = make([1], 4)
    engine = CancelRecorder()
    handle = Handle(engine, r)  # type: ignore[arg-type]
    r.out.put_nowait(5)
    r.out.put_nowait(Unavailable("gone"))
    got = []
    with pytest.raises(Unavailable, match="gone"):
        async for t in handle.tokens():
            got.append(t)
    assert got == [5]
    handle.cancel("stop")
    assert engine.cancelled == [(r, "stop")]
