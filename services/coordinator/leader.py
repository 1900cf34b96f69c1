"""Coordinator replicas agree on one leader (whose rollout controller alone acts) and on one plan (the
followers adopt the leader's), with no store or lock service beyond the workers they already share.

Design (issues 15 + 18):
  * Replicas learn each other from the workers. Every worker tells every replica, in each Register and
    heartbeat, the replicas it holds live sessions with (coordinator id + gRPC address; a session whose
    last call failed is left out at once). A replica's peers are the union of what its live workers report.
  * Leader = the lowest coordinator id among those peers and itself. Deterministic, no election messages,
    no extra infrastructure: every replica that hears the same workers picks the same one, and a dead
    leader drops out of every worker's report within about one heartbeat, so the next lowest takes over.
    A replica that does not yet know the plan its peers hold never leads: it must have asked every peer
    it knows once (a restarted low-id replica catches up before it acts).
  * Why that is safe enough: two replicas can both believe they lead only while the workers' reports
    disagree (a partition, or the one heartbeat after a leader dies or returns). Two controllers then
    may both re-plan, but their Loads are harmless twice over: a Load is idempotent per range (a worker
    asked for the range it already holds does nothing) and a worker refuses a second Load while one
    runs; and the plan stamps below make every replica converge on one plan once the reports agree.
  * One plan. Each replica's plan in force carries a stamp (version, author). A local plan change (a
    rollout, or POST /v1/admin/plan) takes the next version under this replica's id. Every SYNC_EVERY_S
    (or at once when a worker re-registers with a range the plan does not expect) each replica asks each
    peer for its plan (GetPlan, sent only when newer) and applies the newest with planswap.apply; no
    re-plan happens on followers. Newer = higher version, on a tie the lower author (the leader's) wins:
    a total order, so all replicas converge. The plan given at start is version 0 on every replica.
  * A follower that becomes the leader takes over the controller with the plan in force, and asks it
    to re-check the live fleet against that plan (the former leader may have died before acting).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import grpc

from planner.formats.plan_json import plan_from_json, plan_to_json
from planner.plan import Plan
from protos import coordinator_pb2 as pb
from protos import coordinator_pb2_grpc as pb_grpc
from services.coordinator import planswap, wire

if TYPE_CHECKING:
    from services.coordinator.main import Coordinator

log = logging.getLogger("brl.coordinator.leader")

# How often a replica asks its peers for their plan: a follower runs the leader's new plan at most this
# long after the swap (plus one RPC), and it is sooner when a worker re-registers with an unexpected range.
SYNC_EVERY_S = 1.0
PEER_RPC_TIMEOUT_S = 1.0
HISTORY = 20  # plans adopted from peers kept for the status


@dataclass(frozen=True)
class Stamp:
    """Version of a replica's plan in force; `author` is the coordinator id that made it ("" for the plan
    given at start, the same on every replica)."""

    version: int
    author: str

    def newer_than(self, other: Stamp) -> bool:
        if self.version != other.version:
            return self.version > other.version
        return self.author < other.author


START = Stamp(0, "")


class PeerBook:
    """worker name -> the replicas (coordinator id -> address) it reported last. Pure."""

    def __init__(self) -> None:
        self._reports: dict[str, dict[str, str]] = {}

    def report(self, worker: str, replicas: Mapping[str, str]) -> None:
        self._reports[worker] = dict(replicas)

    def forget(self, worker: str) -> None:
        self._reports.pop(worker, None)

    def peers(self, live_workers: Iterable[str]) -> dict[str, str]:
        """Every replica some live worker sees (a worker the registry dropped no longer counts)."""
        out: dict[str, str] = {}
        for name in sorted(live_workers):
            out.update(self._reports.get(name, {}))
        return out


def choose_leader(self_id: str, peer_ids: Iterable[str]) -> str:
    """The lowest coordinator id among this replica and the peers the workers report alive."""
    return min({self_id, *peer_ids})


class Leadership:
    """One per coordinator: the peer book fed by the control servicer, the leader test the controller asks,
    and the plan sync loop (started by main.serve)."""

    def __init__(
        self,
        coord: Coordinator,
        *,
        sync_every_s: float = SYNC_EVERY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.coord = coord
        self.self_id = coord.coordinator_id
        self.sync_every_s = sync_every_s
        self.clock = clock
        self.book = PeerBook()
        self.stamp = START
        self._plan: Plan | None = coord.fleet.base_plan  # the plan object `stamp` belongs to
        self._max_version = 0  # highest version heard from anyone: a local change goes above it
        self._asked: set[str] = set()  # peers asked (answered or failed) at least once
        self._answers: dict[str, dict[str, Any]] = {}  # peer -> its last answer, for the status
        self._was_leader: bool | None = None
        self._nudge = asyncio.Event()
        self._channels: dict[str, tuple[grpc.aio.Channel, pb_grpc.CoordinatorStub]] = {}
        self._task: asyncio.Task[None] | None = None
        self.adopted: list[dict[str, Any]] = []  # plans taken from peers, oldest first
        self.takeovers = 0

    # -- what the workers say ------------------------------------------------------------------------
    def worker_reported(self, worker: str, replicas: Mapping[str, str], layers: Any = None) -> None:
        """A Register or heartbeat of `worker`, with the replicas it sees; `layers` (Register only): when
        the plan in force places another range there, a peer has probably rolled out a new plan."""
        self.book.report(worker, replicas)
        base = self.coord.fleet.base_plan
        if layers is not None and base is not None and base.placement.ranges.get(worker) != layers:
            self._nudge.set()

    def worker_left(self, worker: str) -> None:
        self.book.forget(worker)

    def peers(self) -> dict[str, str]:
        """Other live replicas: coordinator id -> gRPC address."""
        found = self.book.peers(self.coord.registry.alive())
        found.pop(self.self_id, None)
        return found

    # -- leader --------------------------------------------------------------------------------------
    def leader_id(self) -> str:
        return choose_leader(self.self_id, self.peers())

    def is_leader(self) -> bool:
        """Lowest id among the replicas the workers see, and caught up: every known peer asked once."""
        peers = self.peers()
        return choose_leader(self.self_id, peers) == self.self_id and set(peers) <= self._asked

    # -- plan stamps ---------------------------------------------------------------------------------
    def current_stamp(self) -> Stamp:
        """The stamp of the plan in force; a plan swapped here since (a rollout, an admin swap) takes the
        next version under this replica's id."""
        base = self.coord.fleet.base_plan
        if base is not self._plan:
            self._max_version = max(self._max_version, self.stamp.version) + 1
            self.stamp = Stamp(self._max_version, self.self_id)
            self._plan = base
            log.info("plan %s in force here is version %d", getattr(base, "method", None), self.stamp.version)
        return self.stamp

    def answer(self, request: pb.GetPlanRequest) -> pb.GetPlanReply:
        """GetPlan: this replica's stamp, and its plan when newer than the asker's."""
        stamp = self.current_stamp()
        base = self.coord.fleet.base_plan
        asked = Stamp(int(request.known_version), request.known_author)
        send = base is not None and stamp.newer_than(asked)
        return wire.get_plan_reply(
            coordinator_id=self.self_id,
            leader=self.is_leader(),
            version=stamp.version,
            author=stamp.author,
            plan_json=plan_to_json(base) if send and base is not None else "",
            origin_json=json.dumps(self.coord.plan_origin) if send else "",
        )

    # -- sync loop -----------------------------------------------------------------------------------
    def start(self) -> Leadership:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="replica plan sync")
        return self

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for channel, _ in self._channels.values():
            await channel.close()
        self._channels.clear()

    async def _run(self) -> None:
        while True:
            try:
                await self.sync_once()
            except Exception:  # noqa: BLE001 - a bad peer answer must not end the sync loop
                log.exception("plan sync with peer replicas failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._nudge.wait(), timeout=self.sync_every_s)
            self._nudge.clear()

    async def sync_once(self) -> None:
        """Ask every peer for its plan, adopt the newest, then note a change of leadership."""
        mine = self.current_stamp()
        peers = self.peers()
        replies = await asyncio.gather(*(self._ask(cid, addr, mine) for cid, addr in sorted(peers.items())))
        best: pb.GetPlanReply | None = None
        for cid, reply in zip(sorted(peers), replies, strict=True):
            self._asked.add(cid)
            if reply is None:
                continue
            self._max_version = max(self._max_version, int(reply.version))
            stamp = Stamp(int(reply.version), reply.author)
            if reply.plan_json and stamp.newer_than(mine):
                if best is None or stamp.newer_than(Stamp(int(best.version), best.author)):
                    best = reply
        if best is not None:
            await self._adopt(best)
        self._note_leadership()

    async def _ask(self, cid: str, address: str, mine: Stamp) -> pb.GetPlanReply | None:
        if address not in self._channels:
            channel = grpc.aio.insecure_channel(address)
            self._channels[address] = (channel, pb_grpc.CoordinatorStub(channel))
        stub = self._channels[address][1]
        try:
            reply: pb.GetPlanReply = await stub.GetPlan(
                wire.get_plan_request(mine.version, mine.author, self.self_id), timeout=PEER_RPC_TIMEOUT_S
            )
        except grpc.aio.AioRpcError as exc:
            log.debug("peer replica %s (%s) did not answer: %s", cid, address, exc.code())
            return None
        self._answers[cid] = {"address": address, "version": reply.version, "leader": reply.leader}
        return reply

    async def _adopt(self, reply: pb.GetPlanReply) -> None:
        plan = await asyncio.to_thread(
            plan_from_json, reply.plan_json, source=f"replica {reply.coordinator_id}"
        )
        stamp = Stamp(int(reply.version), reply.author)
        if not stamp.newer_than(self.current_stamp()):
            return  # a local swap overtook it meanwhile
        origin = json.loads(reply.origin_json) if reply.origin_json else {}
        planswap.apply(
            self.coord,
            plan,
            {**origin, "source": "replica", "from": reply.coordinator_id, "version": stamp.version},
        )
        self.stamp, self._plan = stamp, self.coord.fleet.base_plan
        record = {
            "version": stamp.version,
            "author": stamp.author,
            "from": reply.coordinator_id,
            "at": round(time.time(), 3),
        }
        self.adopted = [*self.adopted[-(HISTORY - 1) :], record]
        log.info("adopted plan version %d of %s from %s", stamp.version, stamp.author, reply.coordinator_id)

    def _note_leadership(self) -> None:
        leads = self.is_leader()
        if self._was_leader is False and leads:
            self.takeovers += 1
            log.warning("this replica (%s) now leads the rollout controller", self.self_id)
            take_over = getattr(self.coord.controller, "take_over", None)
            if take_over is not None:
                take_over()
        elif self._was_leader and not leads:
            log.info("replica %s leads now; this one follows its plan", self.leader_id())
        self._was_leader = leads

    def status(self) -> dict[str, Any]:
        peers = self.peers()
        return {
            "self": self.self_id,
            "leader": choose_leader(self.self_id, peers),
            "is_leader": self.is_leader(),
            "peers": {cid: {"address": a, **self._answers.get(cid, {})} for cid, a in sorted(peers.items())},
            "plan_version": self.stamp.version,
            "plan_author": self.stamp.author,
            "followed": list(self.adopted),
            "takeovers": self.takeovers,
        }
