import pytest

from planner.errors import UnknownName
from planner.routing import make_policy, policy_names, policy_options
from planner.routing.maxflow import MaxFlowPolicy
from tests.planner.routing.fleets import diamond


def test_options_carry_the_dead_end_rule_to_max_flow_routing() -> None:
    plan, cluster = diamond()
    policy = make_policy("maxflow", plan, cluster, **policy_options("maxflow", dead_end="keep-path"))
    assert isinstance(policy, MaxFlowPolicy) and policy.dead_end == "keep-path"
    with pytest.raises(UnknownName):
        make_policy("maxflow", plan, cluster, **policy_options("maxflow", dead_end="restart"))


@pytest.mark.parametrize("name", sorted(set(policy_names()) - {"maxflow"}))
def test_baselines_get_no_option_they_do_not_take(name: str) -> None:
    plan, cluster = diamond()
    assert policy_options(name, dead_end="keep-path") == {}
    assert make_policy(name, plan, cluster, **policy_options(name, dead_end="keep-path")).name == name
