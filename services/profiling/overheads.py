"""What serving adds to the backend's compute, as the simulator's inputs can express it. Pure arithmetic on
planner types; the terms are measured by a probe of the live deployment (bench/fidelity.py):

- step factor of a node (its tables are multiplied by it): the worker's own step time for a lone decode
  (services.worker stats, `step_ms_p50` while one request at a time is served) over what its profile
  predicts for that step. It holds what the backend profile leaves out: the LM head and sampling on the last
  hop, activation (de)serialisation, the hand-off to the step thread, and how fast this machine is NOW
  compared with when it was profiled (on a shared CPU other tenants change that by 2x within minutes).
  A factor, not an added constant, because the load term scales every step alike.
- per-hop latency (s, on every link of a chain, coordinator links included): the client-side time of a
  decode iteration minus the workers' step times, divided by the links it crosses (hops + 1). It holds gRPC,
  asyncio scheduling, the coordinator's step bookkeeping and the HTTP stream: delay that occupies no worker,
  which is exactly what a link latency is in the simulator.
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


def hop_latency_s(iteration_s: float, step_ms: Mapping[str, float], links: int) -> float:
    """(client-side iteration time - the workers' step times) / links crossed, never below zero."""
    return max(0.0, iteration_s - sum(step_ms.values()) / 1e3) / max(1, links)
