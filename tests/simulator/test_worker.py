import pytest

from planner.placement import LayerRange
from simulator.engine import EventLoop
from simulator.request import Query
from simulator.worker import CPU_CONCAT_BYTES_PER_S, CPU_COPY_BYTES_PER_S, SimWorker
from tests.simulator.fleets import profiles

ACT = 16384


def make(gpu: str = "T4", layers: LayerRange | None = None, entries: tuple[int, ...] = ()):
    layers = layers or LayerRange(0, 2)
    loop = EventLoop()
    out: list[tuple[int, float]] = []
    w = SimWorker(
        "w",
        layers,
        profiles().get(gpu),
        loop,
        entry_layers=entries,
        activation_bytes_per_token=ACT,
        kv_capacity=10**9,
        depart=lambda q, t: out.append((q.qid, t)),
    )
    return loop, w, out


def decode(qid: int, context: int = 100) -> Query:
    q = Query(qid, context, 10, 0.0)
    q.advance()
    return q


def cpu_s(tokens: int) -> float:
    return tokens * ACT * (1 / CPU_CONCAT_BYTES_PER_S + 1 / CPU_COPY_BYTES_PER_S)


def test_step_time_is_layers_times_profile_plus_first_layer_cpu() -> None:
    loop, w, out = make()
    prof = profiles().get("T4")
    w.arrive(0.0, Query(1, 600, 5, 0.0), 0)
    loop.run()
    expected = 2 * prof.prompt_s_per_layer(600) + cpu_s(600)
    assert out == [(1, pytest.approx(expected))]
    assert w.kv_real == 2 * 600


def test_a_lone_decode_costs_the_two_sequence_time() -> None:
    loop, w, out = make()
    prof = profiles().get("T4")
    w.arrive(0.0, decode(1), 0)
    loop.run()
    assert out[0][1] == pytest.approx(2 * prof.decode_s_per_layer(2) + cpu_s(1))


def test_prompt_request_limit_leaves_the_second_prompt_for_the_next_round() -> None:
    loop, w, out = make()  # T4: one prompt per batch
    w.arrive(0.0, Query(1, 500, 5, 0.0), 0)
    w.arrive(0.0, Query(2, 500, 5, 0.0), 0)
    w.arrive(0.0, decode(3), 0)
    loop.run()
    # The decode rides with the first prompt; the second prompt waits for the wrap-around.
    assert [q for q, _ in out] == [1, 3, 2]
    assert out[0][1] == out[1][1] < out[2][1]
    assert w.steps == 2


def test_decode_sequence_and_context_limits() -> None:
    loop, w, out = make()
    limit = w.decode_max_seqs
    for i in range(limit + 5):
        w.arrive(0.0, decode(i), 0)
    loop.run()
    first = [t for _, t in out if t == out[0][1]]
    assert len(first) == limit and w.steps == 2
    loop, w, out = make()
    ctx = w.decode_max_context // 2 + 1
    for i in range(3):
        w.arrive(0.0, decode(i, ctx), 0)
    loop.run()
    assert w.steps == 3  # each pair would exceed the context budget


def test_arrivals_join_only_when_the_pointer_wraps() -> None:
    loop, w, out = make(layers=LayerRange(0, 4))
    w.arrive(0.0, decode(1), 0)
    w.arrive(0.001, decode(2), 0)  # arrives while the first batch is running
    loop.run()
    assert out[0][0] == 1 and out[1][0] == 2 and out[1][1] > out[0][1]
    assert w.steps == 2


def test_partial_entry_layer_runs_only_the_upper_layers() -> None:
    loop, w, out = make(layers=LayerRange(0, 4), entries=(2,))
    prof = profiles().get("T4")
    w.arrive(0.0, decode(1), 1)  # enters at layer 2
    loop.run()
    assert out[0][1] == pytest.approx(2 * prof.decode_s_per_layer(2))
    assert w.kv_real == 2


def test_a_worker_entered_partway_counts_each_query_once() -> None:
    # [0,2) entered at 0 and at 1 runs two segment events per step; its reports count the step once.
    loop, w, out = make(entries=(1,))
    w.arrive(0.0, Query(1, 300, 5, 0.0), 0)
    w.arrive(0.0, decode(2), 1)
    loop.run()
    assert {qid for qid, _ in out} == {1, 2}
    assert w.prompt_tokens == 300 and w.decode_seqs == 1
