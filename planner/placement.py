"""Which contiguous range of layers every node holds."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from planner.errors import InvalidInput


@dataclass(frozen=True, order=True)
class LayerRange:
    """Half-open [start, end)."""

    start: int
    end: int

    def __post_init__(self) -> None:
        if self.start < 0 or self.end <= self.start:
            raise InvalidInput(f"layer range [{self.start}, {self.end}) is empty or negative")

    @property
    def size(self) -> int:
        return self.end - self.start

    def __contains__(self, layer: object) -> bool:
        return isinstance(layer, int) and self.start <= layer < self.end

    def __str__(self) -> str:
        return f"[{self.start},{self.end})"


@dataclass(frozen=True)
class Placement:
    """node name -> LayerRange for every node that holds layers; nodes absent hold nothing (idle)."""

    num_layers: int
    ranges: Mapping[str, LayerRange] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.num_layers < 1:
            raise InvalidInput(f"num_layers must be >= 1, got {self.num_layers}")
        for name, rng in self.ranges.items():
            if rng.end > self.num_layers:
                raise InvalidInput(
                    f"node {name!r}: layer range {rng} is out of bounds for a {self.num_layers}-layer model",
                    field=name,
                )

    def __iter__(self) -> Iterator[str]:
        return iter(self.ranges)

    def __len__(self) -> int:
        return len(self.ranges)

    def get(self, node: str) -> LayerRange | None:
        return self.ranges.get(node)

    def holders_starting_at(self, layer: int) -> tuple[str, ...]:
        return tuple(n for n, r in self.ranges.items() if r.start == layer)

    def layer_coverage(self) -> list[int]:
        """How many nodes hold each layer."""
        counts = [0] * self.num_layers
        for rng in self.ranges.values():
            for layer in range(rng.start, rng.end):
                counts[layer] += 1
        return counts

    def uncovered(self) -> tuple[tuple[int, int], ...]:
        """Maximal runs of layers no node holds, as half-open ranges."""
        runs: list[tuple[int, int]] = []
        start: int | None = None
        for layer, count in enumerate(self.layer_coverage() + [1]):
            if count == 0 and start is None:
                start = layer
            elif count and start is not None:
                runs.append((start, layer))
                start = None
        return tuple(runs)

    def has_full_chain(self) -> bool:
        """True when some chain of exactly-joining ranges goes from layer 0 to num_layers."""
        reachable = {0}
        frontier = [0]
        while frontier:
            at = frontier.pop()
            for rng in self.ranges.values():
                if rng.start == at and rng.end not in reachable:
                    reachable.add(rng.end)
                    frontier.append(rng.end)
        return self.num_layers in reachable

    def without(self, nodes: set[str] | frozenset[str]) -> Placement:
        return Placement(self.num_layers, {n: r for n, r in self.ranges.items() if n not in nodes})
