"""Routing policies and KV accounting shared by the simulator and the coordinator (pure).

policy = make_policy("maxflow", plan, cluster, rng=random.Random(0))
chain = policy.choose(RouteRequest("r1", input_len=700, expected_output_len=240), view)
"""

from planner.routing.base import (
    Chain,
    Hop,
    RouteRequest,
    RoutingPolicy,
    RoutingView,
    StaticView,
    chain_edges,
    chain_nodes,
    next_layers,
    successors,
)
from planner.routing.kv import OFFLINE_KV, ONLINE_KV, PAPER_EXPECTED_OUTPUT_LEN, KVBook, KVParams
from planner.routing.registry import make_policy, policy_names, policy_options, register
from planner.routing.reroute import reflow_without, replan_without, without_nodes

__all__ = [
    "OFFLINE_KV",
    "ONLINE_KV",
    "PAPER_EXPECTED_OUTPUT_LEN",
    "Chain",
    "Hop",
    "KVBook",
    "KVParams",
    "RouteRequest",
    "RoutingPolicy",
    "RoutingView",
    "StaticView",
    "chain_edges",
    "chain_nodes",
    "make_policy",
    "next_layers",
    "policy_names",
    "policy_options",
    "register",
    "reflow_without",
    "replan_without",
    "successors",
    "without_nodes",
]
