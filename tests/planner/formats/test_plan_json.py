"""Plan JSON round-trips; bad plan files name the field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from planner import bundled
from planner.errors import InvalidInput
from planner.formats.plan_json import load_plan, plan_from_dict, plan_to_dict, save_plan
from planner.plan import Plan


def _plan() -> Plan:
    placement = bundled.layout("ilp", "cluster24", "llama2-70b")
    flows = {("source", "n15"): 120.5, ("n15", "n14"): 60.25, ("n5", "sink"): 33.0}
    return Plan(
        "cluster24",
        "llama2-70b",
        "ilp",
        placement,
        flows,
        1289.56,
        2803.86,
        solver_stats={"gap": 0.01, "nodes": 12, "best": float("inf")},
        provenance={"seed": 0, "inputs": ("cluster24", "llama2-70b")},
        metrics={"decode_tok_per_s": 248.3},
    )


def test_round_trip(tmp_path: Path) -> None:
    plan = _plan()
    save_plan(plan, tmp_path / "plan.json")
    back = load_plan(tmp_path / "plan.json")
    assert back.placement == plan.placement
    assert back.edge_flows == plan.edge_flows
    assert (back.objective_tok_per_s, back.bound_tok_per_s, back.method) == (1289.56, 2803.86, "ilp")
    # non-finite numbers become null; tuples become lists (strict JSON)
    assert back.solver_stats["best"] is None and back.provenance["inputs"] == ["cluster24", "llama2-70b"]
    assert json.loads((tmp_path / "plan.json").read_text())["edge_flows"]["n15->n14"] == 60.25
    assert plan_from_dict(plan_to_dict(back)) == back


@pytest.mark.parametrize(
    ("mutate", "field", "expected"),
    [
        (lambda d: d.pop("placement"), "placement", "Field required"),
        (lambda d: d["edge_flows"].update({"n1n2": 3.0}), "edge_flows.n1n2", "u->v"),
        (lambda d: d["placement"].update({"n0": [70, 90]}), "placement.n0", "out of bounds"),
        (lambda d: d["placement"].update({"n0": [5, 5]}), "placement.n0", "empty"),
        (lambda d: d.update({"num_layers": "eighty"}), "num_layers", "integer"),
        (lambda d: d["edge_flows"].update({"a->b": -1.0}), "edge_flows.a->b", ">= 0"),
        (lambda d: d.update({"format": "other/9"}), "format", "brl-plan/1"),
        (lambda d: d.update({"objectve": 1.0}), "objectve", "Extra inputs"),
    ],
    ids=[
        "missing-placement",
        "bad-edge-key",
        "range-out-of-bounds",
        "empty-range",
        "non-numeric",
        "negative-flow",
        "wrong-format",
        "typo-key",
    ],
)
def test_malformed_plan(tmp_path: Path, mutate: object, field: str, expected: str) -> None:
    data = plan_to_dict(_plan())
    mutate(data)  # type: ignore[operator]
    f = tmp_path / "plan.json"
    f.write_text(json.dumps(data))
    with pytest.raises(InvalidInput) as err:
        load_plan(f)
    assert err.value.source == str(f)
    assert err.value.field == field
    assert expected in str(err.value)


@pytest.mark.parametrize("text", ["", '{"cluster_name": ', "[1, 2]"])
def test_not_a_plan(tmp_path: Path, text: str) -> None:
    f = tmp_path / "plan.json"
    f.write_text(text)
    with pytest.raises(InvalidInput) as err:
        load_plan(f)
    assert err.value.source == str(f)


def test_save_plan_creates_missing_folders(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from planner.formats.plan_json import load_plan, save_plan
    from planner.placement import LayerRange, Placement
    from planner.plan import Plan

    plan = Plan("c", "m", "petals", Placement(4, {"n0": LayerRange(0, 4)}), {("source", "n0"): 1.0}, 1.0)
    out = tmp_path / "a" / "b" / "plan.json"
    save_plan(plan, out)
    assert load_plan(out) == plan
