"""Async client of the worker data path (grpc.aio): used by the coordinator and by workers forwarding.

`Connections` keeps one channel and one long-lived Forward stream per worker address; `ChainClient`
drives one chain of hops: a step sends each request's tokens to the first hop with the rest of the
route attached, and returns one TokenResult per request once the last hop has sampled.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import grpc

from planner.errors import InvalidInput
from services.worker import wire
from services.worker.records import (
    GREEDY,
    UNAVAILABLE,
    HopAddress,
    LoadOrder,
    LoadReport,
    Sampling,
    Segment,
    TokenResult,
    WorkerInfo,
    WorkerStats,
    error_result,
    results_for,
)

# A prompt of a few thousand tokens crosses a hop as hidden + residual: far above gRPC's 4 MiB default.
MAX_MESSAGE_BYTES = 512 * 1024 * 1024
CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    # Loopback and LAN hops: small messages must not wait for coalescing.
    ("grpc.http2.write_buffer_size", 0),
]

__all__ = [
    "GREEDY",
    "ChainClient",
    "Connections",
    "HopAddress",
    "HopStream",
    "Sampling",
    "StepInput",
    "TokenResult",
    "WorkerChain",
    "WorkerInfo",
    "WorkerStats",
    "info",
    "load",
    "stats",
]


@dataclass(frozen=True)
class StepInput:
    """One request's tokens for one step: the prompt (or a chunk of it), or the last sampled token.

    `position` is how many tokens of this request the chain has already cached (0 for a new request).
    """

    request_id: str
    token_ids: Sequence[int]
    position: int
    sampling: Sampling = GREEDY
    finish: bool = False
    skip_sample: bool = False


class HopStream:
    """One long-lived Forward stream to a worker; many batches in flight, matched back by batch_id."""

    def __init__(self, address: str, stub: Any) -> None:
        self.address = address
        self._stub = stub
        self._call: Any = None
        self._reader: asyncio.Task[None] | None = None
        self._pending: dict[int, tuple[asyncio.Future[list[TokenResult]], list[Segment], float]] = {}
        self._ids = itertools.count(1)
        self._write_lock = asyncio.Lock()
        # Recent round trips and link costs (round trip minus the far side's service time), in ms.
        self.round_trip_ms: deque[float] = deque(maxlen=2048)
        self.link_ms: deque[float] = deque(maxlen=2048)

    async def send(self, segments: list[Segment]) -> list[TokenResult]:
        """Sends one batch and waits for its results; a broken stream yields UNAVAILABLE per segment."""
        if not segments:
            return []
        batch_id = next(self._ids)
        future: asyncio.Future[list[TokenResult]] = asyncio.get_running_loop().create_future()
        self._pending[batch_id] = (future, segments, time.perf_counter())
        try:
            async with self._write_lock:
                if self._call is None:
                    self._open()
                await self._call.write(wire.batch_to_msg(batch_id, segments))
        except (grpc.RpcError, asyncio.InvalidStateError, grpc.aio.UsageError) as exc:
            self._call = None  # the next send opens a fresh stream (the worker may be back)
            self._fail_all(f"cannot reach worker {self.address}: {_describe(exc)}")
        try:
            return await future
        finally:
            self._pending.pop(batch_id, None)  # a caller that timed out leaves nothing behind

    def _open(self) -> None:
        self._call = self._stub.Forward()
        self._reader = asyncio.get_running_loop().create_task(self._read(self._call))

    async def _read(self, call: Any) -> None:
        try:
            while True:
                msg = await call.read()
                if msg is grpc.aio.EOF:
                    raise ConnectionError("stream closed by the worker")
                batch_id, results, service_ms = wire.results_from_msg(msg)
                entry = self._pending.pop(batch_id, None)
                if entry is not None and not entry[0].done():
                    round_trip_ms = (time.perf_counter() - entry[2]) * 1e3
                    self.round_trip_ms.append(round_trip_ms)
                    self.link_ms.append(max(0.0, round_trip_ms - service_ms))
                    entry[0].set_result(results)
        except asyncio.CancelledError:
            self._fail_all(f"stream to {self.address} closed")
            raise
        except (grpc.RpcError, ConnectionError) as exc:
            if self._call is call:
                self._call = None
            self._fail_all(f"lost stream to worker {self.address}: {_describe(exc)}")

    def _fail_all(self, message: str) -> None:
        pending, self._pending = self._pending, {}
        for future, segments, _ in pending.values():
            if not future.done():
                future.set_result(results_for(segments, UNAVAILABLE, message, self.address))

    async def close(self) -> None:
        call, self._call = self._call, None
        if call is not None:
            with contextlib.suppress(grpc.RpcError, asyncio.InvalidStateError):
                await call.done_writing()
            call.cancel()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
        self._fail_all(f"stream to {self.address} closed")


class Connections:
    """Channels, stubs and Forward streams keyed by worker address; share one per process."""

    def __init__(self) -> None:
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._stubs: dict[str, Any] = {}
        self._streams: dict[str, HopStream] = {}

    def stub(self, address: str) -> Any:
        if address not in self._stubs:
            channel = grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)
            self._channels[address] = channel
            self._stubs[address] = wire.make_stub(channel)
        return self._stubs[address]

    def streams(self) -> list[HopStream]:
        return list(self._streams.values())

    def stream(self, address: str) -> HopStream:
        if address not in self._streams:
            self._streams[address] = HopStream(address, self.stub(address))
        return self._streams[address]

    async def forget(self, address: str) -> None:
        """Drops everything held for a worker (it died or left the plan)."""
        # Unhook everything first: while the awaits below run, a concurrent caller must open a fresh
        # channel rather than pick up one that is being closed under it.
        stream = self._streams.pop(address, None)
        self._stubs.pop(address, None)
        channel = self._channels.pop(address, None)
        if stream is not None:
            await stream.close()
        if channel is not None:
            await channel.close()

    async def close(self) -> None:
        for address in list(self._channels):
            await self.forget(address)


class ChainClient:
    """Drives one chain of hops covering layers [0, L) in order."""

    def __init__(
        self,
        hops: Sequence[HopAddress],
        *,
        connections: Connections | None = None,
        timeout_s: float | None = None,
    ) -> None:
        if not hops:
            raise InvalidInput("a chain needs at least one hop", field="hops")
        if hops[0].start != 0:
            raise InvalidInput(f"a chain must start at layer 0, not {hops[0].start}", field="hops")
        for a, b in itertools.pairwise(hops):
            if a.end != b.start:
                raise InvalidInput(
                    f"hops {a.address} [{a.start},{a.end}) and {b.address} [{b.start},{b.end}) "
                    "do not join up",
                    field="hops",
                )
        self.hops = tuple(hops)
        self._own = connections is None
        self.connections = connections or Connections()
        self.timeout_s = timeout_s

    def _segment(self, item: StepInput) -> Segment:
        first = self.hops[0]
        return Segment(
            request_id=item.request_id,
            start_layer=first.start,
            end_layer=first.end,
            position=item.position,
            num_tokens=len(item.token_ids),
            token_ids=tuple(int(t) for t in item.token_ids),
            sampling=item.sampling,
            finish=item.finish,
            skip_sample=item.skip_sample,
            route=self.hops[1:],
        )

    async def step(self, items: Sequence[StepInput]) -> list[TokenResult]:
        """One step for a batch of requests; results come back in the order of `items`."""
        ids = [item.request_id for item in items]
        if len(set(ids)) != len(ids):
            raise InvalidInput("a step may carry each request once", field="request_id")
        segments = [self._segment(item) for item in items]
        send = self.connections.stream(self.hops[0].address).send(segments)
        try:
            results = await asyncio.wait_for(send, self.timeout_s) if self.timeout_s else await send
        except TimeoutError:
            return results_for(segments, UNAVAILABLE, f"no answer from the chain within {self.timeout_s} s")
        by_id = {r.request_id: r for r in results}
        return [by_id.get(i) or error_result(i, UNAVAILABLE, "the chain returned no result") for i in ids]

    async def abort(self, request_ids: Sequence[str]) -> None:
        """In-band abort: frees the requests' KV on every hop, after any step already sent."""
        segments = [
            Segment(
                request_id=r,
                start_layer=self.hops[0].start,
                end_layer=self.hops[0].end,
                position=0,
                num_tokens=0,
                abort=True,
                route=self.hops[1:],
            )
            for r in request_ids
        ]
        await self.connections.stream(self.hops[0].address).send(segments)

    async def release(self, request_ids: Sequence[str]) -> int:
        """Out-of-band: frees the requests' KV on every hop now; returns how many hop states were freed.

        Unreachable hops are skipped (a dead worker holds no KV worth freeing)."""
        msg = wire.release_to_msg(list(request_ids))

        async def one(address: str) -> int:
            try:
                return wire.released_from_reply(await self.connections.stub(address).Release(msg))
            except grpc.RpcError:
                return 0

        counts = await asyncio.gather(*(one(h.address) for h in self.hops))
        return sum(counts)

    async def close(self) -> None:
        if self._own:
            await self.connections.close()


WorkerChain = ChainClient


async def _unary(
    address: str, connections: Connections | None, method: str, request: Any, timeout_s: float | None
) -> Any:
    conns = connections or Connections()
    try:
        return await getattr(conns.stub(address), method)(request, timeout=timeout_s)
    finally:
        if connections is None:
            await conns.close()


async def stats(
    address: str, *, connections: Connections | None = None, timeout_s: float | None = 5.0
) -> WorkerStats:
    """KV use, queue depth and step times of one worker (raises grpc.RpcError if unreachable)."""
    return wire.stats_from_msg(await _unary(address, connections, "Stats", wire.stats_request(), timeout_s))


async def info(
    address: str, *, connections: Connections | None = None, timeout_s: float | None = 5.0
) -> WorkerInfo:
    """Model, layer range, hidden size, backend and KV capacity of one worker."""
    return wire.info_from_msg(await _unary(address, connections, "Info", wire.info_request(), timeout_s))


async def load(
    address: str, order: LoadOrder, *, connections: Connections | None = None, timeout_s: float | None = 600.0
) -> LoadReport:
    """Makes a worker serve another layer range while it serves (see Load in protos/worker.proto); returns
    once the new range takes requests, with what it serves now and how the load went."""
    reply = await _unary(address, connections, "Load", wire.load_to_msg(order), timeout_s)
    return wire.load_report_from_msg(reply)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, grpc.aio.AioRpcError):
        return f"{exc.code().name}: {exc.details()}"
    return str(exc) or type(exc).__name__


async def generate(
    chains: Sequence[ChainClient],
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int,
    *,
    sampling: Sampling = GREEDY,
    request_prefix: str = "gen",
) -> list[list[int]]:
    """Generates for every prompt on its chain (chains[i] serves prompts[i]), all requests stepping
    together: one prompt step, then decode steps, each chain's requests sent as one batch. Frees the KV
    on the last step. For tests, benchmarks and scripts; the coordinator has its own scheduler."""
    if len(chains) != len(prompts):
        raise InvalidInput("one chain per prompt", field="chains")
    ids = [f"{request_prefix}-{i}" for i in range(len(prompts))]
    out: list[list[int]] = [[] for _ in prompts]
    groups: dict[int, list[int]] = {}
    for i, chain in enumerate(chains):
        groups.setdefault(id(chain), []).append(i)
    for step in range(max_new_tokens):
        last = step == max_new_tokens - 1

        def item(i: int, *, last: bool = last, step: int = step) -> StepInput:
            tokens = list(prompts[i]) if step == 0 else [out[i][-1]]
            position = 0 if step == 0 else len(prompts[i]) + step - 1
            return StepInput(ids[i], tokens, position, sampling, finish=last)

        members_list = list(groups.values())
        answers = await asyncio.gather(*(chains[m[0]].step([item(i) for i in m]) for m in members_list))
        for members, results in zip(members_list, answers, strict=True):
            for i, result in zip(members, results, strict=True):
                if not result.ok or result.token_id is None:
                    raise RuntimeError(f"request {ids[i]} failed at {result.failed_hop}: {result.error}")
                out[i].append(result.token_id)
    return out
