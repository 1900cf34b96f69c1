"""Helix max-flow routing: every node forwards to its successors by interleaved weighted round-robin (IWRR)
with the plan's edge flows as weights; admission per hop checks flow share, prompt length and KV."""

from __future__ import annotations

import random
from array import array
from collections.abc import Callable, Iterator, Mapping
from typing import Literal, get_args

from planner.cluster import SINK, SOURCE, Cluster
from planner.errors import UnknownName
from planner.plan import Plan
from planner.routing.base import (
    Chain,
    Hop,
    RouteRequest,
    RoutingPolicy,
    RoutingView,
    chain_edges,
    next_layers,
)
from planner.routing.registry import register

# One successor of a node as the router visits it: (IWRR index, name, Hop or None for the sink, layers).
Step = tuple[int, str, Hop | None, int]

# What a visited successor's IWRR value becomes while the router looks for the next least one, and how
# many times it takes a min before it sorts the rest (KV-full fleets mask many successors).
_MASKED = float("inf")
_MIN_PASSES = 3

# Successors carrying less than this share of a node's planned outflow are skipped ("Fail-Flow").
MIN_FLOW_SHARE = 0.05

# What a dead end (no admissible successor before the sink) does with the IWRR charges its walk made.
# "rollback", the paper's: gives them all back, so the next request, valued the same, enters the same full
# branch again; on a fleet whose branches fill unevenly (several regions) one full region then takes the
# offers the others could serve. "keep-entry": the charge at the source stays, so the next request tries
# the next first stage. "keep-path": every charge of the walk stays (the inner nodes that led to the full
# one are passed over too).
DeadEndRule = Literal["rollback", "keep-entry", "keep-path"]
DEAD_END_RULES: tuple[str, ...] = get_args(DeadEndRule)
DEFAULT_DEAD_END: DeadEndRule = "keep-entry"


class Iwrr:
    """Least normalised virtual finish time: choose the unmasked j minimising load_j + w / weight_j (the first
    index wins ties), then add w / weight_j to its load. Prompts weigh their length, decodes 1."""

    def __init__(self, names: tuple[str, ...], weights: tuple[float, ...]) -> None:
        self.names = names
        self.weights = weights
        # Doubles in one buffer (not a list of float objects): the compiled simulator adds every decode
        # to them in place (simulator.fast_engine).
        self.loads = array("d", bytes(8 * len(names)))
        self._index = {n: i for i, n in enumerate(names)}

    def choose(self, work: float, allowed: set[str]) -> str | None:
        best = -1
        best_val = 0.0
        for j, name in enumerate(self.names):
            if name not in allowed:
                continue
            val = self.loads[j] + work / self.weights[j]
            if best < 0 or val < best_val:
                best, best_val = j, val
        if best < 0:
            return None
        self.loads[best] += work / self.weights[best]
        return self.names[best]

    def index(self, name: str) -> int | None:
        return self._index.get(name)

    def add(self, name: str, work: float) -> None:
        j = self._index.get(name)
        if j is not None:
            self.loads[j] += work / self.weights[j]

    def restore(self, name: str, work: float) -> None:
        j = self._index.get(name)
        if j is not None:
            self.loads[j] -= work / self.weights[j]

    def share(self, name: str) -> float:
        j = self._index.get(name)
        return 0.0 if j is None else self.weights[j] / sum(self.weights)


def _visit_order(values: list[float]) -> Iterator[int]:
    """Indices by ascending value, ties by index (a stable sort's order), produced lazily: the caller
    usually takes the first. A visited index is masked in `values` so the next min skips it. The least is
    found as min() then index(), two loops in C: index() finds the first of equals, as a stable sort
    would put first (no NaN: values are loads plus positive work over positive weights)."""
    for _ in range(min(_MIN_PASSES, len(values))):
        least = min(values)
        if least == _MASKED:
            return
        i = values.index(least)
        yield i
        values[i] = _MASKED
    yield from (i for i in sorted(range(len(values)), key=values.__getitem__) if values[i] != _MASKED)


@register("maxflow")
class MaxFlowPolicy(RoutingPolicy):
    """Routes hop by hop from the source. At each node a successor is masked when its planned flow is under
    `min_share` of the node's outflow (Fail-Flow), when it cannot take the prompt's length (Fail-Length), or
    when its KV would cross the high-water mark (Fail-KV); IWRR picks among the rest. A dead end returns
    None (the paper drops the request offline) and gives back the IWRR loads charged so far as `dead_end`
    says (DEAD_END_RULES)."""

    def __init__(
        self,
        plan: Plan,
        cluster: Cluster,
        *,
        rng: random.Random | None = None,
        prompt_max_tokens: Mapping[str, int] | None = None,
        min_share: float = MIN_FLOW_SHARE,
        dead_end: str = DEFAULT_DEAD_END,
    ) -> None:
        super().__init__(plan, cluster, rng=rng, prompt_max_tokens=prompt_max_tokens)
        if dead_end not in DEAD_END_RULES:
            raise UnknownName("dead-end rule", dead_end, DEAD_END_RULES, field="dead_end")
        self.min_share = min_share
        self.dead_end = dead_end
        self.iwrr: dict[str, Iwrr] = {}
        # Planned flows > 0 by sender, so finding a node's successors tests a name per link, not a pair.
        self._flows_from: dict[str, dict[str, float]] = {}
        for (u, v), f in plan.edge_flows.items():
            if float(f) > 0:
                self._flows_from.setdefault(u, {})[v] = float(f)
        nodes = (SOURCE, *plan.placement.ranges)
        for at in nodes:
            flows = self._planned_successors(at)
            total = sum(f for _, f in flows)
            # The paper's floor (5% of the node's outbound flow) drops noise on a 24-node fleet; past 20
            # successors every share can be under it, and then the floor is 5% of the largest flow, so a
            # source feeding hundreds of first-stage replicas keeps them all, not only the largest ones.
            largest = max((f for _, f in flows), default=0.0)
            floor = self.min_share * total
            if floor > largest:
                floor = self.min_share * largest
            kept = [(n, f) for n, f in flows if f >= floor]
            if kept:
                self.iwrr[at] = Iwrr(tuple(n for n, _ in kept), tuple(f for _, f in kept))
        self._prepare()

    def _planned_successors(self, at: str) -> list[tuple[str, float]]:
        """(successor, planned flow) for `at`'s successors with flow > 0, in the cluster's link order: the
        flows of `successors(at)`, but the links without flow (most of a full mesh) are dropped before their
        layers are checked, so building a policy after a loss stays cheap on big fleets."""
        flows = self._flows_from.get(at)
        if not flows:
            return []
        placement = self.plan.placement
        out: list[tuple[str, float]] = []
        for link in self.cluster.out_links(at):
            f = flows.get(link.dst)
            if f is None:
                continue
            if link.dst == SINK:
                cur = placement.get(at)
                if cur is not None and cur.end == placement.num_layers:
                    out.append((SINK, f))
            elif next_layers(placement, at, link.dst) is not None:
                out.append((link.dst, f))
        return out

    def _prepare(self) -> None:
        """Per node, its IWRR table's successors in table order as Steps. The layers each hop runs depend on
        the placement only, so they are worked out once, not per request. A successor that cannot continue
        the layers is left out (the walk would mask it every time)."""
        placement = self.plan.placement
        self._steps: dict[str, tuple[Iwrr, tuple[Step, ...]]] = {}
        # Per node, its steps' load indices and weights, for the walk's values (None: every index, in order).
        self._step_weights: dict[str, tuple[tuple[int, ...] | None, tuple[float, ...]]] = {}
        for at, table in self.iwrr.items():
            steps: list[Step] = []
            for j, nxt in enumerate(table.names):
                if nxt == SINK:
                    steps.append((j, nxt, None, 0))
                    continue
                layers = next_layers(placement, at, nxt)
                if layers is not None:
                    steps.append((j, nxt, Hop(nxt, layers), layers.size))
            self._steps[at] = (table, tuple(steps))
            js = tuple(s[0] for s in steps)
            dense = js == tuple(range(len(table.loads)))
            self._step_weights[at] = (None if dense else js, tuple(table.weights[j] for j in js))

    def choose(self, request: RouteRequest, view: RoutingView) -> Chain | None:
        # RoutingPolicy._walk fused with Iwrr.choose, because this runs once per request and is the
        # coordinator's hottest loop (bench/coordinator.py). The masks are tested lazily: successors are
        # visited by their IWRR value (ties by index, as a stable sort: `_visit_order`) and the first
        # admissible one is taken, which is the least-valued admissible one Iwrr.choose would take; most
        # hops then test one successor instead of all. Loads move by the same arithmetic as Iwrr's.
        work = float(request.input_len)
        kv = view.kv
        tokens = kv.expected_tokens(request) if kv is not None else 0
        alive = view.alive
        limits = self.prompt_max_tokens
        steps_of = self._steps
        weights_of = self._step_weights

        def admissible(nxt: str, size: int) -> bool:
            if not alive(nxt):
                return False
            if limits:
                limit = limits.get(nxt)
                if limit is not None and request.input_len > limit:
                    return False
            return kv is None or kv.admits(nxt, tokens, size)

        hops: list[Hop] = []
        taken: list[tuple[Iwrr, int]] = []
        at = SOURCE
        for _ in range(self.plan.placement.num_layers + 1):
            entry = steps_of.get(at)
            if entry is None:
                break
            table, steps = entry
            loads = table.loads
            weights = table.weights
            best = -1
            best_hop: Hop | None = None
            if len(steps) > 1:
                # Successors by IWRR value without sorting them all (a big fleet's source has hundreds):
                # the least first (min keeps the first of equals, as a stable sort does), the next least
                # only if that one is masked; after a few masked ones, the rest in sorted order.
                js, ws = weights_of[at]
                if js is None:
                    values = [load + work / w for load, w in zip(loads, ws, strict=True)]
                else:
                    values = [loads[j] + work / w for j, w in zip(js, ws, strict=True)]
                for i in _visit_order(values):
                    j, nxt, hop, size = steps[i]
                    if hop is None or admissible(nxt, size):
                        best, best_hop = j, hop
                        break
            elif steps:
                j, nxt, hop, size = steps[0]
                if hop is None or admissible(nxt, size):
                    best, best_hop = j, hop
            if best < 0:
                break
            loads[best] += work / weights[best]
            taken.append((table, best))
            if best_hop is None:
                return tuple(hops)
            hops.append(best_hop)
            at = best_hop.node
        # A dead end (or a walk longer than the model): give back the IWRR loads charged so far, all but the
        # source's under "keep-entry", none under "keep-path".
        rule = self.dead_end
        if rule != "keep-path":
            for table, j in taken[1:] if rule == "keep-entry" else taken:
                table.loads[j] -= work / table.weights[j]
        return None

    def on_decode(self, chain: Chain) -> None:
        # Decodes follow the prompt's chain (the KV lives there) but still count as work for IWRR.
        for src, dst in chain_edges(chain):
            table = self.iwrr.get(src)
            if table is not None:
                table.add(dst, 1.0)

    def decode_steps(self, chain: Chain) -> list[tuple[array[float], int, float]]:
        """What each decode on `chain` adds, as on_decode: (an IWRR table's loads, index, 1 / weight)."""
        steps: list[tuple[array[float], int, float]] = []
        for src, dst in chain_edges(chain):
            table = self.iwrr.get(src)
            j = None if table is None else table.index(dst)
            if table is not None and j is not None:
                steps.append((table.loads, j, 1.0 / table.weights[j]))
        return steps

    def decode_accounting(self, chain: Chain) -> Callable[[], None] | None:
        steps = self.decode_steps(chain)

        def account() -> None:
            for loads, j, inv in steps:
                loads[j] += inv

        return account

    def link_share(self, src: str, dst: str) -> float:
        """Share of `src`'s planned outflow that goes to `dst` (used to split NIC bandwidth)."""
        table = self.iwrr.get(src)
        return 0.0 if table is None else table.share(dst)
