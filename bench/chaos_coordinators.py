"""Coordinator chaos benchmark: streaming clients keep N coordinator replicas busy while replicas are
killed (SIGKILL) one by one until one is left; the survivors' requests must not notice, and no KV of a
dead replica may stay on the workers.

Fleet on 127.0.0.1: N replicas (`brl coordinator`, BRL_REPLICA_ID r0..) and two SmolLM2 workers
([0,15) + [15,30)) registered with every replica. Each client has a home replica and, like a Kubernetes
Service, moves to the next live one when its replica's connection fails. Every request ends as one of:
  completed  full text, identical to the calm text of the same prompt (greedy);
  failed     a clean error: a refusal (429/503, an error event), or the connection of a replica that was
             killed dropping (what a client of a dead process sees; it then moves on);
  lost       anything else: a stream cut on a live replica, a hang (read timeout), a different text.
             Must be 0.
Then every worker's KV must drain to 0 (`kv_left_tokens`); `kv_freed_s_max` is the longest time from a
kill until a worker logged freeing the dead replica's requests (goal: under 5 s).
`--quick` is the toy run the tests use. Last line: one JSON object. Exit status 1 when anything was lost
or KV was left.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import re
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import chaos  # noqa: E402
from tests.services.coordinator.fleet_procs import StreamOutcome, WorkerSpec, stream_completion  # noqa: E402
from tests.services.coordinator.replica_procs import ReplicaFleet  # noqa: E402

SPECS = (WorkerSpec("w0", 0, 15), WorkerSpec("w1", 15, 30))
PROMPTS = ("The river is", "My neighbour said that", "A small robot wanted", "The old library is")
READ_TIMEOUT_S = 60.0  # a stream silent this long is a hang: lost
PAUSE_AFTER_REFUSAL_S = 0.3
# The worker's log line when it frees an expired replica's requests (services/worker/registration.py).
FREED_LINE = re.compile(
    r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) .*freeing \d+ requests of expired coordinator (\S+)$", re.M
)


class Tally(chaos.Tally):
    """bench/chaos.py's tally, plus one clean failure: the dropped connection of a replica that was killed."""

    def add(  # type: ignore[override]
        self, prompt: str, out: StreamOutcome, reference: dict[str, str], replica_dead: bool
    ) -> None:
        if out.error is None and out.finish_reason is not None:
            if out.text == reference[prompt]:
                self.completed += 1
                return
            self._lose(f"text differs for {prompt!r}: {out.text!r} != {reference[prompt]!r}")
        elif (out.cut or out.status == 0) and replica_dead and "Timeout" not in (out.error or ""):
            self.failed["replica died"] += 1  # the clean error of a dead process: connection dropped
        else:
            super().add(prompt, out, reference)


async def client(
    fleet: ReplicaFleet,
    http: httpx.AsyncClient,
    home: int,
    prompts: itertools.cycle[str],
    tally: Tally,
    reference: dict[str, str],
    until: float,
    max_tokens: int,
    killed: set[int],
) -> None:
    urls = fleet.base_urls()
    order = [(home + i) % len(urls) for i in range(len(urls))]
    at = 0
    while time.monotonic() < until:
        prompt = next(prompts)
        index = order[at % len(order)]
        out = await stream_completion(http, urls[index], prompt, max_tokens, read_timeout_s=READ_TIMEOUT_S)
        dead = index in killed
        if out.status == 0 and dead and out.chunks == 0 and not out.text:
            # Connection refused by a replica already dead: the Service would not have sent us there.
            tally.failed["refused"] += 1
        else:
            tally.add(prompt, out, reference, dead)
        if dead:
            at += 1  # move on to the next replica, as a Service drops a dead pod's endpoint
        if out.status in (429, 503):
            await asyncio.sleep(PAUSE_AFTER_REFUSAL_S)


async def load(
    fleet: ReplicaFleet,
    clients: int,
    seconds: float,
    max_tokens: int,
    reference: dict[str, str],
    killed: set[int],
) -> Tally:
    tally = Tally()
    until = time.monotonic() + seconds
    replicas = len(fleet.replicas)
    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=clients * replicas)) as http:
        await asyncio.gather(
            *(
                client(
                    fleet,
                    http,
                    i % replicas,
                    itertools.cycle(PROMPTS[i % len(PROMPTS) :] + PROMPTS[: i % len(PROMPTS)]),
                    tally,
                    reference,
                    until,
                    max_tokens,
                    killed,
                )
                for i in range(clients)
            )
        )
    return tally


def killer(
    fleet: ReplicaFleet, every_s: float, until: float, kills: list[tuple[int, str, float]], killed: set[int]
) -> None:
    """Kills the last live replica every `every_s` until one is left (or `until`); records
    (index, session id, wall time of the kill). A replica is marked in `killed` before the signal, so a
    client never sees a dead replica's dropped connection before knowing it died."""
    for index in range(len(fleet.replicas) - 1, 0, -1):
        session = fleet.replica_health(index)["replica"]
        time.sleep(every_s)
        if time.monotonic() >= until:
            return
        killed.add(index)
        at = time.time()
        fleet.kill_replica(index)
        kills.append((index, session, at))


def freed_after_s(fleet: ReplicaFleet, kills: list[tuple[int, str, float]]) -> list[float | None]:
    """Per kill, the longest time until a worker logged freeing that replica's requests (None when a
    worker never did: it held nothing of it, or failed to)."""
    logged: dict[str, list[float]] = {}
    for proc in fleet.workers.values():
        for stamp, session in FREED_LINE.findall(proc.log_path.read_text(errors="replace")):
            wall = datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()
            logged.setdefault(session, []).append(wall)
    return [max(t - killed for t in logged[s]) if s in logged else None for _, s, killed in kills]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--replicas", type=int, default=3, help="coordinator replicas (>= 2)")
    parser.add_argument("--duration-s", type=float, default=40.0, help="length of the chaos phase")
    parser.add_argument("--kill-every-s", type=float, default=8.0, help="a replica dies this often")
    parser.add_argument("--clients", type=int, default=6, help="concurrent streaming clients in all")
    parser.add_argument("--max-tokens", type=int, default=24)
    parser.add_argument("--workdir", type=Path, help="logs go here (default: a temporary folder)")
    parser.add_argument("--quick", action="store_true", help="toy run: 2 replicas, one kill, ~10 s")
    args = parser.parse_args(argv)
    if args.quick:
        args.replicas, args.duration_s, args.kill_every_s, args.clients, args.max_tokens = 2, 10.0, 3.0, 4, 16
    if args.replicas < 2:
        parser.error("--replicas must be >= 2 (one of them is killed)")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="brl-chaos-coordinators-"))

    with ReplicaFleet(workdir) as fleet:
        fleet.start_replicas(args.replicas)
        fleet.start_workers(SPECS)
        fleet.wait_replicas([s.name for s in SPECS])
        # Calm: the greedy text of every prompt, the reference every answer is held to.
        reference: dict[str, str] = {}

        async def calm() -> None:
            async with httpx.AsyncClient() as http:
                for p in PROMPTS:
                    out = await stream_completion(http, fleet.base_urls()[0], p, args.max_tokens)
                    if out.error is not None:
                        raise RuntimeError(f"calm request failed: {out.error}")
                    reference[p] = out.text

        asyncio.run(calm())
        kills: list[tuple[int, str, float]] = []
        killed: set[int] = set()
        until = time.monotonic() + args.duration_s
        thread = threading.Thread(
            target=killer, args=(fleet, args.kill_every_s, until, kills, killed), daemon=True
        )
        thread.start()
        tally = asyncio.run(load(fleet, args.clients, args.duration_s, args.max_tokens, reference, killed))
        thread.join()
        kv_left = asyncio.run(fleet.wait_kv_zero(timeout_s=15))
        freed = freed_after_s(fleet, kills)
        survivor = fleet.replica_health(0)
        whole = {n: st.kv_capacity_tokens for n, st in asyncio.run(fleet.worker_stats()).items()}
        figures = {
            "bench": "chaos_coordinators",
            "quick": args.quick,
            "replicas": args.replicas,
            "kills": len(kills),
            "completed": tally.completed,
            "failed": sum(tally.failed.values()),
            "failed_by_kind": dict(tally.failed),
            "lost": tally.lost,
            "lost_examples": tally.lost_examples,
            "kv_left_tokens": sum(kv_left.values()),
            "kv_freed_s": [None if f is None else round(f, 3) for f in freed],
            "kv_freed_s_max": max((round(f, 3) for f in freed if f is not None), default=None),
            "survivor_kv_capacity_tokens": {n: w["kv_capacity_tokens"] for n, w in survivor["fleet"].items()},
            # The dead replicas' shares went back to the survivor: it is told each worker's whole cache.
            "share_returned": {n: w["kv_capacity_tokens"] for n, w in survivor["fleet"].items()} == whole,
            "workdir": str(workdir),
        }
    print(f"replicas {args.replicas}, kills {len(kills)}: completed {tally.completed}, ", end="")
    print(f"failed {figures['failed']} {dict(tally.failed)}, lost {tally.lost}")
    print(f"KV left on workers: {figures['kv_left_tokens']} tokens; freed after {figures['kv_freed_s']} s")
    print(json.dumps(figures))
    return 1 if tally.lost or figures["kv_left_tokens"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
