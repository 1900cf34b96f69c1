"""Fixtures shared by the planner tests."""

from __future__ import annotations

import pytest

from planner import bundled
from planner.throughput import typical_throughput


@pytest.fixture(scope="module")
def fleet70():
    """The paper's 24-node cluster serving LLaMA-2 70B, with its typical-batch throughput table."""
    cluster = bundled.cluster("cluster24")
    model = bundled.model("llama2-70b")
    profiles = bundled.profiles(model)
    table = typical_throughput(cluster, model, profiles, bundled.helix_settings(model))
    return cluster, model, profiles, table
