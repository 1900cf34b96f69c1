"""A tiny discrete-event loop: a heap of (time, sequence, handler, args). Equal-time events run in the
order they were scheduled (the sequence number breaks ties), so a run is deterministic for a seed."""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable
from heapq import heappush
from typing import Any

from planner.errors import InvalidInput

Handler = Callable[..., None]


class EventLoop:
    """`schedule(t, fn, *args)` then `run(until)`. Handlers may schedule more events; scheduling into the
    past is an error. Nothing is kept of handled events (memory stays bounded by what is pending)."""

    # SimWorker pushes onto `_heap` itself on its hot path, as `schedule` does (same sequence numbers,
    # same entries), for times it knows are not in the past.
    def __init__(self, start_s: float = 0.0) -> None:
        self.now = start_s
        self._heap: list[tuple[float, int, Handler, tuple[Any, ...]]] = []
        self._seq = 0
        self.handled = 0

    def schedule(self, time_s: float, fn: Handler, *args: Any) -> None:
        if time_s < self.now or time_s != time_s:  # (x != x: NaN, without a call on the hot path)
            raise InvalidInput(f"event at {time_s} s is before the clock ({self.now} s)")
        seq = self._seq = self._seq + 1
        heappush(self._heap, (time_s, seq, fn, args))

    def pending(self) -> int:
        return len(self._heap)

    def next_time(self) -> float | None:
        return self._heap[0][0] if self._heap else None

    def run(self, until_s: float | None = None, *, stop: Callable[[], bool] | None = None) -> None:
        """Handle events while the head is before `until_s` (all of them when None), then move the clock
        to `until_s`. `stop` is checked after every event (e.g. "every query finished"); when it ends the
        run, the clock stays at that event."""
        heap = self._heap
        pop = heapq.heappop
        limit = math.inf if until_s is None else until_s
        handled = 0
        stopped = False
        if stop is None:  # the usual run: one test less per event
            while heap and heap[0][0] < limit:
                t, _, fn, args = pop(heap)
                self.now = t
                fn(*args)
                handled += 1
        else:
            while heap and heap[0][0] < limit:
                t, _, fn, args = pop(heap)
                self.now = t
                fn(*args)
                handled += 1
                if stop():
                    stopped = True
                    break
        self.handled += handled
        # A stop leaves the clock where the condition came true (a drained run ends when it drained).
        if stopped:
            return
        if until_s is not None and (not heap or heap[0][0] >= until_s) and until_s > self.now:
            self.now = until_s
