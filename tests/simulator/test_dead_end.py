"""The dead-end rule in a whole run: a full lane must not take the offers the other lane could serve."""

import pytest

from planner.errors import UnknownName
from simulator.run import SimConfig, simulate
from tests.simulator.fleets import profiles, toy_model, two_lanes

# Lane 1's second stage has room for a few queries only; everything else has plenty.
KV = {"a1": 2_000_000, "b1": 20_000, "a2": 2_000_000, "b2": 2_000_000}


def run(rule: str):
    cluster, plan = two_lanes()
    cfg = SimConfig(duration_s=120, warmup_s=20, kv_capacity=KV, dead_end=rule)
    return simulate(cluster, toy_model(), profiles(), plan, cfg)


def test_keeping_the_entry_charge_feeds_the_free_lane() -> None:
    paper, kept = run("rollback"), run("keep-entry")
    # Under the paper's rule every query IWRR sends into full lane 1 gives its charge back, so the next one
    # is sent there too and the free lane starves; keeping the charge sends the next one into lane 2.
    assert kept.admitted > 2 * paper.admitted
    assert kept.decode_tok_per_s > 2 * paper.decode_tok_per_s
    assert kept.finished > paper.finished


def test_the_rule_is_validated_and_kept_in_the_config() -> None:
    with pytest.raises(UnknownName, match="dead-end rule"):
        SimConfig(dead_end="retry")
    assert SimConfig().to_dict()["dead_end"] == "keep-entry"
