"""The real side of bench/fidelity.py: `brl run`'s local deployment, the probes that measure what serving
adds to the profiles (before the replay, one request at a time), the replay of the trace's requests
against the OpenAI endpoint, and the figures measured the way simulator.metrics defines them."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.fidelity_load import LoadSampler, core_shares, sched_times_ns
from planner.placement import LayerRange
from planner.plan import Plan


@dataclass(frozen=True)
class TraceRequest:
    arrival_s: float
    input_len: int
    output_len: int  # decode iterations after the prompt (the simulator's count); the server samples +1


# ----------------------------------------------------------------------------------------------- deployment
class Deployment:
    """`brl run`'s own LocalDeployment (services.cli.run: coordinator + one throttled worker per plan node on
    loopback), with what this bench reads off it."""

    def __init__(self, workdir: Path, *, cluster: str, model: str, expect: dict[str, tuple[str, LayerRange]]):
        from services.cli.run import LocalDeployment

        self.inner = LocalDeployment(cluster=cluster, model=model, workdir=workdir).start()
        self.model_name = model
        self.log_dir = workdir / "logs"
        deployed = {w.name: (w.gpu_type, LayerRange(w.start, w.end)) for w in self.inner.specs}
        if deployed != expect:  # the bench would simulate another plan than the one that runs
            self.stop()
            raise RuntimeError(f"brl run deployed {deployed}, the bench simulates {expect}")

    @property
    def base_url(self) -> str:
        return self.inner.root_url

    @property
    def workers(self) -> dict[str, str]:
        """Node name -> gRPC address (each worker's first stdout line)."""
        return {
            c.name.removeprefix("worker-"): c.first_line
            for c in self.inner.children
            if c.name != "coordinator"
        }

    @property
    def pids(self) -> dict[str, int]:
        return {c.name.removeprefix("worker-"): c.proc.pid for c in self.inner.children}

    def stop(self) -> None:
        self.inner.stop()


def cpu_seconds(pids: dict[str, int]) -> dict[str, float]:
    """User + system CPU seconds each process has used so far (/proc/<pid>/stat)."""
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    out = {}
    for name, pid in pids.items():
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            out[name] = (int(fields[11]) + int(fields[12])) / tick
        except (OSError, IndexError, ValueError):  # not Linux, or the process is gone
            out[name] = 0.0
    return out


async def worker_stats(workers: dict[str, str]) -> dict[str, dict[str, float]]:
    """Each worker's own step timings (services.worker.client.stats)."""
    from services.worker.client import Connections, stats

    conns = Connections()
    try:
        return {n: asdict(await stats(a, connections=conns)) for n, a in workers.items()}
    finally:
        await conns.close()


# ----------------------------------------------------------------------------------------------- replay
@dataclass
class Observed:
    """One replayed request: when it was sent, when each streamed chunk came (seconds since replay start)."""

    request: TraceRequest
    sent_s: float = 0.0
    chunks_s: list[float] = field(default_factory=list)
    completion_tokens: int = 0
    error: str | None = None


async def _one(
    client: Any, url: str, model: str, req: TraceRequest, t0: float, rng: random.Random
) -> Observed:
    obs = Observed(req)
    await asyncio.sleep(max(0.0, t0 + req.arrival_s - time.perf_counter()))
    prompt = [rng.randrange(1000, 30000) for _ in range(req.input_len)]
    body = {
        "model": model,
        "prompt": prompt,
        "max_tokens": req.output_len + 1,
        "ignore_eos": True,
        "temperature": 0.0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    obs.sent_s = time.perf_counter() - t0
    try:
        async with client.stream("POST", f"{url}/v1/completions", json=body) as resp:
            if resp.status_code != 200:
                obs.error = f"HTTP {resp.status_code}: {(await resp.aread())[:200]!r}"
                return obs
            async for line in resp.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                event = json.loads(line[6:])
                if event.get("usage"):
                    obs.completion_tokens = int(event["usage"]["completion_tokens"])
                for choice in event.get("choices", []):
                    if choice.get("text"):
                        obs.chunks_s.append(time.perf_counter() - t0)
    except Exception as exc:  # a failed request is reported, never hidden
        obs.error = f"{type(exc).__name__}: {exc}"
    return obs


async def replay(url: str, model: str, requests: list[TraceRequest], *, seed: int) -> list[Observed]:
    import httpx

    rng = random.Random(seed)
    async with httpx.AsyncClient(
        timeout=httpx.Timeout(300.0), limits=httpx.Limits(max_connections=512)
    ) as client:
        t0 = time.perf_counter()
        return list(await asyncio.gather(*(_one(client, url, model, r, t0, rng) for r in requests)))


def pct(values: list[float], p: float) -> float:
    """The simulator's definition: sorted[int(n * p)]."""
    if not values:
        return 0.0
    s = sorted(values)
    return s[min(len(s) - 1, int(len(s) * p))]


def stats(values: list[float]) -> dict[str, float]:
    return {
        "count": len(values),
        "mean": sum(values) / len(values) if values else 0.0,
        "p50": pct(values, 0.5),
        "p95": pct(values, 0.95),
    }


def real_figures(obs: list[Observed], duration_s: float) -> dict[str, Any]:
    """Measured figures, defined as simulator.metrics defines them: prompt latency = send to first token;
    decode latency = gap between successive tokens; decode tok/s = decode tokens finishing in [0, duration]
    / duration; all tok/s = (prompt + decode tokens) / time of the last finish."""
    ok = [o for o in obs if o.error is None and o.chunks_s]
    # Like the simulator's metrics, latencies count when they end inside the window [0, duration].
    prompt_lat = [o.chunks_s[0] - o.sent_s for o in ok if o.chunks_s[0] <= duration_s]
    decode_lat: list[float] = []
    window_decodes = 0
    total = 0
    last = 0.0
    for o in ok:
        decode_lat.extend(b - a for a, b in zip(o.chunks_s, o.chunks_s[1:], strict=False) if b <= duration_s)
        window_decodes += sum(1 for t in o.chunks_s[1:] if t <= duration_s)
        total += o.request.input_len + max(0, len(o.chunks_s) - 1)
        last = max(last, o.chunks_s[-1])
    return {
        "decode_tok_per_s": window_decodes / duration_s,
        "all_tok_per_s": total / last if last > 0 else 0.0,
        "prompt_latency_s": stats(prompt_lat),
        "decode_latency_s": stats(decode_lat),
        "finished": len(ok),
        "errors": [o.error for o in obs if o.error][:5],
        "tokens_per_chunk": sum(o.completion_tokens for o in ok) / max(1, sum(len(o.chunks_s) for o in ok)),
    }


def chain_iterations(log_dir: Path, since_wall: float) -> dict[str, dict[str, float]]:
    """Per chain, the coordinator's own step times (its iterations.jsonl) after `since_wall`: where the
    time of an iteration went, to set beside the simulator's per-chain figures."""
    path = log_dir / "iterations.jsonl"
    by_chain: dict[str, list[float]] = {}
    if not path.exists():
        return {}
    for line in path.read_text().splitlines():
        row = json.loads(line)
        if row.get("wall", 0) >= since_wall and row.get("decode_tokens"):
            by_chain.setdefault(">".join(row["chain"]), []).append(float(row["step_s"]))
    return {c: stats(v) for c, v in sorted(by_chain.items())}


# ----------------------------------------------------------------------------------------------- probes
def plan_chains(plan: Plan) -> list[list[tuple[str, int, int]]]:
    """Every source-to-sink path of the plan's positive-flow edges, as (node, start, end) hops covering
    [0, L) (a hop runs from where the previous one ended)."""
    out: list[list[tuple[str, int, int]]] = []

    def walk(node: str, done: int, hops: list[tuple[str, int, int]]) -> None:
        for (u, v), f in sorted(plan.edge_flows.items()):
            if u != node or f <= 0:
                continue
            if v == "sink":
                if done == plan.placement.num_layers:
                    out.append(hops)
                continue
            r = plan.placement.ranges[v]
            if r.start <= done < r.end:
                walk(v, r.end, [*hops, (v, done, r.end)])

    walk("source", 0, [])
    return out


@dataclass(frozen=True)
class Probe:
    """What serving adds, measured one request at a time before the replay (nothing queues or batches)."""

    step_ms: dict[str, float]  # each worker's lone-decode step, its own stats (throttle sleep included)
    hop_latency_s: float  # one gRPC hop there and back: the workers' streams' round trip minus service
    coordinator_cpu_s_per_iteration: float  # coordinator CPU seconds per iteration, through the HTTP API
    background: float  # competitors for the cores meanwhile (LoadSampler)
    # Per worker, the share of a core its threads had during the lone steps (time on a core / time
    # runnable, the kernel's schedstat): what brings a step back to a core of its own. Empty where the
    # kernel keeps no such figures; the share then follows from `background`.
    core_share: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


async def direct_probe(workers: dict[str, str], plan: Plan, *, rounds: int, seed: int) -> dict[str, Any]:
    """Drive every chain of the plan straight through the worker client (services.worker.client), one request
    at a time (a 16-token prompt, then 8 decodes): the workers warm up and record lone step times, and the
    coordinator's router is left untouched, so the replay meets it in the state the simulator starts from."""
    from services.worker.client import ChainClient, Connections, HopAddress, StepInput

    rng = random.Random(seed + 2)
    conns = Connections()
    try:
        for i in range(rounds):
            for j, chain in enumerate(plan_chains(plan)):
                client = ChainClient([HopAddress(workers[n], a, b) for n, a, b in chain], connections=conns)
                rid = f"probe-{i}-{j}"
                prompt = [rng.randrange(1000, 30000) for _ in range(16)]
                res = await client.step([StepInput(rid, prompt, 0)])
                pos = len(prompt)
                for k in range(8):
                    if not res[0].ok or res[0].token_id is None:
                        raise RuntimeError(f"probe step failed on {chain}: {res[0].error}")
                    res = await client.step([StepInput(rid, [res[0].token_id], pos, finish=k == 7)])
                    pos += 1
    finally:
        await conns.close()
    return await worker_stats(workers)


async def coordinator_probe(dep: Deployment, *, requests: int, seed: int) -> float:
    """Coordinator CPU seconds per iteration of `dep` (coordinator_cpu_probe)."""
    return await coordinator_cpu_probe(
        dep.base_url, dep.model_name, dep.pids["coordinator"], requests=requests, seed=seed
    )


async def coordinator_cpu_probe(base_url: str, model: str, pid: int, *, requests: int, seed: int) -> float:
    """Coordinator CPU seconds per iteration: requests one at a time through the OpenAI endpoint (a
    16-token prompt, 8 decodes: 9 iterations each), the coordinator's CPU seconds over the iterations."""
    import httpx

    rng = random.Random(seed + 1)
    before = cpu_seconds({"coordinator": pid})["coordinator"]
    iterations = 0
    async with httpx.AsyncClient(timeout=httpx.Timeout(120.0)) as client:
        for _ in range(requests):
            o = await _one(client, base_url, model, TraceRequest(0.0, 16, 8), time.perf_counter(), rng)
            if o.error:
                raise RuntimeError(f"coordinator probe failed: {o.error}")
            iterations += len(o.chunks_s)
    return (cpu_seconds({"coordinator": pid})["coordinator"] - before) / max(1, iterations)


def probe(dep: Deployment, plan: Plan, *, rounds: int, seed: int) -> Probe:
    return probe_fleet(dep.workers, dep.pids, dep.base_url, dep.model_name, plan, rounds=rounds, seed=seed)


def probe_fleet(
    workers: dict[str, str],
    pids: dict[str, int],
    base_url: str,
    model: str,
    plan: Plan,
    *,
    rounds: int,
    seed: int,
) -> Probe:
    """The serving terms of a running fleet (worker name -> gRPC address, process ids with the
    "coordinator"'s, its OpenAI root URL): lone steps through every chain of `plan`, then the coordinator."""
    with LoadSampler(list(pids.values())) as load:
        first = {n: sched_times_ns(pids[n]) for n in workers}
        wstats = asyncio.run(direct_probe(workers, plan, rounds=rounds, seed=seed))
        shares = core_shares(first, {n: sched_times_ns(pids[n]) for n in workers})
        coord = asyncio.run(
            coordinator_cpu_probe(base_url, model, pids["coordinator"], requests=rounds, seed=seed)
        )
    links = sorted(float(st["link_ms_p50"]) for st in wstats.values() if st["link_ms_p50"] > 0)
    return Probe(
        step_ms={n: float(st["step_ms_p50"]) for n, st in wstats.items()},
        hop_latency_s=links[len(links) // 2] / 1e3 if links else 0.0,
        coordinator_cpu_s_per_iteration=coord,
        background=load.mean,
        core_share=shares,
    )


# ----------------------------------------------------------------------------------------------- one real run
@dataclass
class RealRun:
    """One deployment, probed, then replaying the trace: what it measured."""

    figures: dict[str, Any]
    probe: Probe
    background: float  # competitors for the cores during the replay (LoadSampler)
    ours: float  # the deployment's processes with a runnable thread during the replay
    chains: dict[str, dict[str, float]]  # the coordinator's own decode step times per chain
    worker_stats: dict[str, dict[str, float]]
    replay_tokens: dict[str, float]  # tokens each worker processed during the replay (routing's split)


def real_run(
    workdir: Path,
    plan: Plan,
    placement: dict[str, tuple[str, LayerRange]],
    requests: list[TraceRequest],
    *,
    cluster: str,
    model: str,
    duration_s: float,
    probe_rounds: int,
    seed: int,
) -> RealRun:
    """A fresh deployment each time, so every replay meets the router in the state the simulation starts
    from: probe it, replay the requests, read its logs and stats, then probe the coordinator's CPU (last:
    probing through the router before would leave its round-robin state other than the simulation's)."""
    dep = Deployment(workdir, cluster=cluster, model=model, expect=placement)
    try:
        found = probe(dep, plan, rounds=probe_rounds, seed=seed)
        started_wall = time.time()
        before = asyncio.run(worker_stats(dep.workers))
        with LoadSampler(list(dep.pids.values())) as during:
            obs = asyncio.run(replay(dep.base_url, dep.model_name, requests, seed=seed))
        wstats = asyncio.run(worker_stats(dep.workers))
        chains = chain_iterations(dep.log_dir, started_wall)
        coord_cpu = asyncio.run(coordinator_probe(dep, requests=probe_rounds, seed=seed))
    finally:
        dep.stop()
    return RealRun(
        figures=real_figures(obs, duration_s),
        probe=dataclasses.replace(found, coordinator_cpu_s_per_iteration=coord_cpu),
        background=during.mean,
        ours=during.ours_mean,
        chains=chains,
        worker_stats=wstats,
        replay_tokens={
            n: float(wstats[n]["tokens_processed"] - before[n]["tokens_processed"]) for n in wstats
        },
    )


def mean_probe(probes: list[Probe]) -> Probe:
    n = len(probes)
    return Probe(
        step_ms={k: sum(p.step_ms[k] for p in probes) / n for k in probes[0].step_ms},
        hop_latency_s=sum(p.hop_latency_s for p in probes) / n,
        coordinator_cpu_s_per_iteration=sum(p.coordinator_cpu_s_per_iteration for p in probes) / n,
        background=sum(p.background for p in probes) / n,
        core_share={
            k: sum(p.core_share[k] for p in probes) / n
            for k in probes[0].core_share
            if all(k in p.core_share for p in probes)
        },
    )
