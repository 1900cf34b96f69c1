"""Workloads: request length distributions (Azure conversation and code, Alpaca, ShareGPT) and arrival
traces (Azure, requests per 3-s bin), loaded in explicit load functions; the offline feeder (keep the fleet
full) and the online feeder (the trace rescaled to a target token rate)."""

from __future__ import annotations

import csv
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from planner.errors import InvalidInput, UnknownName
from simulator.engine import EventLoop
from simulator.warm_fill import FillShape, InFlightTable, halton_point, progress_of

DATA_DIR = Path(__file__).resolve().parent / "data"
# Same keys as the CLI's --lengths / --arrivals flags.
LENGTH_FILES = {
    "azure-conv": "azure_conv_lengths.csv",
    "azure-code": "azure_code_lengths.csv",
    "alpaca": "alpaca_lengths.csv",
    "sharegpt": "shared_gpt_lengths.csv",
}
ARRIVAL_FILES = {"azure-conv": "azure_conv_arrive_time.csv", "azure-code": "azure_code_arrive_time.csv"}
ARRIVAL_BIN_S = 3.0
# The paper's offline feeder spaces initial queries 0.1 s apart and launches refills 0.1 s later.
FEED_GAP_S = 0.1


@dataclass(frozen=True)
class LengthTable:
    """(input_len, output_len) pairs; the pairing by row matters, so one index draws both."""

    name: str
    pairs: tuple[tuple[int, int], ...]

    def sample(self, rng: random.Random) -> tuple[int, int]:
        return self.pairs[rng.randrange(len(self.pairs))]

    @property
    def mean_input(self) -> float:
        return sum(i for i, _ in self.pairs) / len(self.pairs)

    @property
    def mean_output(self) -> float:
        return sum(o for _, o in self.pairs) / len(self.pairs)

    @property
    def mean_total(self) -> float:
        return self.mean_input + self.mean_output


def _resolve(name_or_path: str, table: dict[str, str], sub: str, kind: str) -> Path:
    if name_or_path in table:
        return DATA_DIR / sub / table[name_or_path]
    path = Path(name_or_path)
    if path.suffix == ".csv" and path.exists():
        return path
    raise UnknownName(kind, name_or_path, list(table))


@lru_cache(maxsize=8)
def load_lengths(name_or_path: str) -> LengthTable:
    """A bundled length distribution by name, or a CSV with `input_len,output_len` columns."""
    path = _resolve(name_or_path, LENGTH_FILES, "lengths", "length distribution")
    pairs: list[tuple[int, int]] = []
    with path.open(newline="") as fh:
        for line, row in enumerate(csv.DictReader(fh), start=2):
            try:
                i, o = int(row["input_len"]), int(row["output_len"])
            except (KeyError, TypeError, ValueError):
                raise InvalidInput(
                    "expected integer input_len,output_len", source=str(path), field=f"line {line}"
                ) from None
            if i < 1 or o < 0:
                raise InvalidInput(
                    f"lengths must be input >= 1, output >= 0, got {i},{o}",
                    source=str(path),
                    field=f"line {line}",
                )
            pairs.append((i, o))
    if not pairs:
        raise InvalidInput("no rows", source=str(path))
    return LengthTable(name_or_path, tuple(pairs))


@lru_cache(maxsize=4)
def load_arrivals(name_or_path: str) -> tuple[int, ...]:
    """Requests per 3-s bin (CSV `interval_idx,num_requests`)."""
    path = _resolve(name_or_path, ARRIVAL_FILES, "arrivals", "arrival trace")
    counts: list[int] = []
    with path.open(newline="") as fh:
        for line, row in enumerate(csv.DictReader(fh), start=2):
            try:
                counts.append(int(row["num_requests"]))
            except (KeyError, TypeError, ValueError):
                raise InvalidInput(
                    "expected an integer num_requests", source=str(path), field=f"line {line}"
                ) from None
    if not counts or sum(counts) <= 0:
        raise InvalidInput("the trace has no requests", source=str(path))
    return tuple(counts)


Submit = Callable[[int, int], object]
# The online feeder also passes, for a query that waited for admission, when it arrived (a third argument).
SubmitArrived = Callable[..., object]
# (input_len, output_len, decode iterations already done, when to issue the next one) -> query or None
SubmitWarm = Callable[[int, int, int, float], object]
# A warm start spreads the first iterations over this long (about one per-token round trip) and gives up
# after this many refusals in a row (Fail-KV somewhere while the bottleneck gate is still open).
WARM_SPREAD_S = 1.0
WARM_MAX_MISSES = 20
# ... and never starts more than this many (a fleet with huge caches would otherwise make scoring slow).
WARM_MAX_QUERIES = 2000
# The gate's final count is extrapolated from its use once this many queries are in.
WARM_EXTRAPOLATE_AFTER = 8


class OfflineFeeder:
    """Keep the fleet full. `initial` queries start FEED_GAP_S apart; then, until `end_s`, with `kv_gate`
    (max-flow) one more query follows every finished prompt or query while the expected bottleneck KV use
    is at most `feed_high_water`; without it (baselines) each finished query is replaced, so concurrency
    stays at `initial`."""

    def __init__(
        self,
        loop: EventLoop,
        submit: Submit,
        lengths: LengthTable,
        rng: random.Random,
        *,
        start_s: float,
        end_s: float,
        initial: int,
        kv_gate: Callable[[], float] | None,
        feed_high_water: float = 0.8,
        warm: SubmitWarm | None = None,
        fill_shape: FillShape | None = None,
    ) -> None:
        self.loop = loop
        self.submit = submit
        self.lengths = lengths
        self.rng = rng
        self.end_s = end_s
        self.kv_gate = kv_gate
        self.feed_high_water = feed_high_water
        self.launched = 0
        self.warm_started = 0
        self.fill_shape = fill_shape or FillShape(ages_s=None, decode_tok_per_s=None)
        # Queries aborted by a worker failure that no chain admitted yet: retried first when one finishes.
        self.backlog: deque[tuple[int, int]] = deque()
        if warm is not None:
            # The fill draws from a stream of its own: however many queries a plan's caches take, the
            # queries launched afterwards are the same for every plan scored on one seed (common random
            # numbers), so two plans' scores differ by what the plans do, not by which lengths they drew.
            self.warm_rng = random.Random(rng.getrandbits(64))
            loop.schedule(start_s, self._warm_fill, warm, initial)
            return
        for i in range(initial):
            loop.schedule(start_s + i * FEED_GAP_S, self._launch)

    def _warm_fill(self, warm: SubmitWarm, initial: int) -> None:
        """Fill the fleet as a fleet fed for a while holds it (simulator.warm_fill): queries in flight
        are length-biased (a query stays in proportion to its output length, capped by its age) and
        uniformly far through their decodes. With a KV gate, fill until the gate closes; without one,
        `initial` queries (the baselines' fixed concurrency)."""
        now = self.loop.now
        rng = self.warm_rng
        table = InFlightTable.of(self.lengths.pairs)
        offsets = (rng.random(), rng.random(), rng.random(), rng.random())
        misses = 0
        k = 0
        while misses < WARM_MAX_MISSES and self.warm_started < WARM_MAX_QUERIES:
            if self.kv_gate is None:
                if self.warm_started >= initial:
                    break
                expected: float | None = initial
            else:
                usage = self.kv_gate()
                if usage > self.feed_high_water:
                    break
                # How many the gate will take, extrapolated from what it took so far (the cap needs it).
                expected = (
                    (self.warm_started + 1) * self.feed_high_water / usage
                    if self.warm_started >= WARM_EXTRAPOLATE_AFTER and usage > 0
                    else None
                )
            k += 1
            a, b, c, d = halton_point(offsets, k)
            cap = self.fill_shape.iteration_cap(a, expected)
            i, o = table.pick(cap, b, c)
            if warm(i, o, progress_of(o, cap, d), now + rng.random() * WARM_SPREAD_S) is None:
                misses += 1
                continue
            self.warm_started += 1

    def _launch(self) -> None:
        self.launched += 1
        self.submit(*self.lengths.sample(self.rng))

    def _maybe_launch(self, now: float) -> None:
        if now <= self.end_s:
            self.loop.schedule(now + FEED_GAP_S, self._launch)

    def on_prompt_done(self, now: float) -> None:
        if self.kv_gate is not None and self.kv_gate() <= self.feed_high_water:
            self._maybe_launch(now)

    def on_query_done(self, now: float) -> None:
        if self.backlog:
            if self.submit(*self.backlog[0]) is not None:
                self.backlog.popleft()
            return
        if self.kv_gate is None or self.kv_gate() <= self.feed_high_water:
            self._maybe_launch(now)

    def requeue(self, input_len: int, output_len: int) -> None:
        self.backlog.append((input_len, output_len))

    def resume(self) -> None:
        """The fleet serves again after a plan switch (simulator.transition): re-run the aborted queries
        that waited for a chain, then feed as after a finished prompt (nothing may be left to trigger it)."""
        while self.backlog and self.submit(*self.backlog[0]) is not None:
            self.backlog.popleft()
        self.on_prompt_done(self.loop.now)

    @property
    def requeued_waiting(self) -> int:
        """Aborted queries still waiting for a chain (here the backlog holds nothing else)."""
        return len(self.backlog)


class OnlineFeeder:
    """Arrivals follow an Azure trace: rate lambda = target tokens/s / mean (input + output) of the lengths;
    the 3-s bins are rescaled to mean 3*lambda; each interval draws a bin at random (with replacement),
    rounds with carry-over, and spreads that many arrivals uniformly over it. Intervals are generated one at
    a time, so memory does not grow with the horizon. Queries the policy cannot admit wait in a FIFO
    backlog and are retried whenever a query finishes."""

    def __init__(
        self,
        loop: EventLoop,
        submit: SubmitArrived,
        lengths: LengthTable,
        arrivals: tuple[int, ...],
        rng: random.Random,
        *,
        start_s: float,
        duration_s: float,
        target_tok_per_s: float,
    ) -> None:
        if target_tok_per_s <= 0:
            raise InvalidInput(
                f"target token rate must be > 0, got {target_tok_per_s}", field="target_tok_per_s"
            )
        self.loop = loop
        self.submit = submit
        self.lengths = lengths
        self.rng = rng
        rate = target_tok_per_s / lengths.mean_total
        scale = ARRIVAL_BIN_S * rate / (sum(arrivals) / len(arrivals))
        self.bins = tuple(c * scale for c in arrivals)
        self.start_s = start_s
        self.intervals = int(duration_s // ARRIVAL_BIN_S)
        self.carry = 0.0
        self.issued = 0
        self.backlog: deque[tuple[int, int]] = deque()
        self.arrived_s: deque[float] = deque()  # beside `backlog`: when each waiting query arrived
        self.deferred = 0
        # Requeued (aborted) queries go to the front, arrivals to the back, and both leave from the front:
        # so the requeued ones are always the backlog's first `requeued_waiting` entries.
        self.requeued_waiting = 0
        if self.intervals > 0:
            loop.schedule(start_s, self._interval, 0)

    def _interval(self, k: int) -> None:
        value = self.rng.choice(self.bins) + self.carry
        n = int(value)
        self.carry = value - n
        t0 = self.start_s + k * ARRIVAL_BIN_S
        for t in sorted(t0 + self.rng.random() * ARRIVAL_BIN_S for _ in range(n)):
            self.loop.schedule(t, self._arrive, self.lengths.sample(self.rng))
        if k + 1 < self.intervals:
            self.loop.schedule(t0 + ARRIVAL_BIN_S, self._interval, k + 1)

    def _arrive(self, lengths: tuple[int, int]) -> None:
        self.issued += 1
        if self.backlog or self.submit(*lengths) is None:
            self.backlog.append(lengths)
            self.arrived_s.append(self.loop.now)
            self.deferred += 1

    def _drain(self) -> None:
        while self.backlog:
            # A query's time to first token counts from its arrival, not from its admission.
            if self.submit(*self.backlog[0], self.arrived_s[0]) is None:
                return
            self.backlog.popleft()
            self.arrived_s.popleft()
            self.requeued_waiting = max(0, self.requeued_waiting - 1)

    def on_prompt_done(self, now: float) -> None:
        return None

    def on_query_done(self, now: float) -> None:
        self._drain()

    def resume(self) -> None:
        """The fleet serves again after a plan switch: admit what waited, requeued queries first."""
        self._drain()

    def requeue(self, input_len: int, output_len: int) -> None:
        """A query aborted by a failure that no chain admits right now waits at the front of the backlog."""
        self.backlog.appendleft((input_len, output_len))
        self.arrived_s.appendleft(self.loop.now)
        self.requeued_waiting += 1

    @property
    def done_issuing(self) -> bool:
        return self.loop.now >= self.start_s + self.intervals * ARRIVAL_BIN_S and not self.backlog
