import random
from typing import Any

from simulator.arrivals import Pending, drain, due, post, waiting
from simulator.request import Query


def sent(rng: random.Random, qids: list[int], entries: int) -> list[list[Any]]:
    """Steps' records as a worker builds them: per link, times strictly increasing, ties between links."""
    records: list[list[Any]] = []
    while qids:
        k = min(len(qids), rng.randint(1, 6))
        t = rng.choice([0.0, 0.5, 1.0, 1.5, 2.0, 2.5])
        record: list[Any] = [rng.randrange(entries), None]
        for _ in range(k):
            q = Query(qids.pop(), rng.choice([1, 1, 1, 40]), 5, 0.0)
            record += [t, q]
            t += rng.choice([0.25, 0.5])  # lands on other records' times: ties broken by query id
        records.append(record)
    return records


def test_draining_takes_queries_in_time_then_id_order_as_one_entry_each_would() -> None:
    rng = random.Random(7)
    for trial in range(200):
        qids = list(range(1, 60))
        rng.shuffle(qids)
        pending: list[Pending] = []
        expected: list[tuple[float, int, Query, int]] = []
        for record in sent(rng, qids, entries=2):
            post(pending, record)
            for i in range(2, len(record), 2):
                q = record[i + 1]
                expected.append((record[i], q.qid, q, record[0]))
        expected.sort(key=lambda e: (e[0], e[1]))
        assert [e[1] for e in waiting(pending)] == [e[1] for e in expected]
        queues: list[list[Query]] = [[], []]
        got: list[list[int]] = [[], []]
        taken = 0
        tokens = 0
        for now in (0.6, 1.0, 2.2, 3.1, 99.0):
            assert due(pending, now) == sum(1 for e in expected if e[0] <= now) - taken
            if pending and pending[0][0] <= now:
                tokens += drain(pending, now, queues, None)
            for entry, queue in enumerate(queues):
                got[entry] += [q.qid for q in queue]
                taken += len(queue)
                queue.clear()
            # Everything due is queued, in order, at its entry, and nothing that was not due.
            for entry in (0, 1):
                assert [e[1] for e in expected if e[0] <= now and e[3] == entry] == got[entry], trial
        assert not pending and tokens == sum(e[2].seq_len for e in expected)


def test_a_reaper_drops_the_queries_it_claims_and_keeps_the_rest_in_order() -> None:
    qs = [Query(i, 1, 5, 0.0) for i in range(1, 6)]
    pending: list[Pending] = []
    post(pending, [0, None, 1.0, qs[0], 2.0, qs[1], 3.0, qs[2]])
    post(pending, [0, None, 2.5, qs[3]])
    post(pending, [0, None, 0.5, qs[4]])
    dropped: list[int] = []

    def reap(q: Query, entry: int) -> bool:
        if q.qid % 2:
            dropped.append(q.qid)
            return True
        return False

    queues: list[list[Query]] = [[]]
    assert drain(pending, 10.0, queues, reap) == 2
    assert [q.qid for q in queues[0]] == [2, 4] and dropped == [5, 1, 3]
