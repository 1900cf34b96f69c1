"""Which layer ranges a worker takes requests for while it changes layers (Load): the pure rules.

A worker has at most three ranges at once: `serving` (new requests welcome), `draining` (the old range
after a load: only the requests already running on it, until the last one ends) and `loading` (being
read: refused per request with a retryable "loading", so a caller can retry once Load has returned).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from planner.errors import InvalidInput
from services.worker.records import LOAD_BESIDE, LOAD_DRAINED_FIRST, UNAVAILABLE
from services.worker.validate import Refusal

Span = tuple[int, int]
# The range of a worker that holds no layers (started without --layers, or unloaded by a Load of it).
EMPTY: Span = (0, 0)
LOAD_UNLOADED = "unloaded"


def is_empty(span: Span | None) -> bool:
    return span is None or span[0] == span[1]


@dataclass(frozen=True)
class Ranges:
    serving: Span | None
    draining: Span | None = None
    loading: Span | None = None


def within(start: int, end: int, span: Span | None) -> bool:
    return span is not None and span[0] <= start and end <= span[1]


def admit(ranges: Ranges, start: int, end: int, *, known: bool) -> tuple[Span, Refusal | None]:
    """The held range a segment for layers [start, end) runs in, or why it is refused now. A segment
    that fits none of the ranges gets the range to check it against (its refusal names that range)."""
    if ranges.serving is not None and within(start, end, ranges.serving):
        return ranges.serving, None
    if ranges.draining is not None and within(start, end, ranges.draining):
        if known:
            return ranges.draining, None
        moving = f"; it is moving to [{_fmt(ranges.serving or ranges.loading)})"
        return ranges.draining, Refusal(
            UNAVAILABLE,
            f"layers [{start},{end}) are draining on this worker{moving}: start new requests on another chain",
        )
    if ranges.loading is not None and within(start, end, ranges.loading):
        return ranges.loading, Refusal(
            UNAVAILABLE,
            f"this worker is loading layers [{_fmt(ranges.loading)}): retry when the load is done",
        )
    return ranges.serving or ranges.draining or (0, 0), None


def load_mode(
    held: frozenset[int], new: Span, budget_layers: int | None, *, held_count: int | None = None
) -> str:
    """Beside the old layers when both fit the worker's layer budget; else drain the old range first.
    A new range larger than the budget on its own can never fit. `held_count` (a backend that reads
    every layer of the new range again, holding them twice meanwhile): the layers in memory now."""
    wanted = set(range(*new))
    if budget_layers is not None and len(wanted) > budget_layers:
        raise InvalidInput(
            f"layers [{_fmt(new)}) are {len(wanted)} layers; this worker may hold at most {budget_layers}",
            field="end_layer",
        )
    beside = len(held | wanted) if held_count is None else held_count + len(wanted)
    if budget_layers is None or beside <= budget_layers:
        return LOAD_BESIDE
    return LOAD_DRAINED_FIRST


def overlap(a: Span | None, b: Span) -> Span | None:
    if a is None:
        return None
    start, end = max(a[0], b[0]), min(a[1], b[1])
    return (start, end) if start < end else None


def drained(active: Iterable[Span], target: Span) -> bool:
    """True once no running request uses a layer outside `target` (what will be kept)."""
    return all(within(s, e, target) for s, e in active)


def _fmt(span: Span | None) -> str:
    return "" if span is None else f"{span[0]},{span[1]}"
