"""The coordinator's request engine: admission (bounded queue, Fail-KV waits), a runner per chain
(services.coordinator.chain_runner) and the handling of each step's results, token streams out; recovery
after worker loss lives in services.coordinator.recovery."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import grpc

from planner.errors import BrlError, CapacityExceeded, InvalidInput, NoRoute
from planner.routing import chain_nodes
from services.coordinator.chain_runner import ONE_PER_STAGE, ChainFactory, ChainKey, ChainLike, ChainRunner
from services.coordinator.errors import ShuttingDown
from services.coordinator.eventlog import EventLog
from services.coordinator.fleet import Fleet
from services.coordinator.metrics import Metrics
from services.coordinator.recovery import ProbeFn, Recovery, ReleaseFn
from services.coordinator.request import Finished, GenParams, Handle, Request
from services.worker.client import Connections, HopAddress, StepInput
from services.worker.records import TokenResult

# Names other modules and tests import from here, kept importable after the split.
__all__ = [
    "ChainFactory",
    "ChainKey",
    "ChainLike",
    "ChainRunner",
    "Engine",
    "EngineLimits",
    "Finished",
    "GenParams",
    "Handle",
    "ProbeFn",
    "ReleaseFn",
    "Request",
]

log = logging.getLogger("brl.coordinator.engine")


@dataclass(frozen=True)
class EngineLimits:
    max_waiting: int = 256
    max_running: int = 256
    max_batch_tokens: int = 2048
    pipeline_depth: int = ONE_PER_STAGE
    max_retries: int = 3
    queue_timeout_s: float = 60.0
    tick_s: float = 0.25


class Engine:
    """Admits requests, starts them on chains, applies step results; see the module docstring."""

    def __init__(
        self,
        fleet: Fleet,
        metrics: Metrics,
        *,
        limits: EngineLimits | None = None,
        events: EventLog | None = None,
        chain_factory: ChainFactory | None = None,
        release_fn: ReleaseFn | None = None,
        probe_fn: ProbeFn | None = None,
        clock: Callable[[], float] = time.monotonic,
        step_timeout_s: float = 30.0,
        session_id: str | None = None,
    ) -> None:
        self.fleet = fleet
        self.metrics = metrics
        self.limits = limits or EngineLimits()
        self.events = events or EventLog()
        self.clock = clock
        self.connections = Connections()
        self.step_timeout_s = step_timeout_s
        self._chain_factory = chain_factory or self._grpc_chain
        self.recovery = Recovery(self, release_fn=release_fn, probe_fn=probe_fn)
        self.waiting: deque[Request] = deque()
        self.running: dict[str, Request] = {}
        self.runners: dict[ChainKey, ChainRunner] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._ticker: asyncio.Task[None] | None = None
        self._ids = itertools.count()
        # Ids differ between coordinator incarnations: a worker that frees the requests of a crashed
        # predecessor must never meet the same id from its successor. With replicas, `session_id` (the
        # coordinator id workers know, replica name + incarnation) sits between dashes in every id: a
        # worker finds a dead replica's requests by it (services/worker/leases.py).
        self._incarnation = session_id or uuid.uuid4().hex[:8]
        self._ewma_e2e_s = 1.0
        self._closed = False
        fleet.registry.subscribe(self.recovery.on_fleet_change)

    # -- life cycle ----------------------------------------------------------------------------------
    async def start(self) -> None:
        self._ticker = asyncio.create_task(self._tick_loop(), name="engine ticker")

    async def stop(self) -> None:
        self._closed = True
        if self._ticker is not None:
            self._ticker.cancel()
        gone = ShuttingDown("the coordinator is shutting down; retry against another coordinator or later")
        for r in [*self.waiting, *self.running.values()]:
            self._fail(r, gone)
        for runner in list(self.runners.values()):
            runner.task.cancel()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, *(r.task for r in self.runners.values()), return_exceptions=True)
        await self.connections.close()
        self.events.close()

    async def drain(self, timeout_s: float = 3.0) -> int:
        """Graceful stop, before the HTTP server closes: refuse new requests, end every running and waiting
        one with Unavailable (streams send an error event and [DONE], plain requests get 503) and abort them
        on their chains so no worker keeps their KV. Returns how many requests were ended."""
        self._closed = True
        gone = ShuttingDown("the coordinator is shutting down; retry against another coordinator or later")
        on_chains: dict[ChainKey, tuple[ChainLike, list[str]]] = {}
        ended = [*self.waiting, *self.running.values()]
        for r in ended:
            runner = r.runner
            if runner is not None:
                on_chains.setdefault(runner.key, (runner.client, []))[1].append(r.wire_id)
            self._fail(r, gone)
        if on_chains:
            log.info(
                "shutting down: ended %d requests, freeing their KV on %d chains", len(ended), len(on_chains)
            )
            aborts = [self._abort_quietly(client, ids) for client, ids in on_chains.values()]
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*aborts), timeout=timeout_s)
        return len(ended)

    def _spawn(self, coro: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        # Background tasks are fire-and-forget: a failure would otherwise vanish without a trace.
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task failed", exc_info=task.exception())

    # -- default transport: the worker gRPC client ---------------------------------------------------------
    def _grpc_chain(self, hops: Sequence[HopAddress]) -> ChainLike:
        from services.worker.client import ChainClient

        return ChainClient(list(hops), connections=self.connections, timeout_s=self.step_timeout_s)

    # -- admission -----------------------------------------------------------------------------------
    def new_id(self, prefix: str = "req") -> str:
        return f"{prefix}-{self._incarnation}-{next(self._ids)}"

    def submit(self, request_id: str, prompt: list[int], params: GenParams) -> Handle:
        """Admit a request or queue it; raises NoRoute (503), InvalidInput (400), CapacityExceeded (429)."""
        if self._closed:
            raise ShuttingDown("the coordinator is shutting down")
        self.fleet.rebuild()
        if not self.fleet.routable:
            self.metrics.rejected.labels("no_route").inc()
            raise NoRoute(self.fleet.no_route_reason, uncovered=self.fleet.uncovered())
        r = Request(request_id, list(prompt), params, arrival_s=self.clock(), pending=list(prompt))
        why = self.fleet.never_fits(r.route_request())
        if why is not None:
            self.metrics.rejected.labels("too_long").inc()
            raise InvalidInput(why, source="request", field="max_tokens")
        if not self.waiting and self._try_start(r):
            return Handle(self, r)
        if len(self.waiting) >= self.limits.max_waiting:
            self.metrics.rejected.labels("queue_full").inc()
            raise CapacityExceeded(
                f"the fleet is full: {len(self.running)} requests running and {len(self.waiting)} waiting "
                f"(limit {self.limits.max_waiting}); retry later",
                retry_after_s=self.retry_after_s(),
            )
        r.queued_at_s = self.clock()
        self.waiting.append(r)
        self._update_gauges()
        return Handle(self, r)

    def retry_after_s(self) -> float:
        per_slot = self._ewma_e2e_s / max(1, len(self.running))
        return min(60.0, max(1.0, per_slot * (len(self.waiting) + 1)))

    def _try_start(self, r: Request) -> bool:
        if len(self.running) >= self.limits.max_running:
            return False
        chain = self.fleet.choose(r.route_request())
        if chain is None:
            self.metrics.fail_kv.inc()
            return False
        hops = []
        for hop in chain:
            address = self.fleet.registry.address(hop.node)
            if address is None:  # cannot happen: the fleet is rebuilt from the registry before choosing
                self.fleet.release(r.id)
                return False
            hops.append(HopAddress(address, hop.layers.start, hop.layers.end))
        key: ChainKey = tuple((h.node, a.address, a.start, a.end) for h, a in zip(chain, hops, strict=True))
        runner = self.runners.get(key)
        if runner is None:
            runner = self.runners[key] = ChainRunner(self, key, chain, self._chain_factory(hops))
        r.chain = chain
        r.routes.append([f"{h.node}[{h.layers.start},{h.layers.end})" for h in chain])
        self.running[r.id] = r
        runner.add(r)
        self.metrics.route(list(chain_nodes(chain)), len(r.pending))
        self.metrics.prompt_tokens_m.inc(len(r.pending))
        self._update_gauges()
        return True

    def _admit(self) -> None:
        """Start waiting requests in order while chains with KV room exist."""
        while self.waiting and not self._closed:
            r = self.waiting[0]
            try:
                started = self._try_start(r)
            except NoRoute:
                break  # they wait (until their deadline) for workers to come back
            if not started:
                break
            self.waiting.popleft()
        self._update_gauges()

    def plan_swapped(self) -> None:
        """A new plan routes from now on: note it in the iteration log and admit waiting requests by it."""
        self.metrics.plan_swaps.inc()
        self.events.iteration(
            t=round(self.clock(), 6), wall=round(time.time(), 6), event="plan_swap", running=len(self.running)
        )
        self._admit()

    # -- step results --------------------------------------------------------------------------------
    def _runner_done(self, runner: ChainRunner) -> None:
        if self.runners.get(runner.key) is runner:
            del self.runners[runner.key]

    def _on_step(
        self,
        runner: ChainRunner,
        reqs: list[Request],
        items: list[StepInput],
        results: list[TokenResult],
        epochs: list[int],
        step_s: float,
    ) -> None:
        failed: list[tuple[Request, TokenResult, str]] = []
        finished: list[str] = []
        prompt_tokens = decode_tokens = 0
        for r, item, res, epoch in zip(reqs, items, results, epochs, strict=True):
            if r.epoch != epoch or r.done:
                continue  # re-routed or cancelled while this step was in flight
            r.in_flight = False
            if not res.ok:
                failed.append((r, res, self.recovery.detach_for_retry(r)))
                continue
            if len(item.token_ids) == 1 and item.position > 0 and item.position >= len(r.prompt):
                decode_tokens += 1
                self.fleet.on_decode(runner.chain)
            else:
                prompt_tokens += len(item.token_ids)
            if self._advance(r, item, res):
                self._finish(r, r.finish_reason or "stop")
                if not item.finish:
                    finished.append(item.request_id)
        self.metrics.steps.inc()
        self.metrics.step_latency.observe(step_s)
        if decode_tokens:
            self.metrics.decode_tokens(runner.nodes, decode_tokens)
        self.events.iteration(
            t=round(self.clock(), 6),
            wall=round(time.time(), 6),
            chain=runner.nodes,
            requests=len(items),
            prompt_tokens=prompt_tokens,
            decode_tokens=decode_tokens,
            step_s=round(step_s, 6),
            failed=len(failed),
        )
        if finished:
            self._spawn(self._abort_quietly(runner.client, finished))
        if failed:
            self._spawn(self.recovery.recover(runner, failed))
        if finished:
            self._admit()

    def _advance(self, r: Request, item: StepInput, res: TokenResult) -> bool:
        """Apply one good result; True when the request is now complete."""
        n = len(item.token_ids)
        r.cached += n
        del r.pending[:n]
        if item.skip_sample or res.token_id is None:
            return False
        tok = int(res.token_id)
        now = self.clock()
        if r.first_token_s is None:
            r.first_token_s = now
            self.metrics.ttft_m.observe(now - r.arrival_s)
        elif r.last_token_s is not None:
            self.metrics.itl_m.observe(now - r.last_token_s)
        r.last_token_s = now
        r.generated.append(tok)
        r.pending = [tok]
        self.metrics.generation_tokens_m.inc()
        r.out.put_nowait(tok)
        if tok in r.params.eos_ids and not r.params.ignore_eos:
            r.finish_reason = "stop"
            return True
        if len(r.generated) >= r.params.max_tokens:
            r.finish_reason = "length"
            return True
        return False

    async def _abort_quietly(self, client: ChainLike, request_ids: list[str]) -> None:
        with contextlib.suppress(grpc.RpcError, OSError, BrlError, RuntimeError):
            await asyncio.wait_for(client.abort(request_ids), timeout=5.0)

    # -- endings -------------------------------------------------------------------------------------
    def _detach(self, r: Request) -> None:
        if r.runner is not None:
            r.runner.remove(r)
        if self.running.pop(r.id, None) is not None:
            self.fleet.release(r.id)
        with contextlib.suppress(ValueError):
            self.waiting.remove(r)

    def _finish(self, r: Request, reason: str) -> None:
        r.done = True
        r.finish_reason = reason
        self._detach(r)
        now = self.clock()
        e2e = now - r.arrival_s
        self._ewma_e2e_s = 0.9 * self._ewma_e2e_s + 0.1 * e2e
        self.metrics.e2e_m.observe(e2e)
        self.metrics.request_success.labels(self.metrics.model_name, reason).inc()
        self._log_request(r, now)
        r.out.put_nowait(Finished(reason))
        self._update_gauges()

    def _fail(self, r: Request, exc: BaseException) -> None:
        if r.done:
            return
        r.done = True
        r.finish_reason = "error"
        self._detach(r)
        self._log_request(r, self.clock(), error=str(exc))
        r.out.put_nowait(exc)
        self._update_gauges()

    def cancel(self, r: Request, reason: str = "cancelled") -> None:
        """The client went away or a stop string matched: stop generating and free the KV on every hop."""
        if r.done:
            return
        runner = r.runner
        self._finish(r, reason)
        if runner is not None:
            self._spawn(self._abort_quietly(runner.client, [r.wire_id]))
        self._admit()

    def _log_request(self, r: Request, now: float, error: str | None = None) -> None:
        self.events.request(**r.log_record(now, error))

    # -- periodic ------------------------------------------------------------------------------------
    async def _tick_loop(self) -> None:
        while True:
            await asyncio.sleep(self.limits.tick_s)
            self.tick()

    def tick(self) -> None:
        for name in self.fleet.registry.expire():
            log.warning("worker %s missed its heartbeats", name)
            self.metrics.worker_lost.inc()
        now = self.clock()
        for r in list(self.waiting):
            if now - r.queued_at_s > self.limits.queue_timeout_s:
                if not self.fleet.routable:
                    self._fail(r, NoRoute(self.fleet.no_route_reason, uncovered=self.fleet.uncovered()))
                else:
                    self._fail(
                        r,
                        CapacityExceeded(
                            f"waited {now - r.queued_at_s:.0f} s for KV room in the admission queue; retry later",
                            retry_after_s=self.retry_after_s(),
                        ),
                    )
        self._admit()
        self.events.flush()

    def _update_gauges(self) -> None:
        self.metrics.running_m.set(len(self.running))
        self.metrics.waiting_m.set(len(self.waiting))
        self.metrics.kv_usage_m.set(self.fleet.registry.kv_usage_max())
        self.metrics.workers_alive.set(len(self.fleet.registry.names()))
