"""What the dashboard remembers of the last minutes: finished requests and chain steps (a tee on the
engine's event log), and every worker ever seen with when it was lost. Pure bookkeeping, clock passed in."""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from services.coordinator.eventlog import EventLog
from services.coordinator.registry import LOST, WorkerState

HISTORY_S = 300.0  # "the last minutes": throughput and latency series and percentiles
BUCKET_S = 5.0
RECENT_REQUESTS = 50
# Hard caps on the rings, so a flood of tiny requests cannot grow memory within HISTORY_S.
MAX_REQUESTS = 20_000
MAX_STEPS = 50_000


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100) of `values`; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100.0 * len(ordered)))
    return float(ordered[rank - 1])


class Recorder(EventLog):
    """The engine's event log, passed through unchanged, plus in-memory rings of its request and iteration
    events for the dashboard (wall-clock times: they are shown to people)."""

    def __init__(self, inner: EventLog, clock: Callable[[], float] = time.time) -> None:
        super().__init__()
        self.inner = inner
        self.clock = clock
        self.started_s = clock()
        self.requests: deque[dict[str, Any]] = deque(maxlen=MAX_REQUESTS)
        self.steps: deque[tuple[float, int, int]] = deque(
            maxlen=MAX_STEPS
        )  # (wall, prompt tokens, decode tokens)

    @property
    def enabled(self) -> bool:
        return self.inner.enabled

    def iteration(self, **event: Any) -> None:
        self.inner.iteration(**event)
        if "step_s" in event:
            self.steps.append(
                (self.clock(), int(event.get("prompt_tokens", 0)), int(event.get("decode_tokens", 0)))
            )
            self._prune()

    def request(self, **event: Any) -> None:
        self.inner.request(**event)
        self.requests.append({**event, "wall": self.clock()})
        self._prune()

    def flush(self) -> None:
        self.inner.flush()

    def close(self) -> None:
        self.inner.close()

    def _prune(self) -> None:
        cutoff = self.clock() - HISTORY_S
        while self.steps and self.steps[0][0] < cutoff:
            self.steps.popleft()
        while self.requests and self.requests[0]["wall"] < cutoff and len(self.requests) > RECENT_REQUESTS:
            self.requests.popleft()

    def recent(self, n: int = RECENT_REQUESTS) -> list[dict[str, Any]]:
        """The last `n` finished requests, newest first, with the chain each took."""
        return list(reversed(list(self.requests)[-n:]))

    def latency(self) -> dict[str, dict[str, float | None]]:
        """p50/p95 of time to first token, per-token decode latency and end-to-end time over HISTORY_S."""
        cutoff = self.clock() - HISTORY_S
        rows = [r for r in self.requests if r["wall"] >= cutoff]
        out: dict[str, dict[str, float | None]] = {}
        for key in ("ttft_s", "decode_latency_s", "e2e_s"):
            vals = [float(r[key]) for r in rows if r.get(key) is not None]
            out[key] = {"p50": percentile(vals, 50), "p95": percentile(vals, 95), "n": float(len(vals))}
        return out

    def series(self) -> dict[str, list[float | None]]:
        """BUCKET_S buckets over the last HISTORY_S (or since start): tokens/s (prompt, decode), finished requests/s and the
        p50/p95 time to first token and decode latency of the requests that finished in each bucket."""
        now = self.clock()
        # Only the time since start (a fresh coordinator's charts are not five empty minutes wide).
        n = max(1, min(int(HISTORY_S // BUCKET_S), math.ceil((now - self.started_s) / BUCKET_S)))
        first = now - n * BUCKET_S
        t = [first + (i + 1) * BUCKET_S for i in range(n)]
        prompt: list[float | None] = [0.0] * n
        decode: list[float | None] = [0.0] * n
        done: list[float | None] = [0.0] * n
        ttft: list[list[float]] = [[] for _ in range(n)]
        dec: list[list[float]] = [[] for _ in range(n)]

        def bucket(wall: float) -> int | None:
            # Bucket i holds (t[i] - BUCKET_S, t[i]]: an event at `now` lands in the last one.
            i = math.ceil((wall - first) / BUCKET_S) - 1
            return i if 0 <= i < n else None

        for wall, p, d in self.steps:
            i = bucket(wall)
            if i is not None:
                prompt[i] = (prompt[i] or 0.0) + p / BUCKET_S
                decode[i] = (decode[i] or 0.0) + d / BUCKET_S
        for r in self.requests:
            i = bucket(r["wall"])
            if i is None:
                continue
            done[i] = (done[i] or 0.0) + 1 / BUCKET_S
            if r.get("ttft_s") is not None:
                ttft[i].append(float(r["ttft_s"]))
            if r.get("decode_latency_s") is not None:
                dec[i].append(float(r["decode_latency_s"]))
        return {
            "t": [round(x, 3) for x in t],
            "prompt_tok_per_s": prompt,
            "decode_tok_per_s": decode,
            "requests_per_s": done,
            "ttft_p50_s": [percentile(v, 50) for v in ttft],
            "ttft_p95_s": [percentile(v, 95) for v in ttft],
            "decode_p50_s": [percentile(v, 50) for v in dec],
            "decode_p95_s": [percentile(v, 95) for v in dec],
        }


@dataclass(frozen=True)
class Lost:
    state: WorkerState
    lost_wall_s: float


class NodeBook:
    """Workers that left the registry (lost, expired or deregistered), kept so the dashboard can show them
    as dead until they come back. A registry `watch` listener."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.lost: dict[str, Lost] = {}

    def on_event(self, kind: str, state: WorkerState) -> None:
        if kind == LOST:
            self.lost[state.info.name] = Lost(state, self.clock())
        else:
            self.lost.pop(state.info.name, None)
