"""The one registry of routing policies, keyed by the names the CLI, config and Helm values use."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any, TypeVar

from planner.cluster import Cluster
from planner.errors import UnknownName
from planner.plan import Plan
from planner.routing.base import RoutingPolicy

_POLICIES: dict[str, type[RoutingPolicy]] = {}
P = TypeVar("P", bound=type[RoutingPolicy])


def register(name: str) -> Callable[[P], P]:
    def deco(cls: P) -> P:
        cls.name = name
        _POLICIES[name] = cls
        return cls

    return deco


def policy_names() -> tuple[str, ...]:
    _load_builtin()
    return tuple(sorted(_POLICIES))


def make_policy(
    name: str, plan: Plan, cluster: Cluster, *, rng: random.Random | None = None, **kwargs: Any
) -> RoutingPolicy:
    """Build the policy `name` ("maxflow", "swarm", "random", "shortest-queue") for `plan` on `cluster`.
    Extra keyword arguments go to the policy (e.g. prompt_max_tokens, min_share)."""
    _load_builtin()
    cls = _POLICIES.get(name)
    if cls is None:
        raise UnknownName("routing policy", name, list(_POLICIES))
    return cls(plan, cluster, rng=rng if rng is not None else random.Random(0), **kwargs)


def policy_options(name: str, *, dead_end: str) -> dict[str, Any]:
    """make_policy's keywords for `name` from the settings every caller carries: the dead-end rule is
    max-flow routing's alone (the baselines route without flows and take no such option)."""
    return {"dead_end": dead_end} if name == "maxflow" else {}


def _load_builtin() -> None:
    # Imported here so each policy module can import `register` without a cycle.
    from planner.routing import maxflow, random_policy, shortest_queue, swarm  # noqa: F401
