"""Helix max-flow routing: every node forwards to its successors by interleaved weighted round-robin (IWRR)
with the plan's edge flows as weights; admission per hop checks flow share, prompt length and KV."""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping

from planner.cluster import SINK, SOURCE, Cluster
from planner.placement import LayerRange
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

# Successors carrying less than this share of a node's planned outflow are skipped ("Fail-Flow").
MIN_FLOW_SHARE = 0.05


class Iwrr:
    """Least normalised virtual finish time: choose the unmasked j minimising load_j + w / weight_j (the first
    index wins ties), then add w / weight_j to its load. Prompts weigh their length, decodes 1."""

    def __init__(self, names: tuple[str, ...], weights: tuple[float, ...]) -> None:
        self.names = names
        self.weights = weights
        self.loads = [0.0] * len(names)
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


@register("maxflow")
class MaxFlowPolicy(RoutingPolicy):
    """Routes hop by hop from the source. At each node a successor is masked when its planned flow is under
    `min_share` of the node's outflow (Fail-Flow), when it cannot take the prompt's length (Fail-Length), or
    when its KV would cross the high-water mark (Fail-KV); IWRR picks among the rest. A dead end rolls back
    the IWRR loads charged so far and returns None (the paper drops the request offline)."""

    def __init__(
        self,
        plan: Plan,
        cluster: Cluster,
        *,
        rng: random.Random | None = None,
        prompt_max_tokens: Mapping[str, int] | None = None,
        min_share: float = MIN_FLOW_SHARE,
    ) -> None:
        super().__init__(plan, cluster, rng=rng, prompt_max_tokens=prompt_max_tokens)
        self.min_share = min_share
        self.iwrr: dict[str, Iwrr] = {}
        nodes = (SOURCE, *plan.placement.ranges)
        for at in nodes:
            flows = [(nxt, plan.flow(at, nxt)) for nxt in self.successors(at)]
            flows = [(n, f) for n, f in flows if f > 0]
            total = sum(f for _, f in flows)
            kept = [(n, f) for n, f in flows if f >= self.min_share * total]
            if kept:
                self.iwrr[at] = Iwrr(tuple(n for n, _ in kept), tuple(f for _, f in kept))

    def choose(self, request: RouteRequest, view: RoutingView) -> Chain | None:
        placement = self.plan.placement
        work = float(request.input_len)
        at = SOURCE
        hops: list[Hop] = []
        taken: list[tuple[str, str]] = []
        for _ in range(placement.num_layers + 1):
            table = self.iwrr.get(at)
            allowed: set[str] = set()
            layers_of: dict[str, LayerRange] = {}
            if table is not None:
                for nxt in table.names:
                    layers = None if nxt == SINK else next_layers(placement, at, nxt)
                    if self._hop_ok(nxt, request, view, layers, check_kv=True):
                        allowed.add(nxt)
                        if layers is not None:
                            layers_of[nxt] = layers
            chosen = table.choose(work, allowed) if table is not None else None
            if chosen is None:
                for src, dst in taken:
                    self.iwrr[src].restore(dst, work)
                return None
            taken.append((at, chosen))
            if chosen == SINK:
                return tuple(hops)
            hops.append(Hop(chosen, layers_of[chosen]))
            at = chosen
        for src, dst in taken:
            self.iwrr[src].restore(dst, work)
        return None

    def on_decode(self, chain: Chain) -> None:
        # Decodes follow the prompt's chain (the KV lives there) but still count as work for IWRR.
        for src, dst in chain_edges(chain):
            table = self.iwrr.get(src)
            if table is not None:
                table.add(dst, 1.0)

    def decode_accounting(self, chain: Chain) -> Callable[[], None] | None:
        steps: list[tuple[list[float], int, float]] = []
        for src, dst in chain_edges(chain):
            table = self.iwrr.get(src)
            j = None if table is None else table.index(dst)
            if table is not None and j is not None:
                steps.append((table.loads, j, 1.0 / table.weights[j]))

        def account() -> None:
            for loads, j, inv in steps:
                loads[j] += inv

        return account

    def link_share(self, src: str, dst: str) -> float:
        """Share of `src`'s planned outflow that goes to `dst` (used to split NIC bandwidth)."""
        table = self.iwrr.get(src)
        return 0.0 if table is None else table.share(dst)
