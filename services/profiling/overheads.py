"""What serving adds to the backend's compute, as the simulator's inputs can express it. Pure arithmetic on
planner types; the terms are measured by a probe of the live deployment (bench/fidelity.py):

- step factor of a node (its tables are multiplied by it): the worker's own step time for a lone decode
  (services.worker stats, `step_ms_p50` while one request at a time is served) over what its profile
  predicts for that step. It holds what the backend profile leaves out: the LM head and sampling on the last
  hop, activation (de)serialisation, the hand-off to the step thread, and how fast this machine is NOW
  compared with when it was profiled (on a shared CPU other tenants change that by 2x within minutes).
  A factor, not an added constant, because the load term scales every step alike.
- per-hop latency (s, on every link of a chain): a gRPC hop there and back, as the workers' own streams
  measure it (round trip minus the far side's service time). Links into the coordinator also carry its CPU
  time per iteration (turning a result into the next step and the streamed token). Delay that occupies no
  worker, which is exactly what a link latency is in the simulator.
- LM head on the last hop (add_head) and co-location of processes on a few CPU cores
  (colocation_slowdown): see those functions.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from planner.cluster import Cluster
from planner.profile import LatencyTable, ProfileSet


def lone_decode_ms(profiles: ProfileSet, gpu_type: str, layers: int) -> float:
    """The step time the simulator charges a node running one decode (it prices a lone decode at batch 2)."""
    return layers * profiles.get(gpu_type).decode.ms(2)


def scaled(table: LatencyTable, factor: float) -> LatencyTable:
    return LatencyTable(tuple((x, ms * factor) for x, ms in table.points))


def step_factor(measured_step_ms: float, profiles: ProfileSet, gpu_type: str, layers: int) -> float:
    """Measured lone-decode step over the profile's; 1.0 when the profile predicts nothing."""
    predicted = lone_decode_ms(profiles, gpu_type, layers)
    return measured_step_ms / predicted if predicted > 0 else 1.0


def scale_steps(profiles: ProfileSet, factors: Mapping[str, float]) -> ProfileSet:
    """Profiles with the tables of each listed GPU type multiplied by its factor; others unchanged."""
    by_gpu = dict(profiles.by_gpu)
    for gpu_type, f in factors.items():
        p = profiles.get(gpu_type)
        by_gpu[gpu_type] = dataclasses.replace(p, prompt=scaled(p.prompt, f), decode=scaled(p.decode, f))
    return ProfileSet(profiles.model_name, by_gpu)


def with_hop_latency(cluster: Cluster, latency_s: float) -> Cluster:
    """The same fleet with `latency_s` on every link (coordinator links included)."""
    links = tuple(dataclasses.replace(lk, latency_s=max(0.0, latency_s)) for lk in cluster.links)
    return dataclasses.replace(cluster, links=links)


def add_head(
    profiles: ProfileSet, gpu_type: str, layers: int, head_points: Mapping[int, float]
) -> ProfileSet:
    """The tables of the type holding the model's last layer plus its LM head: a decode step of b sequences
    samples b tokens (head(b)), a prompt step samples one per request (head(1)); spread over its k layers.
    Valid when that type is only used for last hops (one node per type, as in the local fleet): the
    simulator prices steps per GPU type, not per position in the chain."""
    head = LatencyTable(((0.0, 0.0), *sorted((float(b), ms) for b, ms in head_points.items())))
    p = profiles.get(gpu_type)
    decode = LatencyTable(tuple((x, ms + head.ms(x) / layers if x > 0 else ms) for x, ms in p.decode.points))
    one = head.ms(1) / layers
    prompt = LatencyTable(tuple((x, ms + one if x > 0 else ms) for x, ms in p.prompt.points))
    replaced = dataclasses.replace(p, prompt=prompt, decode=decode)
    return ProfileSet(profiles.model_name, {**profiles.by_gpu, gpu_type: replaced})


def colocation_slowdown(
    utilisation: Mapping[str, float], cores: float, *, background: float = 0.0
) -> dict[str, float]:
    """Workers sharing `cores` CPU cores (the local fleet: every worker on this machine): while n of them
    compute at once each runs at min(1, cores / n) of its lone speed (processor sharing). Given each node's
    busy share u_i (from a simulation), the mean slowdown node i sees while busy is E[max(1, n / cores)]
    with n = 1 + the others busy, taken independent, + `background` (the mean number of runnable threads
    of other tenants, measured). Enumerates the 2^(N-1) states: N is a handful here."""
    names = list(utilisation)
    out: dict[str, float] = {}
    for i in names:
        others = [min(1.0, max(0.0, utilisation[j])) for j in names if j != i]
        total = 0.0
        for mask in range(1 << len(others)):
            p = 1.0
            busy = 1.0
            for bit, u in enumerate(others):
                if mask >> bit & 1:
                    p *= u
                    busy += 1
                else:
                    p *= 1.0 - u
            total += p * max(1.0, (busy + background) / cores)
        out[i] = total
    return out
