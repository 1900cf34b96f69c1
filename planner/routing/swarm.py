"""SWARM-style routing (the paper's baseline): per node, every successor has a priority that grows by an
EMA of the time a request took there; the least-priority successor wins. No KV admission control."""

from __future__ import annotations

import random
from collections.abc import Mapping

from planner.cluster import Cluster
from planner.placement import LayerRange
from planner.plan import Plan
from planner.routing.base import Chain, RouteRequest, RoutingPolicy, RoutingView
from planner.routing.registry import register

# SwarmParameters of the paper: initial priority and EMA, and the smoothing weight of a new sample.
INITIAL_PRIORITY = 0.05
SMOOTHING = 0.8


@register("swarm")
class SwarmPolicy(RoutingPolicy):
    def __init__(
        self,
        plan: Plan,
        cluster: Cluster,
        *,
        rng: random.Random | None = None,
        prompt_max_tokens: Mapping[str, int] | None = None,
        initial_priority: float = INITIAL_PRIORITY,
        smoothing: float = SMOOTHING,
    ) -> None:
        super().__init__(plan, cluster, rng=rng, prompt_max_tokens=prompt_max_tokens)
        self.initial_priority = initial_priority
        self.smoothing = smoothing
        self.priority: dict[tuple[str, str], float] = {}
        self.ema: dict[tuple[str, str], float] = {}

    def _pick(self, at: str, cands: list[tuple[str, LayerRange | None]]) -> tuple[str, LayerRange | None]:
        # Min (priority, successor order): the paper's heap pop; the winner is pushed back with its EMA added.
        best = min(
            range(len(cands)), key=lambda i: (self.priority.get((at, cands[i][0]), self.initial_priority), i)
        )
        edge = (at, cands[best][0])
        self.priority[edge] = self.priority.get(edge, self.initial_priority) + self.ema.get(
            edge, self.initial_priority
        )
        return cands[best]

    def choose(self, request: RouteRequest, view: RoutingView) -> Chain | None:
        return self._walk(request, view, self._pick, check_kv=False)

    def observe(self, src: str, dst: str, delta_s: float) -> None:
        edge = (src, dst)
        old = self.ema.get(edge, self.initial_priority)
        self.ema[edge] = self.smoothing * delta_s + (1.0 - self.smoothing) * old
