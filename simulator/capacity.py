"""Capacity at a latency SLO: the highest online arrival rate a plan sustains with p95 time to first token
and p95 time per output token under their targets, found by an exponential-then-binary search on the rate
(each probe one online simulation with the same seed).

What the targets mean in the simulator's terms:
- TTFT = a query's arrival at the coordinator to its prompt's output: the wait for admission (a query no
  chain can take waits in the feeder's FIFO backlog) plus the prompt's round trip through the pipeline
  (the paper's "prompt latency", which counts from admission only). `SimResult.ttft_s`.
- TPOT = the paper's "decode latency": the round trip of one decode iteration, i.e. the gap between two
  output tokens of a query. Its p95 is taken over tokens, not over per-query means, so it is the stricter
  of the two usual readings.

Sustainability. A rate is sustained when every query that arrived got its first token before the run
ended (feeding for D seconds, then at most D seconds to drain), at least MIN_ARRIVALS arrived (a p95 of
fewer is noise), and both p95s meet their targets. TTFT
counted from arrival is itself the backlog test: above the fleet's service rate mu the backlog grows
without bound, so the k-th arrival waits about (k/lambda)(lambda/mu - 1); the last 5% of arrivals then
wait about 0.95 D (lambda/mu - 1), which exceeds a target S once lambda/mu - 1 > S / (0.95 D). With
D = 300 s and S = 5 s an overload of more than 1.8% fails the TTFT target, about the search's tolerance;
longer runs resolve finer. Queries still waiting when the run ends fail the probe outright.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any

from planner.cluster import Cluster
from planner.errors import InvalidInput
from planner.model import ModelSpec
from planner.plan import Plan
from planner.profile import ProfileSet
from simulator.config import SimConfig
from simulator.run import SimResult, simulate
from simulator.workload import load_lengths

DEFAULT_TOLERANCE = 0.02
# A p95 over fewer queries is the worst one or two of a handful: a probe needs this many arrivals to count as
# evidence that a rate is sustained (a run too short or a rate too low for that fails the probe).
MIN_ARRIVALS = 20
# Probes per search at most (exponential phase plus bisection): a safety net, not a tuning knob.
MAX_PROBES = 40


@dataclass(frozen=True)
class SloTargets:
    ttft_p95_s: float
    tpot_p95_s: float

    def __post_init__(self) -> None:
        for name in ("ttft_p95_s", "tpot_p95_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise InvalidInput(f"a latency target must be > 0 s, got {value}", field=name)


@dataclass(frozen=True)
class Probe:
    """One simulated rate and what it gave."""

    rate_tok_per_s: float
    ttft_p95_s: float
    tpot_p95_s: float
    arrivals: int
    unserved: int
    decode_tok_per_s: float = 0.0

    def meets(self, targets: SloTargets) -> bool:
        return (
            self.arrivals >= MIN_ARRIVALS
            and self.unserved == 0
            and self.ttft_p95_s <= targets.ttft_p95_s
            and self.tpot_p95_s <= targets.tpot_p95_s
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Capacity:
    """`rate_tok_per_s` is the highest probed rate that met the targets (0 when none did); the true
    threshold lies in [rate, first_failing.rate) and the search stops once that bracket is within
    `tolerance`. `capped`: every rate up to `max_tok_per_s` met the targets."""

    targets: SloTargets
    rate_tok_per_s: float
    rate_req_per_s: float
    at: Probe | None
    first_failing: Probe | None
    simulations: int
    tolerance: float
    capped: bool
    probes: tuple[Probe, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "ttft_p95_target_s": self.targets.ttft_p95_s,
            "tpot_p95_target_s": self.targets.tpot_p95_s,
            "rate_tok_per_s": self.rate_tok_per_s,
            "rate_req_per_s": self.rate_req_per_s,
            "at": self.at.to_dict() if self.at else None,
            "first_failing": self.first_failing.to_dict() if self.first_failing else None,
            "simulations": self.simulations,
            "tolerance": self.tolerance,
            "capped": self.capped,
            "probes": [p.to_dict() for p in self.probes],
        }


def find_capacity(
    run: Callable[[float], Probe],
    targets: SloTargets,
    *,
    start_tok_per_s: float,
    tokens_per_request: float,
    tolerance: float = DEFAULT_TOLERANCE,
    min_tok_per_s: float | None = None,
    max_tok_per_s: float | None = None,
    growth: float = 2.0,
    stop_if_start_fails: bool = False,
    should_stop: Callable[[], bool] | None = None,
) -> Capacity:
    """Search the rate `run(rate)` meets `targets` at: from `start_tok_per_s`, grow by `growth` while it
    meets (up to `max_tok_per_s`) or halve while it fails (down to `min_tok_per_s`, default start / 1024),
    then bisect (geometrically) until the failing rate is within `tolerance` of the meeting one. Assumes
    latency grows with load; a run that is not monotone still yields a meeting rate with a failing one just
    above it. `stop_if_start_fails`: one run answers "below the start rate" (capacity 0, `first_failing`
    the start), for a caller that only needs to know whether a plan beats a known rate. `should_stop`: asked
    before every run after the first; once true the search ends with what it has (a caller out of time)."""
    if not (math.isfinite(start_tok_per_s) and start_tok_per_s > 0):
        raise InvalidInput(f"start rate must be > 0 tokens/s, got {start_tok_per_s}", field="start_tok_per_s")
    if not 0 < tolerance < 1:
        raise InvalidInput(f"tolerance must be in (0, 1), got {tolerance}", field="tolerance")
    if not tokens_per_request > 0:
        raise InvalidInput(f"must be > 0, got {tokens_per_request}", field="tokens_per_request")
    if not (math.isfinite(growth) and growth > 1 + tolerance):
        raise InvalidInput(f"growth must exceed 1 + tolerance, got {growth}", field="growth")
    floor = min_tok_per_s if min_tok_per_s is not None else start_tok_per_s / 1024
    cap = max_tok_per_s if max_tok_per_s is not None else math.inf
    if not 0 < floor <= start_tok_per_s <= cap:
        raise InvalidInput(
            f"need 0 < min {floor} <= start {start_tok_per_s} <= max {cap} tokens/s", field="start_tok_per_s"
        )
    probes: list[Probe] = []

    def more() -> bool:
        return len(probes) < MAX_PROBES and not (should_stop is not None and should_stop())

    def probe(rate: float) -> Probe:
        p = run(rate)
        probes.append(replace(p, rate_tok_per_s=rate))
        return probes[-1]

    good: Probe | None = None
    bad: Probe | None = None
    first = probe(start_tok_per_s)
    if first.meets(targets):
        good = first
        while good.rate_tok_per_s < cap and more():
            p = probe(min(cap, growth * good.rate_tok_per_s))
            if not p.meets(targets):
                bad = p
                break
            good = p
    else:
        bad = first
        while not stop_if_start_fails and bad.rate_tok_per_s > floor and more():
            p = probe(max(floor, bad.rate_tok_per_s / 2))
            if p.meets(targets):
                good = p
                break
            bad = p
    if good is not None and bad is not None:
        while bad.rate_tok_per_s > good.rate_tok_per_s * (1 + tolerance) and more():
            p = probe(math.sqrt(good.rate_tok_per_s * bad.rate_tok_per_s))
            if p.meets(targets):
                good = p
            else:
                bad = p
    rate = good.rate_tok_per_s if good is not None else 0.0
    return Capacity(
        targets=targets,
        rate_tok_per_s=rate,
        rate_req_per_s=rate / tokens_per_request,
        at=good,
        first_failing=bad,
        simulations=len(probes),
        tolerance=tolerance,
        capped=bad is None and good is not None and good.rate_tok_per_s >= cap,
        probes=tuple(probes),
    )


def probe_of(result: SimResult, rate_tok_per_s: float) -> Probe:
    """What a capacity search reads from one online run."""
    return Probe(
        rate_tok_per_s=rate_tok_per_s,
        ttft_p95_s=result.ttft_s.p95,
        tpot_p95_s=result.decode_latency_s.p95,
        arrivals=result.ttft_s.count + result.unserved,
        unserved=result.unserved,
        decode_tok_per_s=result.decode_tok_per_s,
    )


def online_config(base: SimConfig | None, duration_s: float) -> SimConfig:
    """`base` made an online run of `duration_s` that may drain for as long as it fed."""
    cfg = base or SimConfig()
    return replace(cfg, mode="online", duration_s=duration_s, max_drain_s=duration_s, watch_interval_s=0)


def plan_capacity(
    cluster: Cluster,
    model: ModelSpec,
    profiles: ProfileSet,
    plan: Plan,
    targets: SloTargets,
    *,
    base: SimConfig | None = None,
    duration_s: float = 600.0,
    tolerance: float = DEFAULT_TOLERANCE,
    start_tok_per_s: float | None = None,
    max_tok_per_s: float | None = None,
    growth: float = 2.0,
    stop_if_start_fails: bool = False,
    should_stop: Callable[[], bool] | None = None,
) -> Capacity:
    """The capacity search on the simulator: online runs of `plan` (same seed, workload and policy as
    `base`), starting at half the plan's max-flow estimate. Rates whose run would see fewer than about
    1.5 x MIN_ARRIVALS arrivals are not tried (they cannot pass): capacity 0 means "none above that floor".
    `growth`, `stop_if_start_fails`, `should_stop`: as `find_capacity`."""
    cfg = online_config(base, duration_s)
    tokens_per_request = load_lengths(cfg.lengths).mean_total
    floor = 1.5 * MIN_ARRIVALS * tokens_per_request / duration_s
    start = max(floor, start_tok_per_s or 0.5 * plan.objective_tok_per_s)

    def run(rate: float) -> Probe:
        return probe_of(simulate(cluster, model, profiles, plan, replace(cfg, target_tok_per_s=rate)), rate)

    return find_capacity(
        run,
        targets,
        start_tok_per_s=start,
        tokens_per_request=tokens_per_request,
        tolerance=tolerance,
        min_tok_per_s=floor,
        # No plan sustains much beyond its max-flow estimate (all tokens at typical batches).
        max_tok_per_s=max(start, max_tok_per_s or 4 * plan.objective_tok_per_s),
        growth=growth,
        stop_if_start_fails=stop_if_start_fails,
        should_stop=should_stop,
    )
