"""Run metrics, aggregated as they happen (nothing per event is kept): decode tokens/s in a measurement
window, prompt and decode latency (mean exact, percentiles from a fine log histogram), all tokens/s."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

# Log-spaced latency bins: 1e-5 s .. 1e5 s at 0.2% width, so a percentile is within 0.1% of the sample.
_LO_S = 1e-5
_GROWTH = 1.002
_NBINS = int(math.log(1e10) / math.log(_GROWTH)) + 2


@dataclass(frozen=True)
class LatencyStats:
    count: int
    mean: float
    p50: float
    p95: float
    p99: float
    # The paper's artifact also reports these.
    p5: float = 0.0
    p25: float = 0.0
    p75: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class LatencyHistogram:
    """Constant memory: counts per log bin plus the exact sum; percentile = the paper's sorted[int(n*p)]."""

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}
        self.n = 0
        self.total = 0.0
        self._inv_log = 1.0 / math.log(_GROWTH)

    def add(self, value_s: float) -> None:
        i = 0 if value_s <= _LO_S else min(_NBINS - 1, int(math.log(value_s / _LO_S) * self._inv_log) + 1)
        self.counts[i] = self.counts.get(i, 0) + 1
        self.n += 1
        self.total += value_s

    def percentile(self, p: float) -> float:
        if self.n == 0:
            return 0.0
        rank = min(self.n - 1, int(self.n * p))
        seen = 0
        for i in sorted(self.counts):
            seen += self.counts[i]
            if seen > rank:
                # Geometric middle of the bin.
                return 0.0 if i == 0 else _LO_S * _GROWTH ** (i - 0.5)
        return 0.0

    def stats(self) -> LatencyStats:
        mean = self.total / self.n if self.n else 0.0
        pct = self.percentile
        return LatencyStats(self.n, mean, pct(0.5), pct(0.95), pct(0.99), pct(0.05), pct(0.25), pct(0.75))

    def cdf(self, points: int = 200) -> list[tuple[float, float]]:
        """(latency_s, share of samples <= it) at up to `points` bin edges, for plots."""
        if not self.n:
            return []
        out = []
        seen = 0
        keys = sorted(self.counts)
        step = max(1, len(keys) // points)
        for j, i in enumerate(keys):
            seen += self.counts[i]
            if j % step == 0 or j == len(keys) - 1:
                out.append((_LO_S * _GROWTH**i, seen / self.n))
        return out


class Metrics:
    """Window [window_start_s, window_end_s]: decode iterations finishing in it count one token each;
    latencies are sink arrival minus issue at the source. Every finished iteration counts its tokens
    (prompt length or 1) toward all-tokens/s over the whole run, as the paper's "Total time usage"."""

    def __init__(self, window_start_s: float, window_end_s: float, bin_s: float = 1.0) -> None:
        self.window_start_s = window_start_s
        self.window_end_s = window_end_s
        self.bin_s = bin_s
        self.prompt = LatencyHistogram()
        self.decode = LatencyHistogram()
        # Time to first token: arrival at the coordinator (before any wait for admission) to the prompt's
        # output, for queries that arrived in the window, whenever their first token came.
        self.ttft = LatencyHistogram()
        self.window_decode_tokens = 0
        self.window_prompt_tokens = 0
        self.total_tokens = 0
        self.total_decode_tokens = 0
        self.last_finish_s = 0.0
        self.finished_queries = 0
        self.finished_in_window = 0
        # Tokens finished per time bin (bounded by the run's length, not by the number of events).
        self.series: list[int] = []
        self.decode_series: list[int] = []

    def record(self, prompt: bool, latency_s: float, tokens: int, now: float) -> None:
        self.total_tokens += tokens
        if now > self.last_finish_s:
            self.last_finish_s = now
        b = int(now / self.bin_s)
        series = self.series
        if b >= len(series):
            grow = b + 1 - len(series)
            series.extend([0] * grow)
            self.decode_series.extend([0] * grow)
        series[b] += tokens
        if not prompt:
            self.total_decode_tokens += 1
            self.decode_series[b] += 1
        if self.window_start_s <= now <= self.window_end_s:
            if prompt:
                self.prompt.add(latency_s)
                self.window_prompt_tokens += tokens
            else:
                self.decode.add(latency_s)
                self.window_decode_tokens += 1

    def record_ttft(self, arrive_s: float, latency_s: float) -> None:
        if self.window_start_s <= arrive_s <= self.window_end_s:
            self.ttft.add(latency_s)

    def query_finished(self, input_len: int, output_len: int) -> None:
        self.finished_queries += 1

    @property
    def window_s(self) -> float:
        return self.window_end_s - self.window_start_s

    def decode_tok_per_s(self) -> float:
        return self.window_decode_tokens / self.window_s if self.window_s > 0 else 0.0

    def all_tok_per_s(self) -> float:
        return self.total_tokens / self.last_finish_s if self.last_finish_s > 0 else 0.0
