"""What every routing policy shares: the request it routes, the chain it returns, the live view it may
read, and the successor graph of a placement. Policies are pure objects: state in, frozen decision out."""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from planner.cluster import SINK, SOURCE, Cluster
from planner.errors import InvalidInput
from planner.placement import LayerRange, Placement
from planner.plan import Plan

if TYPE_CHECKING:
    from planner.routing.kv import KVBook


@dataclass(frozen=True)
class RouteRequest:
    """What routing needs to know of a request: its prompt length and the output length to plan KV for."""

    request_id: str
    input_len: int
    expected_output_len: int

    def __post_init__(self) -> None:
        if self.input_len < 1:
            raise InvalidInput(f"request {self.request_id}: input_len must be >= 1, got {self.input_len}")
        if self.expected_output_len < 0:
            raise InvalidInput(f"request {self.request_id}: expected_output_len must be >= 0")


@dataclass(frozen=True)
class Hop:
    """One stage of a chain: the node and the layers it actually runs for this request."""

    node: str
    layers: LayerRange


Chain = tuple[Hop, ...]


def chain_nodes(chain: Chain) -> tuple[str, ...]:
    return tuple(h.node for h in chain)


def chain_edges(chain: Chain) -> tuple[tuple[str, str], ...]:
    """Every directed edge the chain uses, source and sink included."""
    names = (SOURCE, *chain_nodes(chain), SINK)
    return tuple(zip(names, names[1:], strict=False))


class RoutingView(Protocol):
    """Live state a policy may read. The simulator and the coordinator each provide one."""

    @property
    def kv(self) -> KVBook | None: ...

    def alive(self, node: str) -> bool: ...

    def queue_length(self, node: str) -> int: ...


@dataclass
class StaticView:
    """A plain RoutingView: a set of dead nodes, queue lengths, and an optional KV book."""

    kv: KVBook | None = None
    dead: frozenset[str] = frozenset()
    queues: Mapping[str, int] = field(default_factory=dict)

    def alive(self, node: str) -> bool:
        return node not in self.dead

    def queue_length(self, node: str) -> int:
        return int(self.queues.get(node, 0))


def next_layers(placement: Placement, at: str, nxt: str) -> LayerRange | None:
    """Layers `nxt` runs after `at`: all of them after the source, else those above `at`'s last layer
    (partial overlap is tolerated, as in the paper). None when `nxt` cannot continue from `at`."""
    rng = placement.get(nxt)
    if rng is None:
        return None
    if at == SOURCE:
        return rng if rng.start == 0 else None
    cur = placement.get(at)
    if cur is None or not rng.start <= cur.end < rng.end:
        return None
    return LayerRange(cur.end, rng.end)


def successors(plan: Plan, cluster: Cluster, at: str) -> tuple[str, ...]:
    """Nodes (or the sink) a request at `at` may go to next, in the cluster's link order: the link must
    exist, and the next node must continue the layers (the sink only after the last layer)."""
    ranges = plan.placement.ranges
    # `next_layers` inlined: a full mesh of a thousand GPUs has a million links to test.
    if at == SOURCE:
        reached = 0
    else:
        cur = ranges.get(at)
        if cur is None:
            return ()
        reached = cur.end
    last = at != SOURCE and reached == plan.placement.num_layers
    out: list[str] = []
    for link in cluster.out_links(at):
        dst = link.dst
        if dst == SINK:
            if last:
                out.append(SINK)
            continue
        rng = ranges.get(dst)
        if rng is not None and rng.start <= reached < rng.end:
            out.append(dst)
    return tuple(out)


class RoutingPolicy(ABC):
    """Base of every policy. `choose` returns a chain covering [0, L) or None; callers charge the KV book
    themselves after a successful choice and call `release` when the request ends."""

    name = "base"

    def __init__(
        self,
        plan: Plan,
        cluster: Cluster,
        *,
        rng: random.Random | None = None,
        prompt_max_tokens: Mapping[str, int] | None = None,
    ) -> None:
        self.plan = plan
        self.cluster = cluster
        self.rng = rng if rng is not None else random.Random(0)
        # Fail-Length: a node cannot take a prompt longer than its batch limit.
        self.prompt_max_tokens = dict(prompt_max_tokens or {})
        self._succ: dict[str, tuple[str, ...]] = {}

    def successors(self, at: str) -> tuple[str, ...]:
        if at not in self._succ:
            self._succ[at] = successors(self.plan, self.cluster, at)
        return self._succ[at]

    def _hop_ok(
        self, nxt: str, req: RouteRequest, view: RoutingView, layers: LayerRange | None, *, check_kv: bool
    ) -> bool:
        if nxt == SINK:
            return True
        if layers is None or not view.alive(nxt):
            return False
        limit = self.prompt_max_tokens.get(nxt)
        if limit is not None and req.input_len > limit:
            return False
        kv = view.kv
        return not (check_kv and kv is not None and not kv.node_fits(nxt, req, layers.size))

    def _walk(self, req: RouteRequest, view: RoutingView, pick: PickFn, *, check_kv: bool) -> Chain | None:
        """Route hop by hop from the source (no backtracking, as in the paper): at each node keep the
        admissible successors and let `pick` take one; None at a dead end."""
        placement = self.plan.placement
        at = SOURCE
        hops: list[Hop] = []
        for _ in range(placement.num_layers + 1):
            cands: list[tuple[str, LayerRange | None]] = []
            for nxt in self.successors(at):
                layers = None if nxt == SINK else next_layers(placement, at, nxt)
                if self._hop_ok(nxt, req, view, layers, check_kv=check_kv):
                    cands.append((nxt, layers))
            if not cands:
                return None
            nxt, layers = pick(at, cands)
            if nxt == SINK:
                return tuple(hops)
            assert layers is not None  # only the sink has no layers
            hops.append(Hop(nxt, layers))
            at = nxt
        return None

    @abstractmethod
    def choose(self, request: RouteRequest, view: RoutingView) -> Chain | None:
        """A chain for a new request, or None when no admissible chain exists."""

    def on_decode(self, chain: Chain) -> None:
        """Account one decode iteration along `chain` (IWRR load for max-flow); default nothing."""
        return None

    def decode_accounting(self, chain: Chain) -> Callable[[], None] | None:
        """The same as `on_decode(chain)` as a prepared callable (None when a policy keeps no decode
        state), for callers that run many decodes on one chain: the simulator calls it per token."""
        return None

    def release(self, request_id: str) -> None:
        """Forget per-request state; default nothing."""
        return None

    def observe(self, src: str, dst: str, delta_s: float) -> None:
        """Feedback: a request left `src` and was ready to leave `dst` `delta_s` later (Swarm uses it)."""
        return None


class PickFn(Protocol):
    def __call__(
        self, at: str, cands: list[tuple[str, LayerRange | None]]
    ) -> tuple[str, LayerRange | None]: ...
