"""What the routing policies see of the simulated fleet (planner.routing's RoutingView)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from planner.routing.kv import KVBook

if TYPE_CHECKING:
    from simulator.coordinator import SimCoordinator


class SimView:
    """The RoutingView the policies read: the KV book, every node alive, live queue lengths."""

    def __init__(self, coord: SimCoordinator) -> None:
        self._coord = coord

    @property
    def kv(self) -> KVBook | None:
        return self._coord.kv

    def alive(self, node: str) -> bool:
        # A node paused to load a new range (simulator.transition) takes no new requests.
        return node in self._coord.workers and node not in self._coord.paused

    def queue_length(self, node: str) -> int:
        return self._coord.queued(node)
