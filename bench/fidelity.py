"""Simulator fidelity: the plan `brl run` deploys on this machine (services.cli.run: SmolLM2 on three CPU
workers of declared speeds 1, 0.5, 0.25, throttled by sleeping), profiled with `brl profile`'s code, then
both SIMULATED (simulator.run.simulate) and RUN FOR REAL (`brl run`'s own LocalDeployment: coordinator +
workers on loopback; the same requests replayed against its OpenAI endpoint, streamed), side by side.

    .venv/bin/python bench/fidelity.py            # ~2 minutes: 60 s of Azure-conversation arrivals
    .venv/bin/python bench/fidelity.py --quick    # a handful of requests; run by tests/bench/test_bench_fidelity.py

Workload: the Azure conversation lengths divided by --length-scale (pairs kept), arrivals from the Azure
arrival trace rescaled to --rate tokens/s. The simulator's own online feeder draws the requests, so the
replay sends exactly the requests it simulates (max_tokens = decodes + 1, ignore_eos).

Predictions, each a simulate() of the same plan and workload with richer inputs (services.profiling.overheads):
  profile        the measured per-layer tables (/ declared speed) only
  profile+head   + the LM head on last hops, measured by `brl profile` (lm_head_ms)
  calibrated     + a probe of the live fleet before the replay (one request at a time): each worker's step
                 time over the profile's (machine speed then, serialisation, sampling), the gRPC hop cost,
                 the coordinator's CPU per iteration
  +colocation    + processor sharing of the machine's cores by our workers, coordinator and client (fixed
                 point) and by other tenants' runnable threads, sampled during the replay (LoadSampler)
The last line is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import math
import os
import random
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from planner import bundled  # noqa: E402
from planner.cluster import Cluster  # noqa: E402
from planner.formats.profiles import load_profile_dir  # noqa: E402
from planner.model import ModelSpec  # noqa: E402
from planner.placement import LayerRange  # noqa: E402
from planner.plan import Plan  # noqa: E402
from planner.profile import ProfileSet  # noqa: E402
from services.profiling.overheads import add_head, scale_steps  # noqa: E402
from simulator.engine import EventLoop  # noqa: E402
from simulator.run import SimConfig, SimResult, simulate  # noqa: E402
from simulator.workload import OnlineFeeder, load_arrivals, load_lengths  # noqa: E402

MODEL = "smollm2-135m"
CLUSTER = "local-cpu"
# Node name -> (GPU type, layers) and GPU type -> declared speed, of the plan `brl run` deploys
# (services.cli.run.plan_local); filled by load_local_plan().
PLACEMENT: dict[str, tuple[str, LayerRange]] = {}
SPEEDS: dict[str, float] = {}
GOAL_REL_ERR = 0.10


def load_local_plan() -> Plan:
    """The plan and worker specs `brl run` uses; the slower types are throttled by sleeping (services.worker
    batcher): a step takes compute / speed, so their profile is the measured one / speed."""
    from services.cli.run import plan_local

    plan, specs = plan_local(CLUSTER, MODEL)
    PLACEMENT.clear()
    PLACEMENT.update({w.name: (w.gpu_type, LayerRange(w.start, w.end)) for w in specs})
    SPEEDS.clear()
    SPEEDS.update({w.gpu_type: w.speed_factor for w in specs})
    return plan


# ----------------------------------------------------------------------------------------------- workload
def scaled_lengths_csv(name: str, scale: float, max_input: int, max_output: int, path: Path) -> Path:
    """The length distribution with both lengths divided by `scale` (pairs kept), clipped to the caps."""
    rows = ["input_len,output_len"]
    for i, o in load_lengths(name).pairs:
        rows.append(f"{min(max_input, max(4, round(i / scale)))},{min(max_output, max(1, round(o / scale)))}")
    path.write_text("\n".join(rows) + "\n")
    return path


@dataclass(frozen=True)
class TraceRequest:
    arrival_s: float
    input_len: int
    output_len: int  # decode iterations after the prompt (the simulator's count); the server samples +1


def trace_requests(
    lengths: str, arrivals: str, *, seed: int, duration_s: float, rate_tok_per_s: float
) -> list[TraceRequest]:
    """Exactly the requests simulate() will draw for SimConfig(mode="online", seed, duration, target rate,
    load_time_s=0): its own OnlineFeeder, run on an empty event loop."""
    loop = EventLoop(0.0)
    out: list[TraceRequest] = []

    def submit(i: int, o: int) -> object:
        out.append(TraceRequest(loop.now, i, o))
        return True

    OnlineFeeder(
        loop,
        submit,
        load_lengths(lengths),
        load_arrivals(arrivals),
        random.Random(seed),
        start_s=0.0,
        duration_s=duration_s,
        target_tok_per_s=rate_tok_per_s,
    )
    loop.run(duration_s + 1.0)
    return out


# ----------------------------------------------------------------------------------------------- profiles
def measure_profiles(
    out_dir: Path, *, quick: bool, speeds: dict[str, float]
) -> tuple[ProfileSet, dict[int, float]]:
    """One measurement of the torch backend (brl profile's code), written as one profile per GPU type of the
    plan: tables for the layers each node holds, divided by its speed when the deployment throttles."""
    from services.modelstore import ensure_model
    from services.profiling.measure import (
        MeasureConfig,
        load_measuring_backend,
        measure_backend,
        measuring_shard,
    )
    from services.profiling.profile import measure_head_of, runtime_model
    from services.profiling.save import save_profile
    from services.profiling.tables import fixed_pool_capacity, gpu_entry, model_entry, per_layer_table, split
    from services.worker.backends.base import ShardSpec

    cfg = (
        MeasureConfig(prompt_tokens=(8, 32, 64), decode_batches=(1, 2, 4), decode_context=32, repeats=2)
        if quick
        else MeasureConfig(
            prompt_tokens=(8, 16, 32, 64, 128, 256),
            decode_batches=(1, 2, 4, 8, 16),
            decode_context=64,
            repeats=3,
        )
    )
    model = runtime_model(MODEL, "float32")
    start, end = measuring_shard(model.num_layers, cfg.measure_layers)
    spec = ShardSpec(MODEL, ensure_model(MODEL), start, end, kv_capacity_tokens=1 << 16)
    backend = load_measuring_backend("torch", spec, cfg)
    try:
        m = measure_backend(backend, cfg)
    finally:
        backend.close()
    head = measure_head_of("torch", spec, model.num_layers, cfg)
    for gpu_type, layers in PLACEMENT.values():
        k = layers.size
        speed = speeds.get(gpu_type, 1.0)
        prompt, decode = (per_layer_table(split(s), k) for s in (m.prompt, m.decode))
        if speed != 1.0:
            from planner.profile import LatencyTable

            prompt, decode = (
                LatencyTable(tuple((x, y / speed) for x, y in t.points)) for t in (prompt, decode)
            )
        entry = gpu_entry(
            m,
            fixed_pool_capacity(model, model.num_layers, 2**29),
            profile_dir=gpu_type,
            layers=k,
            prompt_max_requests=64,
            prompt_max_tokens=2048,
            decode_max_tokens=256,
            nic_bytes_per_s=1e9,
            head=head if layers.end == model.num_layers else None,
            description=f"bench/fidelity, speed {speed}",
        )
        save_profile(out_dir, gpu_type, model_entry(model, model.token_bytes), entry, prompt, decode)
    return load_profile_dir(out_dir, model_name=MODEL), dict(zip(head.points, head.ms, strict=True))


def lm_head_of(folder: Path) -> dict[int, float]:
    """The `lm_head_ms` a `brl profile` folder recorded (any GPU type; empty if none)."""
    from planner.formats.profiles import load_settings

    for entry in load_settings(folder / "settings.json")["gpus"].values():
        if entry.get("lm_head_ms"):
            return {int(b): float(ms) for b, ms in entry["lm_head_ms"]}
    return {}


# ----------------------------------------------------------------------------------------------- real run
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
        if not requests:  # warm-up: first steps allocate caches and pick kernels; not measured
            return [await _one(client, url, model, TraceRequest(0.0, 16, 4), time.perf_counter(), rng)]
        t0 = time.perf_counter()
        return list(await asyncio.gather(*(_one(client, url, model, r, t0, rng) for r in requests)))


def _pct(values: list[float], p: float) -> float:
    """The simulator's definition: sorted[int(n * p)]."""
    if not values:
        return 0.0
    s = sorted(values)
    return s[min(len(s) - 1, int(len(s) * p))]


def _stats(values: list[float]) -> dict[str, float]:
    return {
        "count": len(values),
        "mean": sum(values) / len(values) if values else 0.0,
        "p50": _pct(values, 0.5),
        "p95": _pct(values, 0.95),
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
        gaps = [b - a for a, b in zip(o.chunks_s, o.chunks_s[1:], strict=False) if b <= duration_s]
        decode_lat.extend(gaps)
        window_decodes += sum(1 for t in o.chunks_s[1:] if t <= duration_s)
        total += o.request.input_len + max(0, len(o.chunks_s) - 1)
        last = max(last, o.chunks_s[-1])
    return {
        "decode_tok_per_s": window_decodes / duration_s,
        "all_tok_per_s": total / last if last > 0 else 0.0,
        "prompt_latency_s": _stats(prompt_lat),
        "decode_latency_s": _stats(decode_lat),
        "finished": len(ok),
        "errors": [o.error for o in obs if o.error][:5],
        "tokens_per_chunk": (sum(o.completion_tokens for o in ok) / max(1, sum(len(o.chunks_s) for o in ok))),
    }


def sim_figures(r: SimResult) -> dict[str, Any]:
    def st(s: Any) -> dict[str, float]:
        return {"count": s.count, "mean": s.mean, "p50": s.p50, "p95": s.p95}

    return {
        "decode_tok_per_s": r.decode_tok_per_s,
        "all_tok_per_s": r.all_tok_per_s,
        "prompt_latency_s": st(r.prompt_latency_s),
        "decode_latency_s": st(r.decode_latency_s),
        "finished": r.finished,
        # Which chains the router used: each node's share of the tokens (prompt + decode) it processed.
        "node_share": _shares(
            {n: float(v["decode_seqs"]) + float(v["prompt_tokens"]) for n, v in r.nodes.items()}
        ),
    }


def _shares(counts: dict[str, float]) -> dict[str, float]:
    total = sum(counts.values())
    return {n: round(c / total, 4) if total else 0.0 for n, c in counts.items()}


def _finite(x: Any) -> Any:
    """JSON has no infinity: a relative error against a zero measurement is written as null."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_finite(v) for v in x]
    return x


# (label, key): a key "a.b" reads figures["a"]["b"].
FIGURES = [("decode tok/s", "decode_tok_per_s"), ("all tok/s", "all_tok_per_s")] + [
    (f"{lat.split('_')[0]} latency {s} (s)", f"{lat}.{s}")
    for lat in ("prompt_latency_s", "decode_latency_s")
    for s in ("mean", "p50", "p95")
]


def pick(figures: dict[str, Any], key: str) -> float:
    value: Any = figures
    for part in key.split("."):
        value = value[part]
    return float(value)


def compare(pred: dict[str, Any], meas: dict[str, Any]) -> dict[str, float]:
    """Relative error (predicted - measured) / measured of every figure."""
    out = {}
    for _, key in FIGURES:
        m = pick(meas, key)
        out[key] = (pick(pred, key) - m) / m if m else math.inf
    return out


def print_table(
    predictions: dict[str, dict[str, Any]], meas: dict[str, Any] | None, errors: dict[str, dict[str, float]]
) -> None:
    names = list(predictions)
    head = f"{'figure':28s} " + " ".join(f"{'pred:' + n:>16s}" for n in names) + f" {'measured':>11s} "
    print(head + " ".join(f"{'err:' + n:>15s}" for n in names))
    for label, key in FIGURES:
        line = f"{label:28s} " + " ".join(f"{pick(predictions[n], key):16.4f}" for n in names)
        line += f" {pick(meas, key) if meas else math.nan:11.4f} "
        line += " ".join(f"{errors[n][key]:+15.1%}" if meas else f"{'':>15s}" for n in names)
        print(line)


# ----------------------------------------------------------------------------------------------- deployment
def cpu_seconds(pids: dict[str, int]) -> dict[str, float]:
    """User + system CPU seconds each process has used so far (/proc/<pid>/stat), and this one ("client")."""
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    out = {"client": time.process_time()}
    for name, pid in pids.items():
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            out[name] = (int(fields[11]) + int(fields[12])) / tick
        except (OSError, IndexError, ValueError):  # not Linux, or the process is gone
            out[name] = 0.0
    return out


async def worker_stats(workers: dict[str, str]) -> dict[str, dict[str, float]]:
    """Each worker's own step timings (services.worker.client.stats): where the time of a step went."""
    from dataclasses import asdict

    from services.worker.client import Connections, stats

    conns = Connections()
    try:
        return {n: asdict(await stats(a, connections=conns)) for n, a in workers.items()}
    finally:
        await conns.close()


class LoadSampler:
    """Other tenants' CPU demand while it runs (a thread sampling every 0.1 s): runnable threads machine-wide
    (/proc/loadavg) minus runnable threads of our own processes (/proc/<pid>/task/*/stat, state R). On a
    shared machine this is an input of the prediction like a link's bandwidth: it decides our share of it."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="load sampler", daemon=True)

    @staticmethod
    def _ours_running(pid: int) -> int:
        n = 0
        for task in Path(f"/proc/{pid}/task").glob("*/stat"):
            try:
                if task.read_text().rsplit(")", 1)[1].split()[0] == "R":
                    n += 1
            except (OSError, IndexError):
                continue
        return n

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            try:
                running = int(Path("/proc/loadavg").read_text().split()[3].split("/")[0])
            except (OSError, IndexError, ValueError):  # not Linux
                return
            ours = sum(self._ours_running(pid) for pid in self.pids)
            self.samples.append(max(0.0, running - ours))

    def __enter__(self) -> LoadSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def mean(self) -> float:
        return sum(self.samples) / len(self.samples) if self.samples else 0.0


class Deployment:
    """`brl run`'s own LocalDeployment (services.cli.run: coordinator + one throttled worker per plan node on
    loopback), with what this bench reads off it."""

    def __init__(self, workdir: Path) -> None:
        from services.cli.run import LocalDeployment

        self.inner = LocalDeployment(cluster=CLUSTER, model=MODEL, workdir=workdir).start()
        self.model_name = MODEL
        deployed = {w.name: (w.gpu_type, LayerRange(w.start, w.end)) for w in self.inner.specs}
        if deployed != PLACEMENT:  # the bench would simulate another plan than the one that runs
            self.stop()
            raise RuntimeError(f"brl run deployed {deployed}, the bench simulates {PLACEMENT}")

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


# ----------------------------------------------------------------------------------------------- main
def sim_config(lengths: str, arrivals: str, *, duration_s: float, rate: float, seed: int) -> SimConfig:
    return SimConfig(
        mode="online",
        policy="maxflow",
        lengths=lengths,
        arrivals=arrivals,
        duration_s=duration_s,
        warmup_s=0.0,
        seed=seed,
        target_tok_per_s=rate,
        load_time_s=0.0,
        watch_interval_s=0.0,
    )


@dataclass(frozen=True)
class Calibration:
    """The serving terms measured by the probe (see services.profiling.overheads for what each holds)."""

    iteration_s: float  # the slowest chain's lone decode step total (workers' own step times), s
    step_ms: dict[str, float]  # each worker's lone-decode step (its own stats)
    step_factor: dict[str, float]  # step_ms / what the profile predicts for that step
    hop_latency_s: float  # one gRPC hop, there and back (worker streams' link_ms_p50)
    # A lone iteration through the coordinator after the replay (client side), over iteration_s: serving
    # overhead plus how much the shared machine's speed moved meanwhile (reported, not used).
    drift: float = 1.0
    # Other tenants' runnable threads (LoadSampler) during the probe and during the replay.
    background_probe: float = 0.0
    background_replay: float = 0.0
    # CPU seconds the coordinator and the load client spend per iteration (prompt or decode): they run on
    # the same cores as the workers, so they join the co-location model as busy processes.
    serving_cpu_s_per_iteration: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "serving_cpu_s_per_iteration": self.serving_cpu_s_per_iteration,
            "drift": self.drift,
            "background_probe": self.background_probe,
            "background_replay": self.background_replay,
            "iteration_s": self.iteration_s,
            "step_ms": self.step_ms,
            "step_factor": self.step_factor,
            "hop_latency_s": self.hop_latency_s,
        }


async def lone_iteration_s(dep: Deployment, *, requests: int, seed: int) -> float:
    """Median client-side decode iteration with one request in flight (a 16-token prompt, 8 decodes)."""
    import httpx

    rng = random.Random(seed + 1)
    gaps: list[float] = []
    async with httpx.AsyncClient(timeout=httpx.Timeout(120.0)) as client:
        for _ in range(requests):
            o = await _one(
                client, dep.base_url, dep.model_name, TraceRequest(0.0, 16, 8), time.perf_counter(), rng
            )
            gaps.extend(b - a for a, b in zip(o.chunks_s, o.chunks_s[1:], strict=False))
    return _pct(gaps, 0.5)


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


async def direct_probe(dep: Deployment, plan: Plan, *, rounds: int, seed: int) -> float:
    """Drive every chain of the plan straight through the worker client (services.worker.client), one request
    at a time (a 16-token prompt, then 8 decodes): the workers warm up and record lone step times, and the
    coordinator's router is left untouched, so the replay meets it in the state the simulator starts from.
    Returns the median link cost between hops (each stream's round trip minus the far side's service), s."""
    from services.worker.client import ChainClient, Connections, HopAddress, StepInput

    rng = random.Random(seed + 2)
    conns = Connections()
    try:
        for i in range(rounds):
            for j, chain in enumerate(plan_chains(plan)):
                client = ChainClient(
                    [HopAddress(dep.workers[n], a, b) for n, a, b in chain], connections=conns
                )
                rid = f"probe-{i}-{j}"
                prompt = [rng.randrange(1000, 30000) for _ in range(16)]
                res = await client.step([StepInput(rid, prompt, 0)])
                pos = len(prompt)
                for k in range(8):
                    if not res[0].ok or res[0].token_id is None:
                        raise RuntimeError(f"probe step failed on {chain}: {res[0].error}")
                    res = await client.step([StepInput(rid, [res[0].token_id], pos, finish=k == 7)])
                    pos += 1
        stats = await worker_stats(dep.workers)
    finally:
        await conns.close()
    links = sorted(float(st["link_ms_p50"]) for st in stats.values() if st["link_ms_p50"] > 0)
    return links[len(links) // 2] / 1e3 if links else 0.0


async def probe(dep: Deployment, plan: Plan, profiles: ProfileSet, *, rounds: int, seed: int) -> Calibration:
    """Requests one at a time: no batching and no queueing, so the workers' step times over what the profile
    predicts and the links' cost show plainly. Not part of the replay (see direct_probe)."""
    from services.profiling.overheads import step_factor

    link_s = await direct_probe(dep, plan, rounds=rounds, seed=seed)
    stats = await worker_stats(dep.workers)
    step_ms = {n: float(stats[n]["step_ms_p50"]) for n in PLACEMENT}
    factor = {n: step_factor(step_ms[n], profiles, t, r.size) for n, (t, r) in PLACEMENT.items()}
    iteration = max(sum(step_ms[n] for n, _, _ in c) for c in plan_chains(plan)) / 1e3
    return Calibration(iteration, step_ms, factor, link_s)


async def coordinator_probe(dep: Deployment, *, requests: int, seed: int) -> tuple[float, dict[str, float]]:
    """After the replay, through the coordinator: the lone decode iteration a client sees, and the CPU
    seconds the coordinator and this client spend per iteration (9 per request)."""
    cpu0 = cpu_seconds(dep.pids)
    iteration = await lone_iteration_s(dep, requests=requests, seed=seed)
    cpu1 = cpu_seconds(dep.pids)
    return iteration, {k: (cpu1[k] - cpu0[k]) / (9 * requests) for k in ("coordinator", "client")}


def calibrated_inputs(cluster: Cluster, profiles: ProfileSet, cal: Calibration) -> tuple[Cluster, ProfileSet]:
    """Probe-calibrated inputs: tables x step factor (as measured, at the probe's machine load); every
    link gets the hop latency, and links into the coordinator also its CPU time per iteration (it turns a
    result into the next step and the streamed token before the chain moves on)."""
    import dataclasses as dc

    from planner.cluster import SINK
    from services.profiling.overheads import scale_steps, with_hop_latency

    factors = {t: cal.step_factor[n] for n, (t, _) in PLACEMENT.items()}
    linked = with_hop_latency(cluster, cal.hop_latency_s)
    coord_s = cal.serving_cpu_s_per_iteration.get("coordinator", 0.0)
    links = tuple(
        dc.replace(lk, latency_s=lk.latency_s + coord_s) if lk.dst == SINK else lk for lk in linked.links
    )
    return dc.replace(linked, links=links), scale_steps(profiles, factors)


def simulate_colocated(
    cluster: Cluster,
    model: ModelSpec,
    profiles: ProfileSet,
    plan: Plan,
    cfg: SimConfig,
    *,
    cores: float,
    serving_cpu_s_per_iteration: dict[str, float],
    background: float = 0.0,
) -> tuple[SimResult, dict[str, float]]:
    """The fleet's workers, the coordinator and the load client share this machine's cores: fixed point of
    (simulate -> each process's busy share -> processor-sharing slowdown of each worker,
    services.profiling.overheads.colocation_slowdown -> slower tables). The coordinator's and client's busy
    shares are their probed CPU seconds per iteration x the simulated iterations per second. Damped; a few
    rounds settle it."""
    from services.profiling.overheads import colocation_slowdown, scale_steps

    slowdown = {n: 1.0 for n in PLACEMENT}
    result = simulate(cluster, model, profiles, plan, cfg)
    for _ in range(6):
        # A slowed worker stays runnable longer: its busy share at the current slowdown is what overlaps.
        # (busy_s over the served span: the simulator's own `utilisation` divides by its drain horizon.)
        span = max(cfg.duration_s or 0.0, result.last_finish_s - result.start_s, 1e-9)
        # A throttled worker sleeps (1 - speed) of each step: only the rest occupies a core.
        busy = {
            n: min(1.0, float(result.nodes[n]["busy_s"]) * SPEEDS.get(t, 1.0) / span)
            for n, (t, _) in PLACEMENT.items()
        }
        iterations_per_s = (sum(result.decode_series) + result.finished) / span
        for proc, cpu_s in serving_cpu_s_per_iteration.items():
            busy[proc] = min(1.0, cpu_s * iterations_per_s)
        target = colocation_slowdown(busy, cores, background=background)
        slowdown = {n: 0.5 * slowdown[n] + 0.5 * target[n] for n in PLACEMENT}
        scaled = scale_steps(profiles, {PLACEMENT[n][0]: f for n, f in slowdown.items()})
        result = simulate(cluster, model, scaled, plan, cfg)
    return result, slowdown


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a handful of tiny requests (tests)")
    ap.add_argument("--duration-s", type=float, help="arrival window (60; quick 6)")
    ap.add_argument("--rate", type=float, help="target tokens/s of the arrivals (30; quick 20)")
    ap.add_argument("--length-scale", type=float, help="divide trace lengths by this (16; quick 32)")
    ap.add_argument("--lengths", default="azure-conv")
    ap.add_argument("--arrivals", default="azure-conv")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--profiles", type=Path, help="a `brl profile` folder to use instead of measuring now")
    ap.add_argument("--no-real", action="store_true", help="simulate only (no deployment)")
    ap.add_argument("--workdir", type=Path, help="keep profiles, plan and process logs here")
    ap.add_argument("--cores", type=float, default=float(os.cpu_count() or 1), help="cores the workers share")
    args = ap.parse_args(argv)
    quick = args.quick
    duration = args.duration_s or (6.0 if quick else 60.0)
    rate = args.rate or (20.0 if quick else 30.0)
    scale = args.length_scale or (32.0 if quick else 16.0)
    caps = (48, 6) if quick else (256, 64)
    cluster = bundled.cluster(CLUSTER)
    model = bundled.model(MODEL)
    plan = load_local_plan()
    with tempfile.TemporaryDirectory(prefix="brl-fidelity-") as tmp:
        work = args.workdir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        lengths = str(scaled_lengths_csv(args.lengths, scale, *caps, work / "lengths.csv"))
        requests = trace_requests(
            lengths, args.arrivals, seed=args.seed, duration_s=duration, rate_tok_per_s=rate
        )
        t_prof = time.perf_counter()
        if args.profiles:
            profiles, head = load_profile_dir(args.profiles, model_name=MODEL), lm_head_of(args.profiles)
        else:
            profiles, head = measure_profiles(work / "profiles", quick=quick, speeds=SPEEDS)
        profile_s = time.perf_counter() - t_prof
        # The profile as `brl profile` writes it leaves the LM head out of the per-layer tables; the nodes
        # holding the last layer pay it on every step (stretched by their throttle like the rest).
        with_head = profiles
        for _, (gpu_type, layers) in PLACEMENT.items():
            if head and layers.end == model.num_layers:
                speed = SPEEDS.get(gpu_type, 1.0)
                with_head = add_head(
                    with_head, gpu_type, layers.size, {b: ms / speed for b, ms in head.items()}
                )
        cfg = sim_config(lengths, args.arrivals, duration_s=duration, rate=rate, seed=args.seed)
        predictions = {
            "profile": sim_figures(simulate(cluster, model, profiles, plan, cfg)),
            "profile+head": sim_figures(simulate(cluster, model, with_head, plan, cfg)),
        }
        meas: dict[str, Any] | None = None
        wstats: dict[str, dict[str, float]] = {}
        cal: Calibration | None = None
        colocation: dict[str, float] = {}
        real_s = 0.0
        if not args.no_real:
            t_real = time.perf_counter()
            dep = Deployment(work / "run")
            try:
                ours = [os.getpid(), *dep.pids.values()]
                with LoadSampler(ours) as during_probe:
                    cal = asyncio.run(probe(dep, plan, with_head, rounds=1 if quick else 3, seed=args.seed))
                with LoadSampler(ours) as during_replay:
                    obs = asyncio.run(replay(dep.base_url, dep.model_name, requests, seed=args.seed))
                wstats = asyncio.run(worker_stats(dep.workers))
                after, serving_cpu = asyncio.run(
                    coordinator_probe(dep, requests=1 if quick else 2, seed=args.seed)
                )
                cal = dataclasses.replace(
                    cal,
                    drift=after / cal.iteration_s if cal.iteration_s > 0 else 1.0,
                    serving_cpu_s_per_iteration=serving_cpu,
                    background_probe=during_probe.mean,
                    background_replay=during_replay.mean,
                )
            finally:
                dep.stop()
            real_s = time.perf_counter() - t_real
            meas = real_figures(obs, duration)
            cal_cluster, cal_profiles = calibrated_inputs(cluster, with_head, cal)
            predictions["calibrated"] = sim_figures(simulate(cal_cluster, model, cal_profiles, plan, cfg))
            # The probe's factors hold the probe-time background (a lone step, nothing else of ours busy);
            # take it out, then share the cores with our own processes and the background of the replay.
            at_probe = max(1.0, (1.0 + cal.background_probe) / args.cores)
            base = scale_steps(cal_profiles, {t: 1.0 / at_probe for t, _ in PLACEMENT.values()})
            coloc, slowdown = simulate_colocated(
                cal_cluster,
                model,
                base,
                plan,
                cfg,
                cores=args.cores,
                serving_cpu_s_per_iteration=cal.serving_cpu_s_per_iteration,
                background=cal.background_replay,
            )
            predictions["+colocation"] = sim_figures(coloc)
            colocation = {n: round(f, 4) for n, f in slowdown.items()}
    print(
        f"fidelity: {len(requests)} requests over {duration:g} s ({rate:g} tok/s target), lengths "
        f"{args.lengths}/{scale:g}, plan {', '.join(f'{n}{r}' for n, (_, r) in PLACEMENT.items())}"
    )
    if cal is not None:
        print(
            f"probe: decode iteration {cal.iteration_s * 1e3:.1f} ms; worker steps "
            + ", ".join(
                f"{n} {ms:.1f} ms (x{cal.step_factor[n]:.2f} of profile)" for n, ms in cal.step_ms.items()
            )
            + f"; hop latency {cal.hop_latency_s * 1e3:.1f} ms x {len(PLACEMENT) + 1} links; "
            f"drift over the replay x{cal.drift:.2f}; other tenants' runnable threads: probe "
            f"{cal.background_probe:.2f}, replay {cal.background_replay:.2f}"
        )
    if colocation:
        print(
            f"co-location on {args.cores:g} cores: mean slowdown while busy "
            + ", ".join(f"{n} x{f:.2f}" for n, f in colocation.items())
        )
    errors = {name: compare(p, meas) for name, p in predictions.items()} if meas else {}
    print_table(predictions, meas, errors)
    if wstats:
        real_share = _shares({n: float(v["tokens_processed"]) for n, v in wstats.items()})
        print(
            "token share per node (routing): predicted "
            + ", ".join(f"{n} {v:.0%}" for n, v in predictions["+colocation"]["node_share"].items())
            + "; measured (incl. warm-up and probe) "
            + ", ".join(f"{n} {v:.0%}" for n, v in real_share.items())
        )
    goal_keys = ("all_tok_per_s", "prompt_latency_s.p50", "decode_latency_s.p50")
    best = "+colocation" if "+colocation" in errors else "profile+head"
    within = bool(meas) and all(abs(errors[best][k]) <= GOAL_REL_ERR for k in goal_keys)
    figures = {
        "bench": "fidelity",
        "quick": quick,
        "requests": len(requests),
        "duration_s": duration,
        "rate_tok_per_s": rate,
        "length_scale": scale,
        "predicted": predictions,
        "measured": meas,
        "rel_err": errors,
        "calibration": cal.to_dict() if cal else None,
        "colocation_slowdown": colocation,
        "worker_stats": wstats,
        # The same share, measured: tokens each worker processed during warm-up, probe and replay.
        "measured_node_share": _shares({n: float(v["tokens_processed"]) for n, v in wstats.items()}),
        "goal_rel_err": GOAL_REL_ERR,
        "goal_keys": list(goal_keys),
        "within_goal": within,
        "profile_s": round(profile_s, 2),
        "real_run_s": round(real_s, 2),
    }
    print(json.dumps(_finite(figures)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
