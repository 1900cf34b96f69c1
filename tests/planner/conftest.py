"""Fixtures shared by the planner tests."""

from __future__ import annotations

import pytest

from planner import bundled
from planner.throughput import typical_throughput


def bundled_fleet(cluster_name: str, model_name: str = "llama2-70b"):
    """A bundled cluster serving a bundled model: (cluster, model, profiles, typical-batch throughput table)."""
    cluster = bundled.cluster(cluster_name)
    model = bundled.model(model_name)
    profiles = bundled.profiles(model)
    table = typical_throughput(cluster, model, profiles, bundled.helix_settings(model))
    return cluster, model, profiles, table


@pytest.fixture(scope="module")
def fleet70():
    """The paper's 24-node cluster serving LLaMA-2 70B, with its typical-batch throughput table."""
    return bundled_fleet("cluster24")
