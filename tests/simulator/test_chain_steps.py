"""BRL's chain steps in the simulator (SimConfig.pipeline_depth): a chain's ready queries go out together
(decodes in one step, prompts in another), at most `depth` steps of each kind of a chain in flight, a
step's slot free once all of it is back."""

from __future__ import annotations

from pathlib import Path

import pytest

from planner.errors import InvalidInput
from simulator.chain_steps import ChainSteps
from simulator.engine import EventLoop
from simulator.request import Query
from simulator.run import SimConfig, simulate
from tests.simulator.fleets import chain, profiles, toy_model


def queries(n: int, route: tuple) -> list[Query]:
    out = []
    for i in range(n):
        q = Query(i + 1, 4, 8, 0.0)
        q.route = route
        out.append(q)
    return out


def recorder() -> tuple[EventLoop, list[list[int]], ChainSteps]:
    loop = EventLoop()
    launched: list[list[int]] = []
    steps = ChainSteps(loop, 2, send=lambda batch, now: launched.append([q.qid for q in batch]))
    return loop, launched, steps


def test_queries_ready_in_one_instant_go_out_as_one_step() -> None:
    loop, launched, steps = recorder()
    for q in queries(3, ("a0", "a1")):
        steps.ready(q)
    loop.run()
    assert launched == [[1, 2, 3]]


def test_at_most_depth_steps_of_a_chain_are_in_flight_and_a_slot_frees_when_its_step_is_all_back() -> None:
    loop, launched, steps = recorder()
    a, b, c, d = queries(4, ("a0", "a1"))
    other = queries(1, ("b0", "b1"))[0]
    other.qid = 9
    for q in (a, b):
        steps.ready(q)
        loop.run()  # each in an instant of its own: two steps
    steps.ready(c)
    steps.ready(other)  # another chain has slots of its own
    loop.run()
    assert launched == [[1], [2], [9]]
    steps.done(a)  # a's step is all back: c goes out
    loop.run()
    assert launched[-1] == [3]
    steps.ready(d)
    steps.done(a)  # twice changes nothing: a is in no step now
    loop.run()
    assert launched[-1] == [3]
    steps.done(c)
    loop.run()
    assert launched[-1] == [4]


def test_a_step_frees_its_slot_only_when_its_last_query_is_back() -> None:
    loop, launched, steps = recorder()
    a, b, c, d, e = queries(5, ("a0", "a1"))
    for q in (a, b):
        steps.ready(q)
    loop.run()
    steps.ready(c)
    loop.run()
    steps.ready(d)
    loop.run()
    assert launched == [[1, 2], [3]]  # two steps in flight: d waits
    steps.done(a)
    loop.run()
    assert launched == [[1, 2], [3]]  # b is still out
    steps.done(b)
    steps.ready(e)
    loop.run()
    assert launched[-1] == [4, 5]


def test_prompts_and_decodes_go_out_in_steps_of_their_own_each_kind_with_its_own_depth() -> None:
    loop, launched, steps = recorder()
    a, b, c, d, e = queries(5, ("a0", "a1"))
    for q in (a, b, c):
        q.advance()  # decoding
    for q in (a, d, b, e):
        steps.ready(q)
    loop.run()
    # One instant, two steps: the decodes together, the prompts together.
    assert launched == [[1, 2], [4, 5]]
    steps.ready(c)
    loop.run()
    assert launched[-1] == [3]  # the second decode slot of depth 2
    steps.done(d)
    steps.done(e)  # the prompt step is back: both decode slots are still taken
    d.advance()
    steps.ready(d)
    loop.run()
    assert launched[-1] == [3]
    steps.done(c)
    loop.run()
    assert launched[-1] == [4]


def closed_loop(tmp_path: Path, depth: int | None, *, hops: int, clients: int) -> dict[str, float]:
    """Tokens per step at every node of a chain under a closed loop of one-token prompts."""
    lengths = tmp_path / "lengths.csv"
    lengths.write_text("input_len,output_len\n1,60\n")
    cluster, plan = chain(0.001, hops=hops)
    cfg = SimConfig(
        fixed_concurrency=True,
        lengths=str(lengths),
        initial_queries=clients,
        duration_s=120.0,
        warmup_s=20.0,
        load_time_s=0.0,
        expected_output_len=60,
        watch_interval_s=0,
        pipeline_depth=depth,
    )
    r = simulate(cluster, toy_model(), profiles(), plan, cfg)
    return {n: (v["decode_seqs"] + v["prompt_tokens"]) / v["steps"] for n, v in r.nodes.items()}


@pytest.mark.parametrize("depth", [1, 2])
def test_a_one_stage_chain_steps_every_client_together(tmp_path: Path, depth: int) -> None:
    # At depth 2 too: one step per stage at most, as the live runner. A new prompt goes in a step of its own
    # (one prompt step per client per 60 decode steps: at most (360 + 6) / 66 = 5.5 tokens a step).
    per_step = closed_loop(tmp_path, depth, hops=1, clients=6)
    assert min(per_step.values()) > 5.0
    # Queries issued one by one, as the paper's coordinator does: an idle node starts on the first.
    alone = closed_loop(tmp_path, None, hops=1, clients=6)
    assert max(alone.values()) < 4.5


def test_two_steps_in_flight_on_a_long_chain_keep_every_stage_busy(tmp_path: Path) -> None:
    one = closed_loop(tmp_path, 1, hops=4, clients=8)
    two = closed_loop(tmp_path, 2, hops=4, clients=8)
    # With one step in flight, a 4-stage chain runs one stage at a time, all 8 decoding together (new
    # prompts in steps of their own: at most (480 + 8) / 68 = 7.2 tokens a step); with two, the clients
    # split between two steps that overlap.
    assert min(one.values()) > 6.5
    assert 3.0 < min(two.values()) and max(two.values()) < 5.0


def test_the_depth_must_be_at_least_one() -> None:
    with pytest.raises(InvalidInput) as err:
        SimConfig(pipeline_depth=0)
    assert err.value.field == "pipeline_depth"
    with pytest.raises(ValueError):
        ChainSteps(EventLoop(), 0)
