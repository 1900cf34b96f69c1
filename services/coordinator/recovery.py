"""Recovery after worker loss: take the requests of a failed or broken chain off it, re-queue them first in
line to re-run from the prompt plus the tokens so far (a client sees a pause, never a lost request), probe
and declare lost workers, and free what surviving hops still hold for the abandoned attempts."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING

import grpc

from planner.errors import InvalidInput, Unavailable
from services.worker.records import INVALID_ARGUMENT, UNAVAILABLE, TokenResult

if TYPE_CHECKING:
    from services.coordinator.chain_runner import ChainRunner
    from services.coordinator.engine import Engine
    from services.coordinator.request import Request

# The engine's logger on purpose: these lines were the engine's before the split, and operators grep them.
log = logging.getLogger("brl.coordinator.engine")

# A hop that is changing layers (Load) refuses a segment with UNAVAILABLE "loading" or "draining": the
# worker is alive, so it is neither probed nor declared lost, and the re-route does not use up one of the
# request's failure retries. The request waits this long first, so that the new ranges get registered.
TRANSIENT_WORDS = ("loading", "draining")
TRANSIENT_RETRY_DELAY_S = 0.2


def transient(res: TokenResult) -> bool:
    """A refusal by a live worker in the middle of a layer change (retry shortly, elsewhere)."""
    return res.code == UNAVAILABLE and any(w in (res.error or "") for w in TRANSIENT_WORDS)


ReleaseFn = Callable[[str, Sequence[str]], Awaitable[None]]
ProbeFn = Callable[[str], Awaitable[bool]]


class Recovery:
    """The engine's failure handling; it holds the engine and acts on its queues, fleet and metrics.
    `release_fn` and `probe_fn` default to gRPC calls on the engine's worker connections."""

    def __init__(self, engine: Engine, *, release_fn: ReleaseFn | None, probe_fn: ProbeFn | None) -> None:
        self.engine = engine
        self._release_fn = release_fn or self._grpc_release
        self._probe_fn = probe_fn or self._grpc_probe

    def on_fleet_change(self) -> None:
        self.engine._spawn(self.after_fleet_change())

    async def after_fleet_change(self) -> None:
        """Workers joined or left: re-route every request on a chain that lost a worker, then admit."""
        e = self.engine
        e.fleet.rebuild()
        alive = set(e.fleet.registry.names())
        for runner in list(e.runners.values()):
            if not set(runner.nodes) <= alive:
                why = f"worker left: {sorted(set(runner.nodes) - alive)}"
                old = []
                for r in list(runner.requests.values()):
                    old.append(self.detach_for_retry(r))
                    self.enqueue_retry(r, why)
                e._spawn(self.cleanup(runner, old))
        e._admit()

    def detach_for_retry(self, r: Request) -> str:
        """Take `r` off its chain at once (so no runner steps it again); returns its old wire id."""
        old = r.wire_id
        r.epoch += 1
        r.in_flight = False
        if r.runner is not None:
            r.runner.remove(r)
        if self.engine.running.pop(r.id, None) is not None:
            self.engine.fleet.release(r.id)
        return old

    def enqueue_retry(self, r: Request, why: str, *, counted: bool = True) -> None:
        """Put `r` first in line, to re-run on a new chain from its prompt plus the tokens so far;
        `counted=False` for a transient refusal, which does not use up a retry."""
        if r.done:
            return
        e = self.engine
        if counted:
            r.retries += 1
        if r.retries > e.limits.max_retries:
            e._fail(r, Unavailable(f"request {r.id} failed on {r.retries} chains; last error: {why}"))
            return
        log.warning("re-routing %s after %s (attempt %d)", r.id, why, r.retries)
        e.metrics.reroutes.inc()
        r.cached = 0
        r.pending = [*r.prompt, *r.generated]
        r.chain = None
        r.queued_at_s = e.clock()
        e.waiting.appendleft(r)

    async def cleanup(self, runner: ChainRunner, wire_ids: list[str]) -> None:
        """Best effort: free what surviving hops of an abandoned chain still hold for these attempts."""
        alive = {w.info.address for w in self.engine.fleet.registry.alive().values()}
        await self.engine._abort_quietly(runner.client, wire_ids)
        await asyncio.gather(*(self._release_fn(a, wire_ids) for a in runner.addresses if a in alive))

    async def recover(self, runner: ChainRunner, failed: list[tuple[Request, TokenResult, str]]) -> None:
        """After a failed step: probe the suspect hops, declare the dead ones lost, re-queue or fail each
        request (already detached by `detach_for_retry`), then free the old attempts' KV."""
        hard = [(r, res, old) for r, res, old in failed if not transient(res)]
        soft = [(r, res) for r, res, _ in failed if transient(res)]
        suspects = sorted({res.failed_hop for _, res, _ in hard if res.failed_hop} or set(runner.addresses))
        if not hard:
            suspects = []
        try:
            if soft:
                await asyncio.sleep(TRANSIENT_RETRY_DELAY_S)
            # A probe can die in ways other than an RpcError (its channel closed under it by a concurrent
            # forget()); any such outcome counts as "not ok" rather than ending this task.
            checks = await asyncio.gather(*(self._probe_fn(a) for a in suspects), return_exceptions=True)
            for address, ok in zip(suspects, checks, strict=True):
                if ok is not True:
                    self.declare_lost_address(address)
        finally:
            # These requests were already detached from their runner: whatever happened above, each must be
            # re-queued or failed here, or it would sit in neither `running` nor `waiting` and be lost.
            for r, res in soft:
                self.enqueue_retry(r, f"{res.code}: {res.error}", counted=False)
            for r, res, _ in hard:
                if res.code == INVALID_ARGUMENT:
                    self.engine._fail(
                        r, InvalidInput(f"a worker rejected the request: {res.error}", source="worker")
                    )
                else:
                    self.enqueue_retry(r, f"{res.code}: {res.error}")
            self.engine._admit()
        await self.cleanup(runner, [old for _, _, old in failed])

    def declare_lost_address(self, address: str) -> None:
        for name, w in self.engine.fleet.registry.alive().items():
            if w.info.address == address:
                self.declare_lost(name)

    def declare_lost(self, name: str) -> None:
        e = self.engine
        w = e.fleet.registry.get(name)
        if w is None:
            return
        log.warning("worker %s (%s) lost", name, w.info.address)
        e.metrics.worker_lost.inc()
        e.events.iteration(
            t=round(e.clock(), 6), wall=round(time.time(), 6), event="worker_lost", worker=name
        )
        e._spawn(e.connections.forget(w.info.address))
        e.fleet.registry.remove(name)

    # -- default transport: the worker gRPC client ---------------------------------------------------------
    async def _grpc_release(self, address: str, request_ids: Sequence[str]) -> None:
        from services.worker import wire

        with contextlib.suppress(grpc.RpcError):
            await self.engine.connections.stub(address).Release(
                wire.release_to_msg(list(request_ids)), timeout=2.0
            )

    async def _grpc_probe(self, address: str) -> bool:
        from services.worker.client import stats

        try:
            await stats(address, connections=self.engine.connections, timeout_s=1.0)
            return True
        except (grpc.RpcError, grpc.aio.UsageError, OSError, RuntimeError):
            return False
