"""The chain runner: which tokens of which requests go into a step (decodes always, prompt chunks within the
budget), the flags it sets on them, pipelining up to the depth, and failed steps turned into results."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from typing import cast

import pytest

from planner.placement import LayerRange
from planner.routing import Hop
from services.coordinator.chain_runner import ChainKey, ChainRunner, select
from services.coordinator.engine import Engine, EngineLimits
from services.coordinator.request import GenParams, Request
from services.worker.client import StepInput
from services.worker.records import UNAVAILABLE, TokenResult

pytestmark = pytest.mark.anyio

CHAIN = (Hop("a", LayerRange(0, 2)), Hop("b", LayerRange(2, 4)))
KEY: ChainKey = (("a", "fake:a", 0, 2), ("b", "fake:b", 2, 4))


def prompt_request(rid: str, prompt: list[int], max_tokens: int = 8) -> Request:
    return Request(rid, list(prompt), GenParams(max_tokens=max_tokens), arrival_s=0.0, pending=list(prompt))


def decoding_request(rid: str, prompt: list[int], generated: list[int]) -> Request:
    r = prompt_request(rid, prompt)
    r.generated = list(generated)
    r.cached = len(prompt) + len(generated) - 1
    r.pending = [generated[-1]]
    return r


def test_select_sends_every_decode_whatever_the_budget() -> None:
    decodes = [decoding_request(f"d{i}", [1, 2], [3]) for i in range(5)]
    batch, prompts = select(decodes, budget=2)
    assert [b[0] for b in batch] == decodes and prompts == []
    assert all(tokens == r.pending and last for r, tokens, last in batch)


def test_select_puts_decodes_and_prompt_chunks_in_separate_steps() -> None:
    long = prompt_request("long", list(range(10)))
    short = prompt_request("short", [1, 2, 3])
    dec = decoding_request("dec", [4, 5], [6])
    budget = 7
    decodes, prompts = select([long, dec, short], budget)
    # A decode never rides with a prompt: it would pay the prompt's compute at every stage.
    assert [b[0].id for b in decodes] == ["dec"]
    # Prompts in arrival order until the budget is spent.
    assert [b[0].id for b in prompts] == ["long"]
    assert prompts[0][1] == long.pending[:budget]
    assert prompts[0][2] is False  # more of this prompt is still to come
    assert sum(len(t) for _, t, _ in prompts) <= budget


def test_select_fits_several_prompts_and_marks_the_last_chunk() -> None:
    first = prompt_request("p1", [1, 2, 3])
    second = prompt_request("p2", [4, 5, 6, 7])
    decodes, prompts = select([first, second], budget=5)
    assert decodes == []
    assert [(r.id, t, last) for r, t, last in prompts] == [
        ("p1", first.pending, True),
        ("p2", second.pending[:2], False),
    ]


@dataclass
class StubEngine:
    """Just what a ChainRunner calls on its engine; records each step it hands back."""

    limits: EngineLimits
    steps: list[tuple[list[StepInput], list[TokenResult]]] = field(default_factory=list)
    done: list[ChainRunner] = field(default_factory=list)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    stepped: asyncio.Event = field(default_factory=asyncio.Event)

    def clock(self) -> float:
        return asyncio.get_running_loop().time()

    def _spawn(self, coro: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def _on_step(
        self,
        runner: ChainRunner,
        reqs: list[Request],
        items: list[StepInput],
        results: list[TokenResult],
        epochs: list[int],
        step_s: float,
    ) -> None:
        self.steps.append((items, results))
        self.stepped.set()

    def _runner_done(self, runner: ChainRunner) -> None:
        self.done.append(runner)


@dataclass
class SlowChain:
    """Answers every step after a pause; counts how many steps were in flight at once."""

    delay_s: float = 0.02
    fail: bool = False
    inflight: int = 0
    peak: int = 0

    async def step(self, items: Sequence[StepInput]) -> list[TokenResult]:
        self.inflight += 1
        self.peak = max(self.peak, self.inflight)
        try:
            await asyncio.sleep(self.delay_s)
            if self.fail:
                raise OSError("connection reset")
            return [TokenResult(i.request_id, token_id=None if i.skip_sample else 9) for i in items]
        finally:
            self.inflight -= 1

    async def abort(self, request_ids: Sequence[str]) -> None:
        return None


def make_runner(limits: EngineLimits, client: SlowChain) -> tuple[StubEngine, ChainRunner]:
    stub = StubEngine(limits)
    return stub, ChainRunner(cast(Engine, stub), KEY, CHAIN, client)


async def wait_steps(stub: StubEngine, n: int) -> None:
    async with asyncio.timeout(5.0):
        while len(stub.steps) < n:
            stub.stepped.clear()
            await stub.stepped.wait()


async def test_runner_sends_prompt_chunks_with_positions_and_flags() -> None:
    stub, runner = make_runner(EngineLimits(max_batch_tokens=3, pipeline_depth=1), SlowChain(delay_s=0.0))
    r = prompt_request("r", [1, 2, 3, 4, 5], max_tokens=1)
    runner.add(r)
    await wait_steps(stub, 1)
    (item,), (res,) = stub.steps[0]
    assert (item.request_id, list(item.token_ids), item.position) == ("r", r.prompt[:3], 0)
    assert item.skip_sample and not item.finish  # a middle chunk samples nothing and frees nothing
    assert res.ok
    # The engine applies results, not the runner: mimic it so the next chunk goes out.
    r.cached, r.pending, r.in_flight = 3, r.pending[3:], False
    runner.wake.set()
    await wait_steps(stub, 2)
    (item,), _ = stub.steps[1]
    assert (list(item.token_ids), item.position) == (r.prompt[3:], 3)
    # The last chunk samples the one allowed token, so it also frees the KV on the way.
    assert not item.skip_sample and item.finish
    runner.remove(r)
    await asyncio.wait_for(runner.task, 5.0)
    assert stub.done == [runner]


@pytest.mark.parametrize("depth", [1, 2])
async def test_runner_keeps_up_to_depth_steps_in_flight(depth: int) -> None:
    client = SlowChain(delay_s=0.05)
    stub, runner = make_runner(EngineLimits(max_batch_tokens=4, pipeline_depth=depth), client)
    for i in range(3):
        runner.add(prompt_request(f"r{i}", [1, 2, 3, 4]))
    await wait_steps(stub, 3)
    assert client.peak == depth
    for r in list(runner.requests.values()):
        runner.remove(r)
    await asyncio.wait_for(runner.task, 5.0)


async def peak_of_prompts(limits: EngineLimits, key: ChainKey, chain: tuple[Hop, ...], n: int) -> ChainRunner:
    """Steps `n` four-token prompts (one a step at a budget of 4) over `chain`; the runner, with
    `runner.client.peak` the most steps it had in flight at once."""
    client = SlowChain(delay_s=0.05)
    stub = StubEngine(limits)
    runner = ChainRunner(cast(Engine, stub), key, chain, client)
    for i in range(n):
        runner.add(prompt_request(f"r{i}", [1, 2, 3, 4]))
    await wait_steps(stub, n)
    for r in list(runner.requests.values()):
        runner.remove(r)
    await asyncio.wait_for(runner.task, 5.0)
    return runner


async def test_a_one_stage_chain_keeps_one_step_in_flight_whatever_the_depth() -> None:
    """A second step would only queue at the one worker and run as a step of its own."""
    runner = await peak_of_prompts(EngineLimits(max_batch_tokens=4, pipeline_depth=2), KEY[:1], CHAIN[:1], 3)
    assert runner.depth == 1 and cast(SlowChain, runner.client).peak == 1


async def test_a_prompt_goes_out_beside_a_decode_step_never_in_it() -> None:
    """Each kind has the depth to itself: at depth 1 a decode step and a prompt step fly at once."""
    client = SlowChain(delay_s=0.05)
    stub, runner = make_runner(EngineLimits(max_batch_tokens=8, pipeline_depth=1), client)
    dec = decoding_request("d", [1, 2], [3])
    new = prompt_request("p", [4, 5, 6])
    runner.add(dec)
    runner.add(new)
    await wait_steps(stub, 2)
    sent = sorted([i.request_id for i in items] for items, _ in stub.steps)
    assert sent == sorted([[dec.wire_id], [new.wire_id]])
    assert client.peak == 2
    for r in (dec, new):
        runner.remove(r)
    await asyncio.wait_for(runner.task, 5.0)


async def test_the_default_depth_keeps_one_step_per_stage_in_flight() -> None:
    """A fixed depth below the stage count would leave the later stages idle (a 10-stage chain at depth 2
    ran 15% busy, simulated); the default fills every stage."""
    three = (*CHAIN, Hop("c", LayerRange(4, 6)))
    runner = await peak_of_prompts(EngineLimits(max_batch_tokens=4), (*KEY, ("c", "fake:c", 4, 6)), three, 4)
    assert runner.depth == 3 and cast(SlowChain, runner.client).peak == 3


async def test_a_step_that_raises_becomes_unavailable_results() -> None:
    stub, runner = make_runner(EngineLimits(), SlowChain(delay_s=0.0, fail=True))
    reqs = [prompt_request(f"r{i}", [i + 1, 2]) for i in range(2)]
    for r in reqs:
        runner.add(r)
    await wait_steps(stub, 1)
    items, results = stub.steps[0]
    assert [res.request_id for res in results] == [i.request_id for i in items] == ["r0", "r1"]
    assert all(res.code == UNAVAILABLE and "connection reset" in res.error for res in results)
    for r in reqs:
        runner.remove(r)
    await asyncio.wait_for(runner.task, 5.0)
