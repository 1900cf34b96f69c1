"""The simulated links of a plan: each hop's bandwidth as the paper's schedulers set it."""

from __future__ import annotations

import math
from collections.abc import Mapping

from planner.cluster import SINK, SOURCE, Cluster
from planner.model import ModelSpec
from planner.plan import Plan
from simulator.link import SimLink


def _nic(cluster: Cluster, node: str, inbound: bool) -> float:
    if node in (SOURCE, SINK):
        return cluster.coordinator_nic_bytes_per_s
    n = cluster.node(node)
    return n.nic_in_bytes_per_s if inbound else n.nic_out_bytes_per_s


def build_links(
    plan: Plan, cluster: Cluster, model: ModelSpec, succ: Mapping[str, tuple[str, ...]], *, by_flow: bool
) -> dict[tuple[str, str], SimLink]:
    """Per-hop bandwidth as the paper's schedulers set it. Max-flow (`by_flow`): min(link, out-NIC x this
    link's share of the sender's planned outflow, in-NIC x its share of the receiver's inflow), floored.
    Baselines: min(link, out-NIC / number of outgoing links)."""
    flows = plan.edge_flows
    out_tot: dict[str, float] = {}
    in_tot: dict[str, float] = {}
    for (u, v), f in flows.items():
        out_tot[u] = out_tot.get(u, 0.0) + f
        in_tot[v] = in_tot.get(v, 0.0) + f
    token = model.token_bytes
    act = model.activation_bytes_per_token + token
    links: dict[tuple[str, str], SimLink] = {}
    for u, vs in succ.items():
        wanted = set(vs)
        # The sender's own links, in the same (link) order as `vs`: no (src, dst) index of the whole
        # mesh is built (a million entries at a thousand GPUs).
        for lk in cluster.out_links(u):
            v = lk.dst
            if v not in wanted:
                continue
            bw = lk.bandwidth_bytes_per_s
            f = flows.get((u, v), 0.0)
            if by_flow and f > 0:
                bw = min(bw, _nic(cluster, u, False) * f / out_tot[u], _nic(cluster, v, True) * f / in_tot[v])
                bw = max(1.0, math.floor(bw))
            elif not by_flow:
                bw = min(bw, _nic(cluster, u, False) / max(1, len(vs)))
            per_token = token if u == SOURCE or v == SINK else act
            links[(u, v)] = SimLink(u, v, bw, lk.latency_s, per_token)
    return links
