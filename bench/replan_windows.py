"""How bench/replan_live.py cuts its measured windows from one steady client loop, as the join test does
(tests/services/controller/test_join_throughput.py): each window records its bounds, the competing load over
it and each serving worker's Stats before and after; the after-window waits until no worker drains an old
range, and is measured again where the other tenants' load moved from the before-window's. Each window's
per-worker figures (steps/s, step time, tokens per step, busy share) sit beside the simulator's."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from bench.fidelity_live import worker_stats
from bench.fidelity_load import LoadSampler
from bench.replan_predict import Predicted

# Other runnable sessions (bench/fidelity_load.py), mean over a window: on 2 shared cores one more of them
# takes a share from every process of ours, so windows whose loads differ by more do not compare.
LOAD_TOLERANCE = 0.5
AFTER_TRIES = 3

StatsByNode = dict[str, dict[str, float]]


@dataclass
class Cut:
    """One measured window: its bounds (monotonic s), the load sampled over it, each worker's Stats at
    both ends."""

    start: float
    end: float
    sampler: LoadSampler
    first: StatsByNode
    last: StatsByNode

    @property
    def seconds(self) -> float:
        return self.end - self.start


def measure(addresses: dict[str, str], pids: list[int], seconds: float) -> Cut:
    """Sleeps `seconds` while the loop (started by the caller) runs, sampling the competing load."""
    first = asyncio.run(worker_stats(addresses))
    with LoadSampler(pids) as sampled:
        start = time.monotonic()
        time.sleep(seconds)
        end = time.monotonic()
    last = asyncio.run(worker_stats(addresses))
    return Cut(start, end, sampled, first, last)


def draining(addresses: dict[str, str]) -> list[str]:
    """The workers still serving an old range's requests (Stats.draining)."""
    return [n for n, st in asyncio.run(worker_stats(addresses)).items() if st.get("draining")]


def wait_drained(addresses: dict[str, str], timeout_s: float) -> float:
    """Until no worker drains an old range; the seconds it took. A rollout reports settled as soon as the
    new plan routes, while the old plan's requests still run over the old ranges."""
    t0 = time.monotonic()
    while busy := draining(addresses):
        if time.monotonic() - t0 > timeout_s:
            raise TimeoutError(f"old ranges still draining on {busy} after {timeout_s} s")
        time.sleep(0.2)
    return time.monotonic() - t0


def comparable(before: float, after: float, tolerance: float = LOAD_TOLERANCE) -> bool:
    """Whether two windows' mean competing loads are close enough for their rates to compare."""
    return abs(after - before) <= tolerance


@dataclass
class AfterWindows:
    """Every after-window measured (the last is the one used) and the competing load of each."""

    cuts: list[Cut] = field(default_factory=list)

    @property
    def used(self) -> Cut:
        return self.cuts[-1]

    @property
    def loads(self) -> list[float]:
        return [round(c.sampler.mean, 2) for c in self.cuts]


def after_windows(before: Cut, take: Callable[[], Cut], tries: int = AFTER_TRIES) -> AfterWindows:
    """Measures the after-window until its competing load compares with the before-window's, `tries`
    times at most (the last one stands then, its load reported beside the prediction made for it)."""
    out = AfterWindows()
    for _ in range(max(1, tries)):
        out.cuts.append(take())
        if comparable(before.sampler.mean, out.used.sampler.mean):
            break
    return out


STATS_STEP_WINDOW = 2048  # Stats' step_ms_mean covers a worker's last 2048 steps (services/worker/batcher.py)


def step_figures(
    first: dict[str, dict[str, float]], last: dict[str, dict[str, float]], window_s: float
) -> dict[str, dict[str, float]]:
    """Per worker over a window: steps per second, tokens per step, the share of the window it spent
    stepping, and the mean time of the steps taken in it. Stats' mean
    covers the worker's last 2048 steps over its whole life, so a worker that ran before the window would
    mix its earlier (differently loaded) steps in; while it has taken no more than 2048 steps, the window's
    own mean is the difference of the two running sums. Past that, the last 2048 steps' mean is all there is."""
    out = {}
    for n, st in last.items():
        before = first.get(n, {})
        steps = st["steps"] - before.get("steps", 0.0)
        step_ms = float(st["step_ms_mean"])
        if 0 < steps and st["steps"] <= STATS_STEP_WINDOW:
            total_ms = st["step_ms_mean"] * st["steps"] - before.get("step_ms_mean", 0.0) * before.get(
                "steps", 0.0
            )
            step_ms = float(total_ms / steps)
        tokens = st.get("tokens_processed", 0.0) - before.get("tokens_processed", 0.0)
        out[n] = {
            "steps_per_s": steps / window_s,
            "step_ms": step_ms,
            "tokens_per_step": tokens / steps if steps > 0 else 0.0,
            "busy": steps * step_ms / 1e3 / window_s,
        }
    return out


def per_node(measured: dict[str, dict[str, float]], sim: Predicted) -> dict[str, dict[str, float]]:
    """Measured beside simulated, per worker: steps per second and mean step time."""
    return {
        n: {
            "steps_per_s": round(m["steps_per_s"], 3),
            "sim_steps_per_s": round(sim.steps_per_s.get(n, 0.0), 3),
            "step_ms": round(m["step_ms"], 2),
            "sim_step_ms": round(sim.step_ms.get(n, 0.0), 2),
            "tokens_per_step": round(m.get("tokens_per_step", 0.0), 2),
            "sim_tokens_per_step": round(sim.tokens_per_step.get(n, 0.0), 2),
            "busy": round(m.get("busy", 0.0), 3),
            "sim_busy": round(sim.busy.get(n, 0.0), 3),
        }
        for n, m in measured.items()
    }
