"""Chaos benchmark: streaming clients keep a real fleet busy while workers are killed (SIGKILL) and
restarted at random, for a bounded time; no request may be lost.

Fleet on 127.0.0.1: a coordinator and four SmolLM2 workers with overlapping ranges (a0 [0,12) + a1 [12,30),
b0 [0,20) + b1 [20,30)). First a calm phase (the baseline: every prompt's greedy text and the request rate
with no failure), then the chaos phase. Every request ends as one of:
  completed  full text, identical to the calm text of the same prompt (greedy);
  failed     a clean refusal or error from the server (503 while no chain covers the layers, 429, an error
             event in the stream): the client is told and may retry;
  lost       anything else: a stream that breaks off with no error, a hang, or a text that differs from the
             calm one (a lost or duplicated token). Must be 0.
`retried` is how many times the coordinator moved a request to a new chain (its re-route counter).
Prints figures, then the ratio chaos / calm request rate; the last line is one JSON object.
`--quick` (~15 s of chaos) is the toy run the tests use. Exit status 1 when anything was lost.

With `--auto-replan` the coordinator runs the rollout controller on a plan of the four workers; then
`--permanent` makes some kills permanent (the worker never comes back: the controller covers its layers
again; at least two workers stay) and `--joins` starts new workers (j1, j2, ... holding one layer no chain
uses) that the controller gives layers when the simulator predicts a gain. Each chaos action is one entry
of Chaos.actions: a new kind of failure is one more method.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import random
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.services.coordinator.fleet_procs import (  # noqa: E402
    ProcFleet,
    StreamOutcome,
    WorkerSpec,
    stream_completion,
)

SPECS = (WorkerSpec("a0", 0, 12), WorkerSpec("a1", 12, 30), WorkerSpec("b0", 0, 20), WorkerSpec("b1", 20, 30))
PROMPTS = tuple(
    f"{subject} {verb}"
    for subject, verb in itertools.product(
        ("The river", "My neighbour", "A small robot", "The old library"), ("is", "said that", "wanted")
    )
)
PAUSE_AFTER_REFUSAL_S = 0.5


@dataclass
class Tally:
    completed: int = 0
    failed: Counter[str] = field(default_factory=Counter)
    lost: int = 0
    lost_examples: list[str] = field(default_factory=list)
    tokens: int = 0

    def add(self, prompt: str, out: StreamOutcome, reference: dict[str, str]) -> None:
        if out.error is None and out.finish_reason is not None:
            want = reference.setdefault(prompt, out.text)
            if out.text == want:
                self.completed += 1
                return
            self._lose(f"text differs for {prompt!r}: {out.text!r} != {want!r}")
        elif out.cut or out.status == 0:
            self._lose(f"{prompt!r}: {out.error}")
        elif out.status == 200:
            self.failed["error event"] += 1
        else:
            self.failed[str(out.status)] += 1

    def _lose(self, why: str) -> None:
        self.lost += 1
        if len(self.lost_examples) < 5:
            self.lost_examples.append(why)


async def client_loop(
    fleet: ProcFleet,
    http: httpx.AsyncClient,
    prompts: itertools.cycle[str],
    tally: Tally,
    reference: dict[str, str],
    keep_going: Callable[[], bool],
    max_tokens: int,
) -> None:
    while keep_going():
        prompt = next(prompts)
        out = await stream_completion(http, fleet.base_url, prompt, max_tokens, read_timeout_s=120)
        tally.add(prompt, out, reference)
        if out.status in (429, 503):
            wait_s = float(out.retry_after) if out.retry_after else PAUSE_AFTER_REFUSAL_S
            await asyncio.sleep(min(wait_s, PAUSE_AFTER_REFUSAL_S))


async def load(
    fleet: ProcFleet,
    clients: int,
    seconds: float,
    max_tokens: int,
    reference: dict[str, str],
    offset: int,
    *,
    cover_all: bool = False,
) -> tuple[Tally, float]:
    """`clients` streaming clients for `seconds` (and, with `cover_all`, until every prompt has a reference
    text); returns the tally and the wall time until the last request ended."""
    tally = Tally()
    prompts = itertools.cycle(PROMPTS[offset:] + PROMPTS[:offset])
    t0 = time.monotonic()

    def keep_going() -> bool:
        return time.monotonic() < t0 + seconds or (cover_all and len(reference) < len(PROMPTS))

    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=clients)) as http:
        await asyncio.gather(
            *(
                client_loop(fleet, http, prompts, tally, reference, keep_going, max_tokens)
                for _ in range(clients)
            )
        )
    return tally, time.monotonic() - t0


# Fewest live workers a permanent kill leaves (any one worker can hold the whole model here).
MIN_LIVE_AFTER_PERMANENT = 2
# A joiner holds this one layer at start: no chain can use it until the controller gives it a range.
JOIN_LAYERS = (29, 30)


async def serve_once(fleet: ProcFleet, max_tokens: int, reference: dict[str, str]) -> Tally:
    """A few prompts, one at a time, on the fleet left after the chaos: it must still serve them all."""
    tally = Tally()
    async with httpx.AsyncClient() as http:
        for prompt in PROMPTS[:4]:
            out = await stream_completion(http, fleet.base_url, prompt, max_tokens, read_timeout_s=120)
            tally.add(prompt, out, reference)
    return tally


class Chaos:
    """Every few seconds one action on the fleet, drawn from `actions`: kill a random live worker and
    start a fresh process for it a moment later (always), kill one for good (`permanent`), start a new
    worker (`joins`). Runs in the main thread (children die with the thread that started them); spawning
    never blocks."""

    def __init__(
        self,
        fleet: ProcFleet,
        rng: random.Random,
        every_s: tuple[float, float],
        *,
        permanent: bool = False,
        joins: bool = False,
    ) -> None:
        self.fleet = fleet
        self.rng = rng
        self.every_s = every_s
        self.kills: list[str] = []
        self.restarts = 0
        self.permanent: list[str] = []
        self.joined: list[str] = []
        self._restarts: list[tuple[float, str]] = []
        self.actions: list[Callable[[float], None]] = [self.kill_and_restart]
        if permanent:
            self.actions.append(self.kill_for_good)
        if joins:
            self.actions.append(self.join)

    def live(self) -> list[str]:
        return sorted(n for n, p in self.fleet.workers.items() if p.alive() and n not in self.permanent)

    def kill_and_restart(self, now: float) -> None:
        live = self.live()
        if live:
            victim = self.rng.choice(live)
            self.fleet.kill(victim)
            self.kills.append(victim)
            self._restarts.append((now + self.rng.uniform(0.0, 2.0), victim))

    def kill_for_good(self, now: float) -> None:
        restarting = {n for _, n in self._restarts}
        live = [n for n in self.live() if n not in restarting]
        if len(live) - 1 < MIN_LIVE_AFTER_PERMANENT:
            return self.kill_and_restart(now)
        victim = self.rng.choice(live)
        self.fleet.kill(victim)
        self.kills.append(victim)
        self.permanent.append(victim)

    def join(self, now: float) -> None:
        name = f"j{len(self.joined) + 1}"
        self.fleet.start_workers([WorkerSpec(name, *JOIN_LAYERS)], timeout_s=None)
        self.joined.append(name)

    def expected(self) -> list[str]:
        """Workers that should be registered once the chaos is over."""
        return sorted(n for n in self.fleet.workers if n not in self.permanent)

    def run(self, kill_until: float, done: threading.Event) -> None:
        """Acts until `kill_until`; keeps restarting what it killed until `done` is set."""
        next_act = time.monotonic() + self.rng.uniform(*self.every_s)
        while not done.is_set() or self._restarts:
            now = time.monotonic()
            for at, name in [r for r in self._restarts if r[0] <= now]:
                self._restarts.remove((at, name))
                self.fleet.restart_worker(name, timeout_s=None)
                self.restarts += 1
            if now >= next_act and now < kill_until:
                self.rng.choice(self.actions)(now)
                next_act = now + self.rng.uniform(*self.every_s)
            done.wait(0.05)


def replan_coordinator(workdir: Path) -> tuple[list[str], dict[str, str]]:
    """Coordinator arguments and environment for --auto-replan: a plan of SPECS on a fleet of their own
    (every worker linked to every other, GPU type "cpu" of the bundled SmolLM2 profiles)."""
    from planner import bundled
    from planner.cluster import SINK, SOURCE, Cluster, Link, Node
    from planner.flow import plan_from_placement
    from planner.formats.plan_json import save_plan
    from planner.placement import LayerRange, Placement

    nodes = tuple(Node(s.name, s.gpu_type, region="local") for s in SPECS)
    ends = [(SOURCE, n.name) for n in nodes] + [(n.name, SINK) for n in nodes]
    pairs = ends + [(a.name, b.name) for a in nodes for b in nodes if a != b]
    cluster = Cluster(
        nodes=nodes,
        links=tuple(Link(a, b, 1e9, 1e-4) for a, b in pairs),
        name="chaos4",
        coordinator_region="local",
    )
    model = bundled.model("smollm2-135m")
    placement = Placement(model.num_layers, {s.name: LayerRange(s.start, s.end) for s in SPECS})
    plan = plan_from_placement(cluster, model, bundled.profiles(model), placement, method="chaos")
    workdir.mkdir(parents=True, exist_ok=True)
    save_plan(plan, workdir / "plan.json")
    return ["--plan", str(workdir / "plan.json")], {"BRL_AUTO_REPLAN": "1"}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--kill-coordinators" in argv:  # coordinator replicas die instead of workers: its own bench
        from bench.chaos_coordinators import main as chaos_coordinators

        return chaos_coordinators([a for a in argv if a != "--kill-coordinators"])
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--kill-coordinators",
        action="store_true",
        help="kill coordinator replicas instead of workers (bench/chaos_coordinators.py and its flags)",
    )
    parser.add_argument("--duration-s", type=float, default=60.0, help="length of the chaos phase")
    parser.add_argument("--calm-s", type=float, default=10.0, help="length of the calm (baseline) phase")
    parser.add_argument("--clients", type=int, default=8, help="concurrent streaming clients")
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--kill-every-s", type=float, nargs=2, default=(3.0, 6.0), metavar=("MIN", "MAX"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, help="logs go here (default: a temporary folder)")
    parser.add_argument("--quick", action="store_true", help="toy run: 15 s of chaos, 4 clients")
    parser.add_argument("--auto-replan", action="store_true", help="the coordinator re-plans live")
    parser.add_argument("--permanent", action="store_true", help="some kills are for good (--auto-replan)")
    parser.add_argument("--joins", action="store_true", help="new workers join (--auto-replan)")
    args = parser.parse_args(argv)
    if (args.permanent or args.joins) and not args.auto_replan:
        parser.error("--permanent and --joins need --auto-replan (nothing else covers lost layers again)")
    if args.quick:
        args.duration_s, args.calm_s, args.clients, args.max_tokens = 15.0, 4.0, 4, 12
        args.kill_every_s = (3.0, 5.0)
    rng = random.Random(args.seed)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="brl-chaos-"))

    coord_args, coord_env = replan_coordinator(workdir) if args.auto_replan else ([], {})
    with ProcFleet(workdir, coordinator_args=coord_args, coordinator_env=coord_env) as fleet:
        t0 = time.monotonic()
        fleet.start_coordinator()
        fleet.start_workers(SPECS)
        fleet.wait_workers([s.name for s in SPECS], timeout_s=120)
        print(f"fleet up in {time.monotonic() - t0:.1f} s (logs: {fleet.log_dir})", flush=True)

        reference: dict[str, str] = {}
        # Calm: until every prompt has its reference text and at least calm_s passed.
        calm, calm_wall_s = asyncio.run(
            load(fleet, args.clients, args.calm_s, args.max_tokens, reference, 0, cover_all=True)
        )
        calm_rate = calm.completed / calm_wall_s
        print(f"calm:  {calm.completed} completed in {calm_wall_s:.1f} s ({calm_rate:.2f} req/s)", flush=True)

        reroutes0 = fleet.metric("brl_request_reroutes_total")
        lost0 = fleet.metric("brl_workers_lost_total")
        chaos = Chaos(
            fleet,
            rng,
            (args.kill_every_s[0], args.kill_every_s[1]),
            permanent=args.permanent,
            joins=args.joins,
        )
        result: list[tuple[Tally, float]] = []
        done = threading.Event()

        def drive() -> None:
            try:
                result.append(
                    asyncio.run(
                        load(
                            fleet,
                            args.clients,
                            args.duration_s,
                            args.max_tokens,
                            reference,
                            len(PROMPTS) // 2,
                        )
                    )
                )
            finally:
                done.set()

        driver = threading.Thread(target=drive, name="clients", daemon=True)
        driver.start()
        chaos.run(time.monotonic() + args.duration_s, done)
        driver.join()
        tally, chaos_wall_s = result[0]
        retried = int(fleet.metric("brl_request_reroutes_total") - reroutes0)
        workers_lost = int(fleet.metric("brl_workers_lost_total") - lost0)

        # Bring every worker back (but those killed for good), then check nothing is left behind on them.
        expected = chaos.expected()
        dead = [n for n in expected if not fleet.workers[n].alive()]
        if dead:
            fleet.start_workers([fleet.specs[n] for n in dead])
        # A worker restarted while a re-plan ran may be left idle by it (the plan covers its layers elsewhere).
        fleet.wait_workers(expected, timeout_s=120, exactly=True, idle_ok=args.auto_replan)
        kv_left = asyncio.run(fleet.wait_kv_zero(expected, timeout_s=15))
        health = fleet.health()
        served_after = asyncio.run(serve_once(fleet, args.max_tokens, reference))

    chaos_rate = tally.completed / chaos_wall_s
    failed = sum(tally.failed.values())
    print(
        f"chaos: {len(chaos.kills)} kills ({', '.join(chaos.kills) or '-'}), {chaos.restarts} restarts, "
        f"{workers_lost} workers noticed lost, in {chaos_wall_s:.1f} s; killed for good: "
        f"{', '.join(chaos.permanent) or '-'}; joined: {', '.join(chaos.joined) or '-'}"
    )
    print(f"  completed {tally.completed}")
    print(f"  retried   {retried}   (requests moved to a new chain)")
    print(f"  failed    {failed}   {dict(tally.failed) or ''}")
    print(f"  lost      {tally.lost}")
    for why in tally.lost_examples:
        print(f"    {why}")
    print(f"  KV left on workers afterwards: {kv_left}")
    print(f"rate: chaos {chaos_rate:.2f} req/s vs calm {calm_rate:.2f} req/s = {chaos_rate / calm_rate:.2f}x")
    figures = {
        "bench": "chaos",
        "quick": bool(args.quick),
        "seed": args.seed,
        "clients": args.clients,
        "max_tokens": args.max_tokens,
        "duration_s": args.duration_s,
        "auto_replan": bool(args.auto_replan),
        "kills": len(chaos.kills),
        "restarts": chaos.restarts,
        "permanent_losses": len(chaos.permanent),
        "joins": len(chaos.joined),
        "workers_after": sorted([*health.get("workers", []), *health.get("idle", [])]),  # idle ones too
        "routable_after": bool(health.get("routable")),
        "served_after": served_after.completed,
        "workers_lost": workers_lost,
        "completed": tally.completed,
        "retried": retried,
        "failed": failed,
        "failed_by_kind": dict(tally.failed),
        "lost": tally.lost,
        "kv_left_tokens": sum(kv_left.values()),
        "running_after": health.get("running"),
        "waiting_after": health.get("waiting"),
        "calm_req_per_s": round(calm_rate, 4),
        "chaos_req_per_s": round(chaos_rate, 4),
        "ratio_chaos_vs_calm": round(chaos_rate / calm_rate, 4),
    }
    print(json.dumps(figures))
    return 1 if tally.lost or served_after.lost else 0


if __name__ == "__main__":
    raise SystemExit(main())
