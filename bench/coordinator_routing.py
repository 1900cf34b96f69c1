"""The routing half of bench/coordinator.py: max-flow decisions per CPU second with the KV book, and the time
to recompute flows after a node loss, each beside the code it replaced (measured in the same run, on the
same requests, with the same chains: the new code must decide exactly as the old one did)."""

from __future__ import annotations

import random
import statistics
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from planner import bundled
from planner.cluster import SOURCE, Cluster
from planner.flow import plan_from_placement
from planner.generate import single_region
from planner.model import ModelSpec
from planner.plan import Plan
from planner.profile import ProfileSet
from planner.routing import Chain, Hop, KVBook, RouteRequest, StaticView, make_policy, reflow_without
from planner.routing.base import RoutingView, next_layers
from planner.routing.maxflow import MaxFlowPolicy
from planner.solvers import solve

MODEL = "llama2-70b"
# The paper's 42-node "high heterogeneity" fleet; the 200-node one keeps its mix, scaled.
FLEET42 = {"A100": 4, "V100": 6, "L4": 8, "L4x2": 4, "T4": 10, "T4x2": 6, "T4x4": 4}
FLEET200 = {"A100": 19, "V100": 29, "L4": 38, "L4x2": 19, "T4": 47, "T4x2": 29, "T4x4": 19}
# KV per layer held (tokens) and requests in flight: enough pressure that some hops fail Fail-KV.
KV_TOKENS_PER_LAYER = 40_000
IN_FLIGHT = 256


@dataclass(frozen=True)
class Fleet:
    name: str
    cluster: Cluster
    plan: Plan


def fleets(names: tuple[str, ...], model: ModelSpec, profiles: ProfileSet) -> list[Fleet]:
    """cluster24 with the paper's ILP layout; generated fleets placed by the petals heuristic (seconds, where
    a MILP would take minutes: routing cost depends on the plan's shape, not its quality)."""
    out = []
    for name in names:
        if name == "nodes24":
            cluster = bundled.cluster("cluster24")
            placement = bundled.layout("ilp", cluster, model)
            plan = plan_from_placement(cluster, model, profiles, placement, method="ilp")
        else:
            counts = FLEET42 if name == "nodes42" else FLEET200
            cluster = single_region(counts, random.Random(0), name=f"fleet-{name}")
            plan = solve("petals", cluster, model, profiles, seed=0)
        out.append(Fleet(name, cluster, plan))
    return out


def requests(count: int, seed: int = 0) -> list[RouteRequest]:
    rng = random.Random(seed)
    return [RouteRequest(f"r{i}", rng.randint(16, 2048), rng.randint(16, 512)) for i in range(count)]


def new_book(plan: Plan) -> KVBook:
    ranges = plan.placement.ranges
    return KVBook({n: KV_TOKENS_PER_LAYER * r.size for n, r in ranges.items()}, ranges=ranges)


class BeforeMaxFlow(MaxFlowPolicy):
    """The max-flow walk as it was before this bench: every successor's masks tested at every hop
    (RoutingPolicy._hop_ok, next_layers), then Iwrr.choose over the admissible set; a dead end gives every
    charge back (`dead_end="rollback"`). Kept as the baseline."""

    def choose(self, request: RouteRequest, view: RoutingView) -> Chain | None:
        placement = self.plan.placement
        work = float(request.input_len)
        at = SOURCE
        hops: list[Hop] = []
        taken: list[tuple[str, str]] = []
        for _ in range(placement.num_layers + 1):
            table = self.iwrr.get(at)
            allowed: set[str] = set()
            layers_of = {}
            if table is not None:
                for nxt in table.names:
                    layers = next_layers(placement, at, nxt) if nxt != "sink" else None
                    if self._hop_ok(nxt, request, view, layers, check_kv=True):
                        allowed.add(nxt)
                        if layers is not None:
                            layers_of[nxt] = layers
            chosen = table.choose(work, allowed) if table is not None else None
            if chosen is None:
                break
            taken.append((at, chosen))
            if chosen == "sink":
                return tuple(hops)
            hops.append(Hop(chosen, layers_of[chosen]))
            at = chosen
        for src, dst in taken:
            self.iwrr[src].restore(dst, work)
        return None


def run_decisions(
    policy: MaxFlowPolicy, plan: Plan, reqs: list[RouteRequest]
) -> tuple[float, list[Chain | None]]:
    """CPU seconds for choose + charge of every request, and the chains (to compare policies). A steady
    state: at most IN_FLIGHT requests hold KV, and a refusal (Fail-KV) ends the oldest, as finishing
    requests make room in a real fleet."""
    book = new_book(plan)
    view = StaticView(kv=book)
    live: deque[str] = deque()
    chains: list[Chain | None] = []
    t0 = time.process_time()
    for r in reqs:
        chain = policy.choose(r, view)
        if chain is not None:
            book.charge(chain, r)
            live.append(r.request_id)
        if live and (chain is None or len(live) > IN_FLIGHT):
            book.release(live.popleft())
        chains.append(chain)
    return time.process_time() - t0, chains


def routing_figures(fleet: Fleet, count: int) -> dict[str, float]:
    reqs = requests(count)
    before_s, before = run_decisions(BeforeMaxFlow(fleet.plan, fleet.cluster), fleet.plan, reqs)
    # The old walk gives every charge back on a dead end: compare under that rule (the paper's).
    policy = make_policy("maxflow", fleet.plan, fleet.cluster, dead_end="rollback")
    assert isinstance(policy, MaxFlowPolicy)
    after_s, after = run_decisions(policy, fleet.plan, reqs)
    if after != before:
        raise RuntimeError(f"{fleet.name}: the fast max-flow walk chose differently from the old one")
    admitted = sum(c is not None for c in after)
    return {
        f"routing.{fleet.name}.decisions_per_s": count / after_s,
        f"routing.{fleet.name}.before_decisions_per_s": count / before_s,
        f"routing.{fleet.name}.speedup": before_s / after_s,
        f"routing.{fleet.name}.admitted_share": admitted / count,
        f"routing.{fleet.name}.hops_mean": statistics.fmean(len(c) for c in after if c) if admitted else 0.0,
    }


def lost_node(plan: Plan) -> str:
    """The node of the first chain (source side) that carries the most flow and whose loss leaves every
    layer covered: the loss that moves the most routing weight."""
    for name, _ in sorted(
        ((n, plan.flow(SOURCE, n)) for n in plan.placement.ranges), key=lambda x: (-x[1], x[0])
    ):
        if not plan.placement.without({name}).uncovered():
            return name
    return sorted(plan.placement.ranges)[0]


def median_ms(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.process_time()
        fn()
        times.append((time.process_time() - t0) * 1e3)
    return statistics.median(times)


def replan_figures(
    fleet: Fleet, model: ModelSpec, profiles: ProfileSet, repeats: int
) -> dict[str, float | str]:
    """After losing a node: the flows and a fresh max-flow policy, as the coordinator needs them to route
    again. Before: the whole plan_from_placement (bounds, ceilings, both arc sets) the coordinator ran."""
    plan, cluster = fleet.plan, fleet.cluster
    gone = lost_node(plan)
    reduced = cluster.without({gone})

    def after() -> None:
        fresh = reflow_without(plan, cluster, model, profiles, [gone])
        make_policy("maxflow", fresh, reduced)

    def before() -> None:
        fresh = plan_from_placement(reduced, model, profiles, plan.placement.without({gone}), method="live")
        make_policy("maxflow", fresh, reduced)

    after_ms = median_ms(after, repeats)
    before_ms = median_ms(before, repeats)
    return {
        f"replan_flow_ms.{fleet.name}": after_ms,
        f"replan_flow_ms.{fleet.name}.before": before_ms,
        f"replan_flow_ms.{fleet.name}.speedup": before_ms / after_ms,
        f"replan_flow_ms.{fleet.name}.lost": gone,
    }
