"""What a real deployment adds to the profiles' compute, as the simulator models it: the lone decode read
at bs=1 when measured, the LM head on last hops, a throttle, shared hosts and the coordinator's turns."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from planner.errors import InvalidInput
from planner.placement import LayerRange
from planner.profile import LatencyTable, ProfileSet
from simulator.engine import EventLoop
from simulator.host import HostSpec, SimHost
from simulator.request import Query
from simulator.run import SimConfig, SimResult, simulate
from simulator.worker import SimWorker
from tests.simulator.fleets import chain, profiles, toy_model
from tests.simulator.test_worker import ACT, cpu_s, decode

HEAD = LatencyTable(((0.0, 0.0), (1.0, 4.0), (4.0, 10.0)))


def worker(
    *,
    decode_table: LatencyTable | None = None,
    head: LatencyTable | None = None,
    speed: float = 1.0,
    host: SimHost | None = None,
    loop: EventLoop | None = None,
    entries: tuple[int, ...] = (),
) -> tuple[EventLoop, SimWorker, list[tuple[int, float]]]:
    loop = loop or EventLoop()
    prof = profiles().get("T4")
    if decode_table is not None:
        prof = replace(prof, decode=decode_table)
    out: list[tuple[int, float]] = []
    w = SimWorker(
        "w",
        LayerRange(0, 2),
        prof,
        loop,
        entry_layers=entries,
        activation_bytes_per_token=ACT,
        kv_capacity=10**9,
        depart=lambda q, t: out.append((q.qid, t)),
        head=head,
        speed=speed,
        host=host,
    )
    return loop, w, out


def test_a_measured_bs1_point_prices_the_lone_decode() -> None:
    table = LatencyTable(((0.0, 0.0), (1.0, 3.0), (2.0, 5.0), (8.0, 9.0)))
    loop, w, out = worker(decode_table=table)
    w.arrive(0.0, decode(1), 0)
    loop.run()
    assert out[0][1] == pytest.approx(2 * 3.0e-3 + cpu_s(1))  # not the bs=2 time the paper charges


def test_the_lm_head_is_paid_per_sampled_sequence_on_the_last_segment_only() -> None:
    loop, w, out = worker(head=HEAD)
    prof = profiles().get("T4")
    w.arrive(0.0, decode(1), 0)
    w.arrive(0.0, decode(2), 0)
    loop.run()
    step = 2 * prof.decode_s_per_layer(2) + cpu_s(2)
    assert out[0][1] == pytest.approx(step + HEAD.seconds(2))
    # A worker entered at layer 1 too runs [0,1) and [1,2) as two segments: only the second samples.
    loop, w, out = worker(head=HEAD, entries=(1,))
    w.arrive(0.0, Query(3, 50, 5, 0.0), 0)
    loop.run()
    prompt_layer = prof.prompt_s_per_layer(50)
    assert out[0][1] == pytest.approx(2 * prompt_layer + cpu_s(50) + HEAD.seconds(1))


def test_a_throttle_stretches_the_step_and_contention_is_stretched_with_it() -> None:
    prof = profiles().get("T4")
    step = 2 * prof.decode_s_per_layer(2) + cpu_s(1)
    loop, w, out = worker(speed=0.25)
    w.arrive(0.0, decode(1), 0)
    loop.run()
    assert out[0][1] == pytest.approx(step / 0.25)
    assert w.busy_s == pytest.approx(step / 0.25)
    # On one core beside a job as long as its compute, the compute takes twice as long, and so does the
    # sleep that follows it (it is the measured compute time x (1/F - 1)).
    loop = EventLoop()
    host = SimHost(HostSpec("h", 1.0), loop)
    loop, w, out = worker(speed=0.25, host=host, loop=loop)
    host.run(step, lambda: None)
    w.arrive(0.0, decode(1), 0)
    loop.run()
    assert out[0][1] == pytest.approx(2 * step / 0.25)


def _sim(profile_set: ProfileSet | None = None, **kw: Any) -> SimResult:
    cluster, plan = chain(0.001, hops=2)
    cfg = SimConfig(
        mode="online", duration_s=60, target_tok_per_s=40, load_time_s=0.0, watch_interval_s=0.0, **kw
    )
    return simulate(cluster, toy_model(), profile_set or profiles(), plan, cfg)


def test_the_coordinators_turns_add_to_every_iteration() -> None:
    base = _sim()
    turns = _sim(coordinator_cpu_s_per_iteration=0.05)
    assert turns.finished == base.finished > 0
    # Light load: each token waits about one turn more (more when turns queue behind each other).
    assert turns.decode_latency_s.p50 == pytest.approx(base.decode_latency_s.p50 + 0.05, rel=1e-3)
    assert turns.prompt_latency_s.mean >= base.prompt_latency_s.mean + 0.05 * 0.999


def test_a_shared_host_slows_the_fleet_only_when_it_is_short_of_cores() -> None:
    base = _sim()
    roomy = _sim(hosts=(HostSpec("big", 4.0, ("n0", "n1"), coordinator=True),))
    tight = _sim(hosts=(HostSpec("small", 1.0, ("n0", "n1"), background=1.0),))
    assert roomy.decode_latency_s.mean == pytest.approx(base.decode_latency_s.mean)
    assert tight.decode_latency_s.mean > 1.5 * base.decode_latency_s.mean


def test_online_runs_end_when_the_last_query_finishes() -> None:
    r = _sim()
    assert r.finished == r.admitted > 0
    assert r.end_s == pytest.approx(max(r.last_finish_s, r.start_s + 60.0))
    assert all(0 < n["utilisation"] <= 1 for n in r.nodes.values())


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"throttle": {"nope": 0.5}}, "throttle"),
        ({"throttle": {"n0": 1.5}}, "throttle"),
        ({"throttle": {"n0": 0.0}}, "throttle"),
        ({"hosts": (HostSpec("h", 2.0, ("n0", "ghost")),)}, "hosts"),
        ({"hosts": (HostSpec("h", 2.0, ("n0",)), HostSpec("g", 2.0, ("n0",)))}, "hosts"),
        ({"hosts": (HostSpec("h", 2.0, coordinator=True), HostSpec("g", 2.0, coordinator=True))}, "hosts"),
        ({"coordinator_cpu_s_per_iteration": -1.0}, "coordinator_cpu_s_per_iteration"),
    ],
)
def test_bad_deployment_inputs_name_the_field(kw: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidInput) as err:
        _sim(**kw)
    assert err.value.field == field


def test_a_profile_with_a_head_is_charged_where_the_model_ends() -> None:
    plain = profiles()
    headed = ProfileSet(plain.model_name, {t: replace(p, lm_head=HEAD) for t, p in plain.by_gpu.items()})
    a, b = _sim(plain), _sim(headed)
    assert a.finished == b.finished > 0
    # n1 holds layer 8 of 8 and pays the head; n0 does not.
    assert b.nodes["n0"]["busy_s"] == pytest.approx(a.nodes["n0"]["busy_s"])
    assert b.nodes["n1"]["busy_s"] > a.nodes["n1"]["busy_s"]


def test_step_overhead_is_paid_once_per_step_whatever_the_batch() -> None:
    prof = profiles().get("T4")
    loop, w, out = worker()
    w.step_overhead_s = 0.004
    w.arrive(0.0, decode(1), 0)
    w.arrive(0.0, decode(2), 0)
    loop.run()
    assert out[0][1] == pytest.approx(2 * prof.decode_s_per_layer(2) + cpu_s(2) + 0.004)
    base = _sim()
    slow = _sim(step_overhead_s={"n0": 0.01, "n1": 0.01})
    assert slow.decode_latency_s.p50 == pytest.approx(base.decode_latency_s.p50 + 0.02, abs=1e-3)
    with pytest.raises(InvalidInput) as err:
        _sim(step_overhead_s={"ghost": 0.01})
    assert err.value.field == "step_overhead_s"
    with pytest.raises(InvalidInput) as err:
        _sim(step_overhead_s={"n0": -1.0})
    assert err.value.field == "step_overhead_s"
