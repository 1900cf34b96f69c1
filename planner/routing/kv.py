"""KV-cache accounting for admission: what each node is expected to hold, per request, in token x layer
entries. A request's expected length is input + expected output x ratio, charged on every hop of its chain;
a hop is admissible while the node stays under a high-water mark of its capacity ("Fail-KV")."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from planner.errors import InvalidInput, UnknownName
from planner.placement import LayerRange
from planner.routing.base import Chain, RouteRequest

# The paper's expected output length (AVG_OUTPUT_LEN) that its scheduler multiplies by the ratio.
PAPER_EXPECTED_OUTPUT_LEN = 240


@dataclass(frozen=True)
class KVParams:
    """High-water mark (share of capacity a node may be expected to use) and the expected-output ratio."""

    high_water: float
    output_ratio: float

    def __post_init__(self) -> None:
        if not 0 < self.high_water <= 1:
            raise InvalidInput(
                f"KV high-water mark must be in (0, 1], got {self.high_water}", field="high_water"
            )
        if self.output_ratio < 0:
            raise InvalidInput(f"KV output ratio must be >= 0, got {self.output_ratio}", field="output_ratio")


# The paper's KVParameters: offline runs (0.85, 1.0), online runs and serving (0.9, 0.6).
OFFLINE_KV = KVParams(high_water=0.85, output_ratio=1.0)
ONLINE_KV = KVParams(high_water=0.9, output_ratio=0.6)


class KVBook:
    """Expected KV use per node. `capacity_by_node` is in token x layer entries (the paper's
    `kv_cache_capacity`); `ranges` (the layers each node holds) makes the admission test charge the node's
    whole layer count, as the paper does, and enables bottleneck usage. Charges never go negative."""

    def __init__(
        self,
        capacity_by_node: Mapping[str, int | float],
        *,
        high_water: float = ONLINE_KV.high_water,
        output_ratio: float = ONLINE_KV.output_ratio,
        ranges: Mapping[str, LayerRange] | None = None,
    ) -> None:
        self.params = KVParams(high_water, output_ratio)
        for node, cap in capacity_by_node.items():
            if cap < 0:
                raise InvalidInput(f"KV capacity of {node!r} must be >= 0, got {cap}", field=node)
        self._capacity = {n: float(c) for n, c in capacity_by_node.items()}
        self._ranges = dict(ranges or {})
        # Read on every admission test (the routing hot path), so kept ready: the layers charged per node
        # and the share of capacity above the high-water mark, (1 - high_water) x capacity.
        self._held_layers = {n: r.size for n, r in self._ranges.items()}
        self._slack = {n: (1.0 - high_water) * c for n, c in self._capacity.items()}
        # Charges are whole token x layer entries, so sums are exact and release returns books to zero.
        self._expected: dict[str, int] = dict.fromkeys(self._capacity, 0)
        self._real: dict[str, float] = {}
        self._charges: dict[str, tuple[tuple[str, int], ...]] = {}
        self._groups: list[tuple[tuple[tuple[str, float, float], ...], float]] | None = None
        self._tally: _UsageTally | None = None

    # -- sizes ---------------------------------------------------------------------------------------
    @property
    def high_water(self) -> float:
        return self.params.high_water

    @property
    def output_ratio(self) -> float:
        return self.params.output_ratio

    def nodes(self) -> tuple[str, ...]:
        return tuple(self._capacity)

    def capacity(self, node: str) -> float:
        try:
            return self._capacity[node]
        except KeyError:
            raise UnknownName("node", node, list(self._capacity)) from None

    def expected_tokens(self, req: RouteRequest) -> int:
        """Tokens one layer is expected to hold for `req` (the paper truncates to int)."""
        return int(req.input_len + req.expected_output_len * self.params.output_ratio)

    # -- admission -----------------------------------------------------------------------------------
    def headroom(self, node: str) -> float:
        """Entries the node may still be charged before crossing the high-water mark."""
        cap = self.capacity(node)
        used = max(float(self._expected[node]), self._real.get(node, 0.0))
        return cap - used - (1.0 - self.params.high_water) * cap

    def node_fits(self, node: str, req: RouteRequest, hop_layers: int = 1) -> bool:
        """Fail-KV test for one hop: the node's whole layer count is charged, as in the paper."""
        return self.admits(node, self.expected_tokens(req), hop_layers)

    def admits(self, node: str, tokens: int, hop_layers: int = 1) -> bool:
        """`node_fits` for a request expected to hold `tokens` per layer (`expected_tokens`), computed once
        per request by a router that tests many hops. The same arithmetic as `headroom`, inlined: this is
        the innermost test of every routing decision."""
        cap = self._capacity.get(node)
        if cap is None:
            raise UnknownName("node", node, list(self._capacity))
        used = max(float(self._expected[node]), self._real.get(node, 0.0))
        return cap - used - self._slack[node] >= tokens * self._held_layers.get(node, hop_layers)

    def fits(self, chain: Chain, req: RouteRequest) -> bool:
        return all(self.node_fits(h.node, req, h.layers.size) for h in chain)

    # -- booking -------------------------------------------------------------------------------------
    def charge(self, chain: Chain, req: RouteRequest) -> None:
        """Book expected use on every hop (entries = expected tokens x layers the hop runs). A second
        charge for the same request first releases the old one (a re-route after a failure)."""
        if req.request_id in self._charges:
            self.release(req.request_id)
        tokens = self.expected_tokens(req)
        for hop in chain:
            if hop.node not in self._capacity:  # UnknownName before anything is booked
                self.capacity(hop.node)
        booked = tuple((hop.node, tokens * hop.layers.size) for hop in chain)
        expected = self._expected
        for node, amount in booked:
            expected[node] += amount
        if self._tally is not None:
            self._tally.add(booked)
        self._charges[req.request_id] = booked

    def release(self, request_id: str) -> bool:
        """Free what `request_id` booked (finish or abort); releasing twice is a no-op. True if freed."""
        booked = self._charges.pop(request_id, None)
        if booked is None:
            return False
        expected = self._expected
        tally = self._tally
        for node, amount in booked:
            old = expected.get(node)
            if old is not None:  # a removed node has no book left
                new = expected[node] = max(0, old - amount)
                if tally is not None:
                    tally.add(((node, new - old),))
        return True

    def correct(self, node: str, real_used_tokens: float) -> None:
        """Record the real use a worker reported (token x layer entries); admission then uses the larger
        of expected and real, so an estimate that runs low cannot overfill the cache."""
        self.capacity(node)
        self._real[node] = max(0.0, float(real_used_tokens))

    def remove_node(self, node: str) -> None:
        """A node left the fleet: drop its capacity and books (release its requests first)."""
        self._capacity.pop(node, None)
        self._expected.pop(node, None)
        self._real.pop(node, None)
        self._ranges.pop(node, None)
        self._held_layers.pop(node, None)
        self._slack.pop(node, None)
        self._groups = None
        self._tally = None

    def forget_node(self, node: str) -> None:
        """Drop the reported real use of a node (after it restarted or left)."""
        self._real.pop(node, None)

    # -- reading -------------------------------------------------------------------------------------
    def used(self, node: str) -> int:
        """Expected entries in use on `node`."""
        self.capacity(node)
        return self._expected[node]

    expected = used

    def real(self, node: str) -> float | None:
        return self._real.get(node)

    def charged(self, request_id: str) -> tuple[tuple[str, int], ...]:
        return self._charges.get(request_id, ())

    def active_requests(self) -> Iterable[str]:
        return tuple(self._charges)

    def total_used(self) -> int:
        return sum(self._expected.values())

    def _layer_groups(self) -> list[tuple[tuple[tuple[str, float, float], ...], float]]:
        """Runs of layers with the same holders: per run, (node, capacity share, 1/layers) per holder and
        the run's total capacity per layer. Built once; bottleneck usage then costs one pass over runs."""
        if self._groups is None:
            top = max(r.end for r in self._ranges.values())
            holders: list[tuple[str, ...]] = [()] * top
            for node, rng in self._ranges.items():
                for layer in range(rng.start, rng.end):
                    holders[layer] = (*holders[layer], node)
            groups = []
            for layer, hs in enumerate(holders):
                if not hs or (layer and holders[layer - 1] == hs):
                    continue
                parts = tuple(
                    (n, self._capacity.get(n, 0.0) / self._ranges[n].size, 1.0 / self._ranges[n].size)
                    for n in hs
                )
                groups.append((parts, sum(c for _, c, _ in parts)))
            self._groups = groups
        return self._groups

    def bottleneck_usage(self, used_by_node: Mapping[str, float] | Mapping[str, int] | None = None) -> float:
        """Paper's bottleneck: split each node's capacity and use evenly over its layers; per layer sum free
        and total over its holders; usage = 1 - free/total = used/total; the maximum over layers. Without
        `ranges`, the fullest node."""
        if used_by_node is None and self._ranges:
            # The feeder asks after every finished prompt and query: kept as running sums, not rescanned.
            if self._tally is None:
                self._tally = _UsageTally(self._layer_groups(), self._ranges, self._expected)
            return self._tally.usage()
        used = self._expected if used_by_node is None else used_by_node
        if not self._ranges:
            return max((used.get(n, 0.0) / c for n, c in self._capacity.items() if c > 0), default=0.0)
        best = 0.0
        for parts, total in self._layer_groups():
            if total > 0:
                u = sum(used.get(n, 0.0) * inv for n, _, inv in parts) / total
                if u > best:
                    best = u
        return best


class _UsageTally:
    """Bottleneck usage kept up to date as books change. Per run of layers, the expected use of its holders
    summed per layer count (the use is an integer, so the sums are exact and never drift); a run's usage is
    sum(use / layers) / capacity per layer, the same quantity `bottleneck_usage` sums holder by holder.
    A charge then touches only the runs its nodes hold, and a reading costs one pass over runs x sizes."""

    def __init__(
        self,
        groups: list[tuple[tuple[tuple[str, float, float], ...], float]],
        ranges: Mapping[str, LayerRange],
        expected: Mapping[str, int],
    ) -> None:
        self.sums: list[int] = []
        # Per run with capacity: its total capacity per layer and (index into sums, 1 / layers) per size.
        self.runs: list[tuple[float, tuple[tuple[int, float], ...]]] = []
        slots_of: dict[str, list[int]] = {}
        for parts, total in groups:
            by_size: dict[int, int] = {}
            for node, _, _ in parts:
                size = ranges[node].size
                if size not in by_size:
                    by_size[size] = len(self.sums)
                    self.sums.append(0)
                slot = by_size[size]
                self.sums[slot] += expected.get(node, 0)
                slots_of.setdefault(node, []).append(slot)
            if total > 0:
                self.runs.append((total, tuple((slot, 1.0 / size) for size, slot in by_size.items())))
        self.slots = {n: tuple(s) for n, s in slots_of.items()}

    def add(self, deltas: Iterable[tuple[str, int]]) -> None:
        sums = self.sums
        for node, delta in deltas:
            for slot in self.slots.get(node, ()):
                sums[slot] += delta

    def usage(self) -> float:
        sums = self.sums
        best = 0.0
        for total, parts in self.runs:
            u = sum(sums[slot] * inv for slot, inv in parts) / total
            if u > best:
                best = u
        return best
