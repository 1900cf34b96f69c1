"""The compiled engine (simulator/_fastcore.c) against the Python engine: the same run, bit for bit, on the
paper's fleets and on small fleets that reach every path of the model (partial overlaps, the LM head, step
overheads, warm starts, online arrivals, draining, the KV feedback, queue-reading policies); and where it
cannot run, a clear answer."""

from __future__ import annotations

import gc
import math
import shutil
from dataclasses import replace
from typing import Any

import pytest

from planner.cluster import SINK, SOURCE, Cluster, Link, Node
from planner.errors import InvalidInput, UnknownName
from planner.placement import LayerRange, Placement
from planner.plan import Plan
from planner.profile import LatencyTable, ProfileSet
from simulator import fast_engine, paper
from simulator.engine import EventLoop
from simulator.fast_engine import FastLoop
from simulator.host import HostSpec
from simulator.metrics import Metrics
from simulator.run import SimConfig, SimResult, simulate
from tests.simulator.fleets import diamond, profiles, toy_model

if not fast_engine.available() and shutil.which("cc") is None and shutil.which("gcc") is None:
    pytest.skip("no C compiler on this machine: the compiled engine cannot be built", allow_module_level=True)


def test_the_engine_is_built_where_a_compiler_is() -> None:
    # `make setup` builds it (setup.py); a missing or stale build would quietly run everything in Python.
    assert fast_engine.available(), fast_engine.unsupported(SimConfig(), _policy(), False)


def _policy() -> Any:
    from planner.routing.registry import make_policy

    cluster, plan = diamond()
    return make_policy("maxflow", plan, cluster)


def _both(cluster: Cluster, plan: Plan, cfg: SimConfig, prof: ProfileSet | None = None) -> SimResult:
    """Run `cfg` on both engines, assert the results are equal in every field, return one."""
    runs = []
    for engine in ("python", "compiled"):
        r = simulate(cluster, toy_model(), prof or profiles(), plan, replace(cfg, engine=engine))
        d = r.to_dict()
        assert d["config"].pop("engine") == engine
        runs.append((r, d))
    (py, a), (_, b) = runs
    assert [k for k in a if a[k] != b[k]] == []
    assert py.events > 0
    return py


def overlapping() -> tuple[Cluster, Plan]:
    """c [0,6) feeds b [4,8) partway (b queues at layers 4 and 6); a [0,4) feeds b at its start."""
    nodes = (Node("a", "A100"), Node("b", "L4"), Node("c", "T4"))
    edges = [(SOURCE, "a"), (SOURCE, "c"), ("a", "b"), ("c", "b"), ("b", SINK)]
    links = tuple(Link(u, v, 1e9, 0.002) for u, v in edges)
    placement = Placement(8, {"a": LayerRange(0, 4), "b": LayerRange(4, 8), "c": LayerRange(0, 6)})
    flows = {(SOURCE, "a"): 60.0, (SOURCE, "c"): 40.0, ("a", "b"): 60.0, ("c", "b"): 40.0, ("b", SINK): 100.0}
    return Cluster(nodes, links, name="overlap"), Plan(
        "overlap", "toy-8", "hand", placement, flows, objective_tok_per_s=100.0
    )


SHORT = SimConfig(duration_s=60, warmup_s=15, initial_queries=40)


@pytest.mark.parametrize(
    "cfg",
    [
        SHORT,
        replace(SHORT, policy="random"),
        replace(SHORT, policy="shortest-queue"),  # reads live queue lengths from the engine
        replace(SHORT, mode="online", target_tok_per_s=150.0, drain=True),
        replace(SHORT, warm_start=True),
        replace(SHORT, kv_correct_interval_s=2.0, watch_interval_s=5.0),
        replace(SHORT, step_overhead_s={"b": 0.003}, dead_end="rollback", fixed_concurrency=True),
        replace(SHORT, kv_capacity={"a": 300_000, "b": 150_000, "c": 90_000}, seed=3),
    ],
    ids=[
        "maxflow",
        "random",
        "shortest-queue",
        "online-drain",
        "warm",
        "kv-feedback",
        "overhead",
        "small-kv",
    ],
)
def test_both_engines_give_the_same_run(cfg: SimConfig) -> None:
    cluster, plan = overlapping()
    r = _both(cluster, plan, cfg)
    assert r.finished > 0
    # The overlap is exercised: b runs steps entered partway, so it has more steps than its last segment's.
    assert r.nodes["b"]["steps"] > 0 and r.nodes["c"]["steps"] > 0


def test_the_lm_head_and_a_measured_lone_decode_are_the_same_in_both() -> None:
    plain = profiles()
    head = LatencyTable(((0.0, 0.0), (1.0, 4.0), (4.0, 10.0)))
    headed = ProfileSet(
        plain.model_name,
        {
            t: replace(p, lm_head=head, decode=LatencyTable(((1.0, 9.0), *p.decode.points[1:])))
            for t, p in plain.by_gpu.items()
        },
    )
    cluster, plan = diamond()
    r = _both(cluster, plan, SHORT, headed)
    assert r.finished > 0


@pytest.mark.parametrize("setup", ["helix", "separate"])
def test_the_paper_fleets_run_the_same_in_both(setup: str) -> None:
    for run in paper.setup(setup, SimConfig(duration_s=120, warmup_s=30)):
        i = run.inputs
        cfg = replace(run.config, kv_capacity=i.kv_capacity)
        runs = [
            simulate(i.cluster, i.model, i.profiles, i.plan, replace(cfg, engine=e)).to_dict()
            for e in ("python", "compiled")
        ]
        for d in runs:
            d["config"].pop("engine")
        assert runs[0] == runs[1]
        assert runs[0]["decode_tok_per_s"] > 0


def test_auto_takes_python_where_the_compiled_engine_cannot_run() -> None:
    cluster, plan = diamond()
    # Swarm learns from every hop's time; hosts and throttles are real-deployment extras.
    for kw in ({"policy": "swarm"}, {"hosts": (HostSpec("h", 1.0, ("a", "b")),)}, {"throttle": {"a": 0.5}}):
        cfg = replace(SHORT, **kw)  # type: ignore[arg-type]
        auto = simulate(cluster, toy_model(), profiles(), plan, cfg)
        py = simulate(cluster, toy_model(), profiles(), plan, replace(cfg, engine="python"))
        assert auto.decode_tok_per_s == py.decode_tok_per_s and auto.events == py.events
        with pytest.raises(InvalidInput) as err:
            simulate(cluster, toy_model(), profiles(), plan, replace(cfg, engine="compiled"))
        assert err.value.field == "engine" and "cannot run" in str(err.value)


def test_an_unknown_engine_is_named() -> None:
    with pytest.raises(UnknownName) as err:
        SimConfig(engine="jit")
    assert err.value.field == "engine"


def test_an_event_before_the_clock_is_an_error_in_both_loops() -> None:
    ran: list[float] = []
    for loop in (EventLoop(10.0), FastLoop(10.0, Metrics(0.0, 100.0))):
        for bad in (5.0, math.nan):
            with pytest.raises(InvalidInput, match="before the clock"):
                loop.schedule(bad, ran.append, bad)
        loop.schedule(12.0, ran.append, 12.0)
        loop.schedule(11.0, ran.append, 11.0)
        loop.run(20.0)
        assert loop.now == 20.0 and loop.handled == 2
    assert ran == [11.0, 12.0, 11.0, 12.0]


def test_a_finished_run_leaves_nothing_behind() -> None:
    # The core holds the queries and callbacks that reach back to the loop holding it: a cycle the collector
    # must be able to see through the core, or every run would stay in memory.
    cluster, plan = overlapping()
    simulate(cluster, toy_model(), profiles(), plan, replace(SHORT, engine="compiled"))
    gc.collect()
    # (type(), not isinstance(): the heap holds objects whose __class__ warns when read)
    assert [o for o in gc.get_objects() if type(o) is FastLoop] == []
