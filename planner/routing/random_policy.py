"""Random routing (the paper's "Naive" baseline): each hop takes a uniformly random admissible successor.
No KV admission control; the RNG is passed in, so a seed fixes every choice."""

from __future__ import annotations

from planner.placement import LayerRange
from planner.routing.base import Chain, RouteRequest, RoutingPolicy, RoutingView
from planner.routing.registry import register


@register("random")
class RandomPolicy(RoutingPolicy):
    def _pick(self, at: str, cands: list[tuple[str, LayerRange | None]]) -> tuple[str, LayerRange | None]:
        return cands[self.rng.randrange(len(cands))]

    def choose(self, request: RouteRequest, view: RoutingView) -> Chain | None:
        return self._walk(request, view, self._pick, check_kv=False)
