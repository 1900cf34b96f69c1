"""Routing over the live workers: the plan, cluster, policy and KV book for whoever is registered now.

Rebuilt whenever the registry changes. The plan loaded at start is used as long as the live workers match
it; after a loss (or a join) the flow is recomputed on the reduced fleet with planner.flow, falling back to
the loaded plan minus the lost nodes, and to equal weights when no profiles exist for the workers' types.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, replace

from planner.cluster import SINK, SOURCE, Cluster, Link, Node
from planner.errors import BrlError, InvalidInput, NoRoute
from planner.flow import placement_arcs, plan_from_placement
from planner.model import ModelSpec
from planner.placement import LayerRange, Placement
from planner.plan import Plan
from planner.profile import ProfileSet
from planner.routing import (
    Chain,
    KVBook,
    RouteRequest,
    RoutingPolicy,
    make_policy,
    policy_options,
    reflow_without,
    successors,
    without_nodes,
)
from planner.routing.maxflow import DEFAULT_DEAD_END
from services.coordinator.registry import Registry, WorkerState

log = logging.getLogger("brl.coordinator.fleet")

# Links of a fleet synthesised from registrations (no cluster file): loopback/LAN-like, never the bottleneck.
SYNTH_BANDWIDTH_BYTES_PER_S = 1e10
SYNTH_LATENCY_S = 0.0005


@dataclass
class LiveView:
    """planner.routing.RoutingView over the registry: every node of the live plan is alive."""

    kv: KVBook | None
    queues: dict[str, int]

    def alive(self, node: str) -> bool:
        return node in self.queues

    def queue_length(self, node: str) -> int:
        return self.queues.get(node, 0)


def _capacities(workers: dict[str, WorkerState]) -> dict[str, int]:
    """KV capacity per worker in token x layer entries (the unit of planner.routing.KVBook)."""
    return {n: w.info.kv_capacity_tokens * w.info.layers.size for n, w in workers.items()}


def synth_cluster(registry: Registry, name: str = "live") -> Cluster:
    """A complete graph over the routable workers (used when no cluster file names them)."""
    workers = registry.routable()
    nodes = tuple(Node(n, w.info.gpu_type) for n, w in sorted(workers.items()))
    links: list[Link] = []
    for a in nodes:
        links.append(Link(SOURCE, a.name, SYNTH_BANDWIDTH_BYTES_PER_S, SYNTH_LATENCY_S))
        links.append(Link(a.name, SINK, SYNTH_BANDWIDTH_BYTES_PER_S, SYNTH_LATENCY_S))
        links.extend(
            Link(a.name, b.name, SYNTH_BANDWIDTH_BYTES_PER_S, SYNTH_LATENCY_S) for b in nodes if b != a
        )
    return Cluster(nodes=nodes, links=tuple(links), name=name)


def reaches_sink(plan: Plan, cluster: Cluster) -> bool:
    """Some chain of `plan`'s nodes goes from the source to the sink over `cluster`'s links."""
    seen = {SOURCE}
    frontier = [SOURCE]
    while frontier:
        at = frontier.pop()
        for nxt in successors(plan, cluster, at):
            if nxt not in seen:
                seen.add(nxt)
                frontier.append(nxt)
    return SINK in seen


class Fleet:
    def __init__(
        self,
        registry: Registry,
        model: ModelSpec,
        *,
        policy: str = "maxflow",
        dead_end: str = DEFAULT_DEAD_END,
        plan: Plan | None = None,
        cluster: Cluster | None = None,
        profiles: ProfileSet | None = None,
        seed: int = 0,
        high_water: float = 0.9,
        output_ratio: float = 0.6,
    ) -> None:
        self.registry = registry
        self.model = model
        self.policy_name = policy
        self.policy_options = policy_options(policy, dead_end=dead_end)
        self.base_plan = plan
        self.base_cluster = cluster
        self.profiles = profiles
        self.rng = random.Random(seed)
        self.high_water = high_water
        self.output_ratio = output_ratio
        self.plan: Plan = Plan("live", model.name, "none", Placement(model.num_layers))
        self.cluster: Cluster = Cluster((), ())
        self.policy: RoutingPolicy = make_policy(
            policy, self.plan, self.cluster, rng=self.rng, **self.policy_options
        )
        self.kv = KVBook({}, high_water=high_water, output_ratio=output_ratio)
        self._book_capacities: dict[str, int] = {}  # what self.kv was built with (workers' KV shares)
        self.routable = False
        self.no_route_reason = "no worker has registered yet"
        self._active: dict[str, tuple[Chain, RouteRequest]] = {}
        self._built_version = -1
        self.rebuild()

    # -- topology ------------------------------------------------------------------------------------
    def use_plan(self, plan: Plan) -> None:
        """Route new requests by `plan` from now on. Requests already admitted keep their chains, and their
        KV charges are booked again on the new book, so nothing in flight is dropped or double-booked."""
        if plan.placement.num_layers != self.model.num_layers:
            raise InvalidInput(
                f"plan {plan.method!r} places {plan.placement.num_layers} layers but the served model "
                f"{self.model.name} has {self.model.num_layers}",
                source="plan",
                field="placement.num_layers",
            )
        self.base_plan = plan
        self._built_version = -1
        self.rebuild()

    def plan_mismatch(self) -> dict[str, str]:
        """Live workers whose layers differ from the loaded plan's (node -> why); empty when it fits."""
        base = self.base_plan
        if base is None:
            return {}
        out: dict[str, str] = {}
        planned = base.placement.ranges
        for name, w in sorted(self.registry.alive().items()):
            want = planned.get(name)
            if want is None:
                out[name] = "not in the plan"
            elif want != w.info.layers:
                out[name] = f"holds {w.info.layers}, plan says {want}"
        for name in sorted(set(planned) - set(self.registry.names())):
            out[name] = "planned but not registered"
        return out

    def rebuild(self) -> None:
        if self._built_version == self.registry.version:
            return
        self._built_version = self.registry.version
        workers = self.registry.alive()
        # Cordoned workers (draining before an unload or a range change) keep their KV booked for the
        # requests they run, but no chain of new requests goes through them.
        routable = self.registry.routable()
        placement = Placement(self.model.num_layers, {n: w.info.layers for n, w in routable.items()})
        cluster = self._live_cluster()
        self.cluster = cluster
        self.plan = self._live_plan(cluster, placement)
        self.policy = make_policy(self.policy_name, self.plan, cluster, rng=self.rng, **self.policy_options)
        self._new_book(workers)
        self.routable, self.no_route_reason = self._check_routable(placement)
        log.info(
            "fleet rebuilt: %d workers, plan %s, routable=%s", len(workers), self.plan.method, self.routable
        )

    def _new_book(self, workers: dict[str, WorkerState]) -> None:
        """A KV book for these workers' capacities; the requests in flight are charged on it again."""
        self._book_capacities = _capacities(workers)
        self.kv = KVBook(
            self._book_capacities,
            high_water=self.high_water,
            output_ratio=self.output_ratio,
            ranges={n: w.info.layers for n, w in workers.items()},
        )
        for rid, (chain, req) in list(self._active.items()):
            if all(h.node in workers for h in chain):
                self.kv.charge(chain, req)
            else:
                del self._active[rid]

    def _follow_shares(self, workers: dict[str, WorkerState]) -> None:
        """With coordinator replicas a worker's heartbeat carries this replica's share of its KV, which
        changes when replicas come and go (services/worker/leases.py): the book follows it."""
        if _capacities(workers) != self._book_capacities:
            log.info("KV shares changed: %s", {n: w.info.kv_capacity_tokens for n, w in workers.items()})
            self._new_book(workers)

    def _live_cluster(self) -> Cluster:
        names = set(self.registry.routable())
        base = self.base_cluster
        if base is not None and names <= set(base.node_names):
            return base.without(set(base.node_names) - names)
        if base is not None and names:
            log.warning(
                "workers %s are not in cluster %s: routing over a complete graph",
                sorted(names - set(base.node_names)),
                base.name,
            )
        return synth_cluster(self.registry)

    def _live_plan(self, cluster: Cluster, placement: Placement) -> Plan:
        base = self.base_plan
        if base is not None and dict(base.placement.ranges) == dict(placement.ranges):
            return base
        # Equal weights on every valid arc: the policy still spreads requests over every chain.
        arcs = placement_arcs(cluster, placement)
        uniform = Plan(
            cluster.name,
            self.model.name,
            "live-uniform",
            placement,
            edge_flows={(a.src, a.dst): 1.0 for a in arcs},
        )
        if not placement.ranges or not reaches_sink(uniform, cluster):
            return uniform  # nothing to weigh: no chain covers [0, L) now
        gone = _lost_from(base, placement)
        if self.profiles is not None:
            try:
                if base is not None and gone is not None:
                    # Workers of the plan in force were lost: its flows alone are recomputed (~12 ms at 42
                    # nodes against ~33 ms for a whole plan with its bounds; bench/coordinator.py).
                    return replace(
                        reflow_without(base, cluster, self.model, self.profiles, gone), method="live"
                    )
                return plan_from_placement(cluster, self.model, self.profiles, placement, method="live")
            except BrlError as exc:
                log.info("no flow from profiles for the live fleet (%s)", exc)
        if base is not None and gone is not None:
            try:
                return without_nodes(base, gone)
            except NoRoute:
                pass
        return uniform

    def _check_routable(self, placement: Placement) -> tuple[bool, str]:
        if reaches_sink(self.plan, self.cluster):
            return True, ""
        return False, self.describe_gap(placement)

    def describe_gap(self, placement: Placement | None = None) -> str:
        placement = placement or self.plan.placement
        runs = self.registry.uncovered(routable_only=True)
        total = self.model.num_layers
        if not self.registry.names():
            return f"no live worker: layers [0,{total}) are uncovered; start or restart workers"
        if runs:
            where = ", ".join(f"[{a},{b})" for a, b in runs)
            return (
                f"no chain of live workers covers layers [0,{total}): layers {where} are held by no live "
                f"worker; start a worker holding them"
            )
        held = ", ".join(f"{n}{r}" for n, r in sorted(placement.ranges.items()))
        return f"live workers hold every layer but no linked chain joins [0,{total}) ({held})"

    def uncovered(self) -> tuple[tuple[int, int], ...]:
        return tuple(self.registry.uncovered(routable_only=True))

    # -- routing -------------------------------------------------------------------------------------
    def choose(self, req: RouteRequest) -> Chain | None:
        """A chain with KV room for `req` (charged), None on Fail-KV; NoRoute when nothing covers [0, L)."""
        self.rebuild()
        if not self.routable:
            raise NoRoute(self.no_route_reason, uncovered=self.uncovered())
        workers = self.registry.alive()
        self._follow_shares(workers)
        for name, w in workers.items():
            self.kv.correct(name, w.kv_used_tokens * w.info.layers.size)
        routable = self.registry.routable()
        view = LiveView(self.kv, {n: w.queue_depth for n, w in routable.items()})
        chain = self.policy.choose(req, view)
        if chain is None:
            return None
        self.kv.charge(chain, req)
        self._active[req.request_id] = (chain, req)
        return chain

    def on_decode(self, chain: Chain) -> None:
        self.policy.on_decode(chain)

    def release(self, request_id: str) -> None:
        self._active.pop(request_id, None)
        self.kv.release(request_id)
        self.policy.release(request_id)

    def max_request_tokens(self) -> int:
        """The longest request (prompt + output tokens) the emptiest live fleet could ever hold: per layer,
        the largest KV capacity (tokens) among its holders, minimised over layers."""
        best = [0] * self.model.num_layers
        for w in self.registry.alive().values():
            cap = int(w.info.kv_capacity_tokens)
            for layer in range(w.info.layers.start, w.info.layers.end):
                best[layer] = max(best[layer], cap)
        return min(best) if best else 0

    def never_fits(self, req: RouteRequest) -> str | None:
        """Why `req` could not be admitted even by an idle fleet (None when it could)."""
        room = self.max_request_tokens()
        need = req.input_len + req.expected_output_len
        if need > room:
            return (
                f"prompt ({req.input_len} tokens) + max_tokens ({req.expected_output_len}) = {need} tokens "
                f"exceeds the KV cache of the live fleet ({room} tokens per request); shorten the prompt "
                f"or lower max_tokens"
            )
        if self.kv.expected_tokens(req) > room * self.high_water:
            return (
                f"prompt ({req.input_len} tokens) + max_tokens ({req.expected_output_len}) is too close "
                f"to the KV cache of the live fleet ({room} tokens); lower max_tokens"
            )
        return None

    def node_layers(self, name: str) -> LayerRange | None:
        w = self.registry.get(name)
        return w.info.layers if w else None


def _lost_from(base: Plan | None, placement: Placement) -> set[str] | None:
    """The plan's nodes missing from the live placement when every live node still holds the plan's range
    for it (a pure loss), else None (ranges changed or nodes joined: the flows need a whole new plan)."""
    if base is None or not set(placement.ranges) <= set(base.placement.ranges):
        return None
    if any(base.placement.ranges[n] != r for n, r in placement.ranges.items()):
        return None
    return set(base.placement.ranges) - set(placement.ranges)
