"""What a warm start puts in flight: the queries a fleet fed for a while holds, drawn so that one short
scoring run sees close to the average population rather than one random draw of it.

A fleet that has run for `age` seconds holds a query of output length o in proportion to how long it stays,
min(o + 1, age / tau) decode iterations at tau seconds per token, and it is uniformly far through the part
it can have done, up to min(o, age / tau). Uncapped (age -> infinity) this is the long-run steady state,
where queries of 1,000 tokens at ~1 s a token have been decoding for a quarter of an hour; a 660-s offline
run, the run a score predicts, never holds those, and a fill made of them scored plans 5-9% low.

The draws follow a low-discrepancy sequence (Halton's, randomly shifted) instead of independent random
numbers, so age, length, input and progress of the fill's queries cover their ranges evenly. The fill is the
smaller part of a score's spread across seeds (cluster24's best plan: sd 4.5 with only the fill varied, 9.0
with only the later queries varied), and over 16 seeds even and random fills spread alike (sd ~10 of 332):
what settles a close call is serve's confirming runs (planner.solvers.confirm)."""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass
from functools import lru_cache

# Bases of the four coordinates: age, output length, input, progress (the first the finest spread).
HALTON_BASES = (3, 2, 7, 5)


def _radical_inverse(k: int, base: int) -> float:
    """k's digits in `base` mirrored about the point: the van der Corput sequence."""
    value, scale = 0.0, 1.0 / base
    while k:
        k, digit = divmod(k, base)
        value += digit * scale
        scale /= base
    return value


def halton_point(offsets: tuple[float, float, float, float], k: int) -> tuple[float, float, float, float]:
    """The k-th point of the Halton sequence in bases HALTON_BASES, shifted by `offsets` modulo 1 (a
    random shift per seed keeps each coordinate evenly spread and the runs of two seeds different)."""
    a, b, c, d = (
        (off + _radical_inverse(k, base)) % 1.0 for off, base in zip(offsets, HALTON_BASES, strict=True)
    )
    return a, b, c, d


@dataclass(frozen=True)
class InFlightTable:
    """Length pairs grouped by output length, with prefix sums that make the weight of the shorter outputs,
    sum of count(o) * min(o + 1, limit), an O(1) lookup for any `limit`: so drawing from the capped
    population is a bisection, whatever the cap."""

    outputs: tuple[int, ...]
    inputs: tuple[tuple[int, ...], ...]  # per output length, sorted
    counts: tuple[float, ...]  # prefix sums of count(o)
    weights: tuple[float, ...]  # prefix sums of count(o) * (o + 1)

    @classmethod
    def of(cls, pairs: tuple[tuple[int, int], ...]) -> InFlightTable:
        return _table(pairs)

    def _weight_below(self, m: int, limit: float, split: int) -> float:
        """Weight of outputs[:m] at `limit`, where outputs[:split] are the ones with o + 1 < limit."""
        if m <= split:
            return self.weights[m]
        return self.weights[split] + limit * (self.counts[m] - self.counts[split])

    def pick(self, limit: float, u: float, v: float) -> tuple[int, int]:
        """(input, output) at quantile u of the output lengths weighted by min(o + 1, limit), and at
        quantile v of that output's inputs."""
        split = bisect.bisect_left(self.outputs, limit - 1)
        n = len(self.outputs)
        target = u * self._weight_below(n, limit, split)
        lo, hi = 0, n - 1
        while lo < hi:
            mid = (lo + hi) // 2
            if self._weight_below(mid + 1, limit, split) <= target:
                lo = mid + 1
            else:
                hi = mid
        ins = self.inputs[lo]
        return ins[min(len(ins) - 1, int(v * len(ins)))], self.outputs[lo]


@lru_cache(maxsize=8)
def _table(pairs: tuple[tuple[int, int], ...]) -> InFlightTable:
    by_output: dict[int, list[int]] = {}
    for i, o in pairs:
        by_output.setdefault(o, []).append(i)
    outputs = tuple(sorted(by_output))
    counts, weights = [0.0], [0.0]
    for o in outputs:
        counts.append(counts[-1] + len(by_output[o]))
        weights.append(weights[-1] + len(by_output[o]) * (o + 1))
    return InFlightTable(
        outputs, tuple(tuple(sorted(by_output[o])) for o in outputs), tuple(counts), tuple(weights)
    )


@dataclass(frozen=True)
class FillShape:
    """How old the warm fleet is: query ages are drawn uniformly from `ages_s` (seconds since the fleet
    started; None = the long-run steady state) and turned into decode iterations at the per-token time
    Little's law gives, queries in flight / `decode_tok_per_s` (an estimate: the plan's max-flow times the
    decode share of the lengths)."""

    ages_s: tuple[float, float] | None
    decode_tok_per_s: float | None

    def iteration_cap(self, age_quantile: float, queries_in_flight: float | None) -> float:
        """The most decode iterations a query of the fill can have done (math.inf: no cap)."""
        if self.ages_s is None or not self.decode_tok_per_s or not queries_in_flight:
            return math.inf
        lo, hi = self.ages_s
        age = lo + age_quantile * (hi - lo)
        return max(1.0, age * self.decode_tok_per_s / queries_in_flight)


def progress_of(output_len: int, cap: float, w: float) -> int:
    """Decode iterations done, uniform over 1..min(output_len, cap) at quantile w (0 for no output)."""
    if output_len <= 0:
        return 0
    span = max(1, min(output_len, int(cap)) if cap != math.inf else output_len)
    return 1 + min(span - 1, int(w * span))
