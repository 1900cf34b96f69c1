"""Measured serving terms turned into simulator inputs. Pure arithmetic on planner types.

The simulator models what serving adds to a backend's compute itself (simulator.worker: the LM head on
the last hop, a throttle; simulator.host: processes sharing a machine's cores; simulator.coordinator: the
coordinator's CPU per iteration). Two terms remain inputs, measured by a probe of the live deployment with
one request at a time (bench/fidelity.py):

- the step factor of a node: its worker's own lone-decode step time (services.worker stats) over what its
  profile predicts for that step. It holds the per-step work the backend profile leaves out (activation
  (de)serialisation, the hand-off to the step thread, the throttle's timer) and how fast the machine is now
  compared with when it was profiled (a shared CPU moves by 2x within minutes). A factor on the tables
  rather than an added constant because the speed term scales every step alike;
- the per-hop latency: a gRPC hop there and back, as the workers' streams measure it (round trip minus the
  far side's service time): delay that occupies no worker, which is what a link latency is.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from planner.cluster import Cluster
from planner.profile import LatencyTable, ProfileSet


def lone_decode_ms(
    profiles: ProfileSet, gpu_type: str, layers: int, *, last: bool, speed: float = 1.0
) -> float:
    """The step the simulator charges a node running one decode: its layers (a table that measured bs=1
    is read there, else at bs=2 as the paper does), the LM head if it holds the last layer, stretched by
    its throttle."""
    p = profiles.get(gpu_type)
    lone = 1 if any(x == 1 for x, _ in p.decode.points) else 2
    ms = layers * p.decode.ms(lone)
    if last and p.lm_head is not None:
        ms += p.lm_head.ms(1)
    return ms / speed


def step_factor(measured_step_ms: float, predicted_step_ms: float) -> float:
    """Measured lone-decode step over the predicted one; 1.0 when nothing is predicted."""
    return measured_step_ms / predicted_step_ms if predicted_step_ms > 0 else 1.0


def scaled(table: LatencyTable, factor: float) -> LatencyTable:
    return LatencyTable(tuple((x, ms * factor) for x, ms in table.points))


def scale_steps(profiles: ProfileSet, factors: Mapping[str, float]) -> ProfileSet:
    """Profiles with every step cost of each listed GPU type (tables and LM head) times its factor."""
    by_gpu = dict(profiles.by_gpu)
    for gpu_type, f in factors.items():
        p = profiles.get(gpu_type)
        head = scaled(p.lm_head, f) if p.lm_head is not None else None
        by_gpu[gpu_type] = dataclasses.replace(
            p, prompt=scaled(p.prompt, f), decode=scaled(p.decode, f), lm_head=head
        )
    return ProfileSet(profiles.model_name, by_gpu)


def without_head(profiles: ProfileSet) -> ProfileSet:
    """The same profiles with no LM head cost: the per-layer tables alone, as the paper's profiles are."""
    return ProfileSet(
        profiles.model_name, {t: dataclasses.replace(p, lm_head=None) for t, p in profiles.by_gpu.items()}
    )


def with_hop_latency(cluster: Cluster, latency_s: float) -> Cluster:
    """The same fleet with `latency_s` on every link (coordinator links included)."""
    links = tuple(dataclasses.replace(lk, latency_s=max(0.0, latency_s)) for lk in cluster.links)
    return dataclasses.replace(cluster, links=links)
