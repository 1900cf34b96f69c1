"""Sending a finished step's queries on to their next stage: SimLink.send and SimWorker.arrive inlined, the
hot path of the whole simulation (once per query and hop).

Two ways that give the same run, picked per step by its size: a small step pushes one pending entry per
query on the receiver's heap, as arrive() does; a big one gathers what it sends over each link and posts it
as one entry (simulator.arrivals), which spares the receiver a heap push and pop per query but costs a
list per link, a loss when a step sends one or two queries over each link (1,000-GPU fleets spread theirs
over three links a step), a gain when it sends a dozen over one (cluster24)."""

from __future__ import annotations

from collections.abc import Callable
from heapq import heappush
from typing import Any

from simulator.arrivals import post
from simulator.request import Query

# Steps of this many queries or more post them per link.
BY_LINK_FROM = 6


def forward_each(
    batch: list[Query], now: float, depart: Callable[[Query, float], None], observed: bool
) -> None:
    """One pending entry per query."""
    push = heappush
    for q in batch:
        hop = q.hop_i + 1
        q.hop_i = hop
        if observed:  # only the policy's hop-time feedback reads it
            q.t_left = now
        route = q.route
        if hop < len(route):
            w, entry, link = route[hop]
            free = link.free_at
            free = (free if free > now else now) + q.seq_len * link.s_per_token
            link.free_at = free
            t = free + link.latency_s
            if w.failed:
                w.arrive(t, q, entry)
                continue
            push(w.pending, (t, q.qid, q, entry))
            if not w.busy:
                wake = w.wake_at
                if wake is None or t < wake:
                    w.wake_at = t
                    # EventLoop.schedule inlined (t >= now: a link never delivers early).
                    wl = w.loop
                    seq = wl._seq = wl._seq + 1
                    push(wl._heap, (t, seq, w.wake_cb, (t,)))
        else:
            depart(q, now)


def forward_by_link(
    batch: list[Query], now: float, depart: Callable[[Query, float], None], observed: bool
) -> None:
    """One pending entry per link: what goes over it is gathered as [entry, receiver, time, query, time,
    query, ...], times strictly increasing (a tie starts another), and posted after the loop."""
    push = heappush
    sent: dict[object, list[Any]] = {}
    for q in batch:
        hop = q.hop_i + 1
        q.hop_i = hop
        if observed:
            q.t_left = now
        route = q.route
        if hop < len(route):
            w, entry, link = route[hop]
            free = link.free_at
            free = (free if free > now else now) + q.seq_len * link.s_per_token
            link.free_at = free
            t = free + link.latency_s
            if w.failed:
                # A drop may re-route (and read queue lengths): post what is held back first.
                for held in sent.values():
                    post(held[1].pending, held)
                sent.clear()
                w.arrive(t, q, entry)
                continue
            record = sent.get(link)
            if record is not None:
                if record[-2] < t and record[0] == entry:
                    # Behind the previous query on this link: it can neither wake the receiver earlier
                    # nor pass a query that is waiting there.
                    record.append(t)
                    record.append(q)
                    continue
                post(w.pending, record)
            # Posted after the loop: nothing else in it reads a receiver's pending heap.
            sent[link] = [entry, w, t, q]
            if not w.busy:
                wake = w.wake_at
                if wake is None or t < wake:
                    w.wake_at = t
                    wl = w.loop
                    seq = wl._seq = wl._seq + 1
                    push(wl._heap, (t, seq, w.wake_cb, (t,)))
        else:
            depart(q, now)
    for record in sent.values():
        post(record[1].pending, record)


def forward_messages(
    batch: list[Query], now: float, depart: Callable[[Query, float], None], observed: bool
) -> None:
    """BRL's workers (simulator.chain_steps): what a step sends over one link is one message, so its
    queries arrive together, once the whole message is through."""
    by_link: dict[object, list[Query]] = {}
    for q in batch:
        hop = q.hop_i + 1
        q.hop_i = hop
        if observed:
            q.t_left = now
        if hop < len(q.route):
            by_link.setdefault(q.route[hop][2], []).append(q)
        else:
            depart(q, now)
    for qs in by_link.values():
        link = qs[0].route[qs[0].hop_i][2]
        free = link.free_at
        free = link.free_at = (free if free > now else now) + sum(q.seq_len for q in qs) * link.s_per_token
        t = free + link.latency_s
        for q in qs:
            w, entry, _ = q.route[q.hop_i]
            w.arrive(t, q, entry)
