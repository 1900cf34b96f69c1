"""What is on its way to a worker, a step at a time: the queries one step sends over one link travel as one
entry of the receiver's pending heap (an `Arrivals`), not one entry per query; a lone query keeps the
plain entry (time, id, query, entry index), which costs no object.

Over one link arrival times only grow (a FIFO link: each message starts when the previous one is through),
and a sender starts a new `Arrivals` at any tie, so within one the times strictly increase and its order
is the (time, query id) order the receiver must take queries in. The heap holds an `Arrivals` under its
first untaken (time, id); draining to `now` takes the longest prefix of the head one that comes before the
next head, in one slice. The receiver so takes the same queries in the same order as with one heap entry
per query, with a smaller heap and no push and pop per query and hop (tuple and float comparisons, mostly
the heaps', were a sixth of the instructions of a cluster24 run under callgrind)."""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Callable
from heapq import heappop, heappush
from operator import attrgetter
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from simulator.request import Query

# A pending heap entry: (time, query id, the query, its entry index) for one query, or (time, id, None,
# Arrivals) for several, under the first untaken one's time and id. Times and ids are unique keys (a query
# is in one place at a time), so the heap never compares what follows them.
Pending = tuple[float, int, Any, Any]

_SEQ_LEN = attrgetter("seq_len")


class Arrivals:
    """Queries bound for one entry of one worker, arrival times strictly increasing; `taken` of them are
    already queued there. `ones`: every query carries one token (decodes), so a slice's tokens are its
    length."""

    __slots__ = ("entry", "times", "queries", "taken", "ones")

    def __init__(self, entry: int, times: list[float], queries: list[Query]) -> None:
        self.entry = entry
        self.times = times
        self.queries = queries
        self.taken = 0
        self.ones = set(map(_SEQ_LEN, queries)) == {1}

    def due(self, now: float) -> int:
        """Queries not yet taken that have arrived by `now`."""
        return bisect_right(self.times, now, self.taken) - self.taken

    def waiting(self) -> list[tuple[float, int, Query, int]]:
        """The untaken queries as one-query entries."""
        return [
            (self.times[i], self.queries[i].qid, self.queries[i], self.entry)
            for i in range(self.taken, len(self.times))
        ]


def post(pending: list[Pending], record: list[Any]) -> None:
    """Put what a step sent over one link on the receiver's heap. `record` is [entry, receiver, then time,
    query for each query, times strictly increasing]."""
    entry = record[0]
    if len(record) == 4:
        q = record[3]
        heappush(pending, (record[2], q.qid, q, entry))
        return
    queries: list[Query] = record[3::2]
    heappush(pending, (record[2], queries[0].qid, None, Arrivals(entry, record[2::2], queries)))


def take_due(pending: list[Pending], now: float) -> tuple[Arrivals, list[Query], int]:
    """Pop the head Arrivals (due by `now`: the caller checks) and return it, its queries up to the next
    head's (time, id) or `now`, in order, and their tokens; what is left of it goes back on the heap."""
    run: Arrivals = heappop(pending)[3]
    i = run.taken
    times = run.times
    queries = run.queries
    n = len(times)
    if pending and pending[0][0] <= now:
        # Another entry is due too: stop before its head (times strictly increase here, so at most one of
        # ours has its time, and the query ids order those two). Query i comes first: it was the head.
        head = pending[0]
        ht = head[0]
        j = bisect_left(times, ht, i + 1)
        if j < n and times[j] == ht and queries[j].qid < head[1]:
            j += 1
    else:
        j = bisect_right(times, now, i + 1)
    took = queries if i == 0 and j == n else queries[i:j]
    run.taken = j
    if j < n:
        heappush(pending, (times[j], queries[j].qid, None, run))
    tokens = j - i if run.ones else sum(map(_SEQ_LEN, took))
    return run, took, tokens


def drain(
    pending: list[Pending], now: float, queues: list[list[Query]], reap: Callable[[Query, int], bool] | None
) -> int:
    """Queue every query that has arrived by `now` (the heap's head has: the caller checks), in (time, id)
    order, at its entry; returns their tokens. `reap(query, entry)` is True for a query it dropped."""
    tokens = 0
    while pending and pending[0][0] <= now:
        if pending[0][2] is not None:  # one query
            _, _, q, entry = heappop(pending)
            if reap is not None and reap(q, entry):
                continue
            queues[entry].append(q)
            tokens += q.seq_len
            continue
        run, took, n = take_due(pending, now)
        if reap is not None:
            took = [q for q in took if not reap(q, run.entry)]
            n = sum(map(_SEQ_LEN, took))
        queue = queues[run.entry]
        if queue:
            queue.extend(took)
        else:  # no copy: a slice is new, and a whole Arrivals is off the heap for good
            queues[run.entry] = took
        tokens += n
    return tokens


def due(pending: list[Pending], now: float) -> int:
    """Queries on the heap that have arrived by `now`."""
    return sum(1 if p[2] is not None else p[3].due(now) for p in pending if p[0] <= now)


def waiting(pending: list[Pending]) -> list[tuple[float, int, Query, int]]:
    """Every query on the heap as (time, id, query, entry index), in the order they would be taken."""
    out: list[tuple[float, int, Query, int]] = []
    for p in pending:
        if p[2] is not None:
            out.append(p)
        else:
            out += p[3].waiting()
    return sorted(out)
