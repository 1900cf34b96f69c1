"""KV leases of coordinator replicas on one worker: every live replica session holds an equal share of the
worker's KV cache, reports only its own use, and loses its requests here when its heartbeats stop.

Pure bookkeeping with the clock passed in; services/worker/registration.py drives it.

Design: N coordinator replicas serve one fleet and every worker registers with each of them. Two rules
together keep the replicas from over-committing a worker's KV:
  1. Shares (admission budget). Each replica sees `capacity // live replicas` as the worker's capacity
     (in Register and in every heartbeat) and the KV its own requests use here, so each replica's KV book
     admits within its share alone; when a replica joins or goes, the shares change on the next heartbeat.
     Equal shares need no agreement between replicas: the worker is the only party that counts them.
  2. The worker's own check (hard limit). The batcher refuses, per request, any step that does not fit in
     the whole cache (RESOURCE_EXHAUSTED); the replica then routes that request elsewhere. Shares make
     this rare (only just after a rebalance shrank a share); this check makes over-commit impossible.
A request belongs to the session whose coordinator id appears in its id as `-<coordinator id>-` (the
coordinator makes every request id that way), so a dead replica's requests are found by id alone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

# A replica silent this long is gone: its requests here are freed and its share returns to the others.
# 4 heartbeats of 0.5 s, as the coordinator itself waits before dropping a worker; well under the 5 s in
# which a dead replica's KV must be back. A replica that asks for slower heartbeats gets MISSED_BEATS of
# its own interval instead, so it is never expired between two heartbeats.
SESSION_EXPIRY_S = 2.0
MISSED_BEATS = 4


def owner_tag(coordinator_id: str) -> str:
    """What every request id of coordinator `coordinator_id` contains."""
    return f"-{coordinator_id}-"


@dataclass
class Session:
    """This worker's registration with one coordinator replica."""

    address: str
    coordinator_id: str
    last_ok_s: float
    interval_s: float = 0.0  # the heartbeat period this replica asked for
    failing: bool = False  # the last call to this replica failed


class Leases:
    """address -> live Session. A session opens on a successful Register, is renewed by every answered
    heartbeat, and expires `expiry_s` after the last one."""

    def __init__(self, clock: Callable[[], float], *, expiry_s: float = SESSION_EXPIRY_S) -> None:
        if not expiry_s > 0:
            raise ValueError(f"expiry_s must be > 0, got {expiry_s}")
        self._clock = clock
        self.expiry_s = expiry_s
        self._sessions: dict[str, Session] = {}

    # -- life of a session ---------------------------------------------------------------------------
    def opened(self, address: str, coordinator_id: str, interval_s: float = 0.0) -> str | None:
        """Records a Register answered by `coordinator_id`; returns the former coordinator id of that
        address when it differs (the replica restarted: its former requests here are orphans)."""
        old = self._sessions.get(address)
        self._sessions[address] = Session(address, coordinator_id, self._clock(), interval_s)
        if old is not None and old.coordinator_id != coordinator_id:
            return old.coordinator_id
        return None

    def renewed(self, address: str) -> bool:
        """An answered heartbeat; False when the session had already expired (its requests here were
        freed): the worker must register again to open a new one."""
        session = self._sessions.get(address)
        if session is not None:
            session.last_ok_s = self._clock()
            session.failing = False
        return session is not None

    def failed(self, address: str) -> None:
        """A call to this replica failed (refused, timed out). Only a failing session can expire: a worker
        whose own event loop stalled has not heard from anyone, and must not free live requests for it."""
        session = self._sessions.get(address)
        if session is not None:
            session.failing = True

    def expire(self) -> list[Session]:
        """Drops and returns the failing sessions whose replica has not answered for longer than expiry_s
        (or MISSED_BEATS of its heartbeat period, when that is longer)."""
        now = self._clock()
        gone = [
            s
            for s in self._sessions.values()
            if s.failing and now - s.last_ok_s > max(self.expiry_s, MISSED_BEATS * s.interval_s)
        ]
        for s in gone:
            del self._sessions[s.address]
        return gone

    # -- reading -------------------------------------------------------------------------------------
    def live(self) -> list[Session]:
        return list(self._sessions.values())

    def seen(self) -> dict[str, str]:
        """coordinator id -> address of every replica whose last call answered: what this worker tells
        each replica, so that replicas learn each other and agree on a leader (services/coordinator/
        leader.py). A failing session is left out at once (not only once expired): the replicas then
        stop counting a dead leader within one heartbeat."""
        return {s.coordinator_id: s.address for s in self._sessions.values() if not s.failing}

    def coordinator_id(self, address: str) -> str | None:
        session = self._sessions.get(address)
        return session.coordinator_id if session else None

    def share_tokens(self, capacity_tokens: int, address: str) -> int:
        """The KV share of the replica at `address`: an equal part of the capacity among the live
        sessions, counting this one even before its Register is answered (never a share too large)."""
        count = len(self._sessions) + (0 if address in self._sessions else 1)
        return max(1, capacity_tokens // count) if capacity_tokens > 0 else 0

    def owned(self, coordinator_id: str, request_ids: Iterable[str]) -> list[str]:
        tag = owner_tag(coordinator_id)
        return [r for r in request_ids if tag in r]

    def orphans(self, dead_coordinator_id: str, request_ids: Iterable[str]) -> list[str]:
        """Requests nobody will finish once `dead_coordinator_id` is gone: its own, and any that no live
        session owns (with one coordinator that is every request held, as before replicas existed)."""
        dead = owner_tag(dead_coordinator_id)
        living = [owner_tag(s.coordinator_id) for s in self._sessions.values()]
        living = [t for t in living if t != dead]
        return [r for r in request_ids if dead in r or not any(t in r for t in living)]

    def used_by(self, coordinator_id: str, tokens_by_request: Mapping[str, int]) -> int:
        """KV tokens the requests of `coordinator_id` hold here."""
        tag = owner_tag(coordinator_id)
        return sum(n for r, n in tokens_by_request.items() if tag in r)
