"""Measured serving terms turned into simulator inputs. Pure arithmetic on planner types.

The simulator models what serving adds to a backend's compute itself (simulator.worker: the LM head on
the last hop, a throttle; simulator.host: processes sharing a machine's cores; simulator.coordinator: the
coordinator's CPU per iteration). Two terms remain inputs, measured by a probe of the live deployment with
one request at a time (bench/fidelity.py):

- the per-step serving work of a node (CPU seconds a step costs besides the profile's compute: activation
  (de)serialisation, the hand-off to the step thread, forwarding): its worker's own lone-decode step time
  (services.worker stats) brought back to a core of its own and unthrottled, minus what the profile
  predicts. An added cost, not a factor on the tables: it does not grow with the batch;
- the per-hop latency: a gRPC hop there and back, as the workers' streams measure it (round trip minus the
  far side's service time): delay that occupies no worker, which is what a link latency is.
"""

from __future__ import annotations

import dataclasses

from planner.cluster import Cluster
from planner.profile import ProfileSet


def lone_decode_ms(
    profiles: ProfileSet, gpu_type: str, layers: int, *, last: bool, speed: float = 1.0
) -> float:
    """The step the simulator charges a node running one decode: its layers (a table that measured bs=1
    is read there, else at bs=2 as the paper does), the LM head if it holds the last layer, stretched by
    its throttle."""
    p = profiles.get(gpu_type)
    ms = layers * p.decode.ms(p.lone_decode_batch)
    if last and p.lm_head is not None:
        ms += p.lm_head.ms(1)
    return ms / speed


def step_overhead_s(
    measured_step_ms: float, compute_ms: float, *, speed: float = 1.0, share: float = 1.0
) -> float:
    """CPU seconds of a step beyond its compute. `measured_step_ms` is a lone step's wall time on a worker
    throttled to `speed` that had `share` of a core meanwhile (other runnable threads took the rest);
    `compute_ms` is what the profile predicts for that step (lone_decode_ms at speed 1). Never negative:
    a machine faster than at profiling time leaves no overhead to find, not a negative one."""
    return max(0.0, measured_step_ms * speed * share - compute_ms) / 1e3


def without_head(profiles: ProfileSet) -> ProfileSet:
    """The same profiles with no LM head cost: the per-layer tables alone, as the paper's profiles are."""
    return ProfileSet(
        profiles.model_name, {t: dataclasses.replace(p, lm_head=None) for t, p in profiles.by_gpu.items()}
    )


def with_hop_latency(cluster: Cluster, latency_s: float) -> Cluster:
    """The same fleet with `latency_s` on every link (coordinator links included)."""
    links = tuple(dataclasses.replace(lk, latency_s=max(0.0, latency_s)) for lk in cluster.links)
    return dataclasses.replace(cluster, links=links)
