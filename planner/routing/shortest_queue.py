"""Shortest-queue routing (a paper baseline): each hop goes to a successor whose inbound queue is shortest
right now (the sink always counts as shortest), ties broken at random. No KV admission control."""

from __future__ import annotations

from planner.cluster import SINK
from planner.placement import LayerRange
from planner.routing.base import Chain, RouteRequest, RoutingPolicy, RoutingView
from planner.routing.registry import register


@register("shortest-queue")
class ShortestQueuePolicy(RoutingPolicy):
    def choose(self, request: RouteRequest, view: RoutingView) -> Chain | None:
        def pick(at: str, cands: list[tuple[str, LayerRange | None]]) -> tuple[str, LayerRange | None]:
            lengths = [-1 if nxt == SINK else view.queue_length(nxt) for nxt, _ in cands]
            low = min(lengths)
            best = [c for c, q in zip(cands, lengths, strict=True) if q == low]
            return best[self.rng.randrange(len(best))]

        return self._walk(request, view, pick, check_kv=False)
