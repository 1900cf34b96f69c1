"""Plan JSON round-trips; bad plan files name the field."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

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


def assert_load_fails(f: Path, data: dict[str, Any], field: str, expected: str) -> None:
    """`data` written to `f` is refused on load, naming the file and the field."""
    f.write_text(json.dumps(data))
    with pytest.raises(InvalidInput) as err:
        load_plan(f)
    assert err.value.source == str(f)
    assert err.value.field == field
    assert expected in str(err.value)


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
    assert_load_fails(tmp_path / "plan.json", data, field, expected)


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


def _planned(cluster_name: str = "cluster24", model_name: str = "llama2-70b") -> Plan:
    from planner.flow import plan_from_placement

    cluster, spec = bundled.cluster(cluster_name), bundled.model(model_name)
    placement = bundled.layout("ilp", cluster, spec)
    settings = bundled.helix_settings(spec)
    return plan_from_placement(
        cluster, spec, bundled.profiles(spec), placement, method="ilp", settings=settings, partial=False
    )


def test_a_plan_embeds_its_fleet_and_model(tmp_path: Path) -> None:
    plan = _planned()
    assert plan.cluster == bundled.cluster("cluster24") and plan.profiles_name == "llama2-70b"
    save_plan(plan, tmp_path / "plan.json")
    data = json.loads((tmp_path / "plan.json").read_text())
    assert data["profiles"] == "llama2-70b" and data["model"]["num_layers"] == 80
    assert len(data["cluster"]["nodes"]) == 24 and len(data["cluster"]["links"]) == 24 * 23 + 48
    back = load_plan(tmp_path / "plan.json")
    assert back.cluster is not None and back.model is not None and plan.cluster is not None
    assert back.cluster.nodes == plan.cluster.nodes and back.cluster.links == plan.cluster.links
    assert back.cluster.name == "cluster24" and back.model == bundled.model("llama2-70b")
    assert back == plan
    assert back.objective_tok_per_s == pytest.approx(1289.56, abs=0.01)


def test_a_plan_without_a_fleet_still_loads() -> None:
    """Plans written before the fleet was embedded: names only, resolved as bundled names by their users."""
    data = plan_to_dict(_planned())
    for key in ("cluster", "model", "profiles"):
        del data[key]
    old = plan_from_dict(data, source="old.json")
    assert (old.cluster, old.model, old.profiles_name) == (None, None, None)
    assert (old.cluster_name, old.model_name) == ("cluster24", "llama2-70b")


def _without_n0(cluster: dict[str, Any]) -> dict[str, Any]:
    """The same fleet with node n0 and its links gone: a fleet the plan was not made for."""
    nodes = [n for n in cluster["nodes"] if n["name"] != "n0"]
    links = [lk for lk in cluster["links"] if "n0" not in (lk["src"], lk["dst"])]
    return {**cluster, "nodes": nodes, "links": links}


@pytest.mark.parametrize(
    ("mutate", "field", "expected"),
    [
        (
            lambda d: d.update({"cluster": _without_n0(d["cluster"])}),
            "placement.n0",
            "cluster 'cluster24' lacks",
        ),
        (
            lambda d: d["edge_flows"].update({"n0->n99": 1.0}),
            "edge_flows.n0->n99",
            "node 'n99', which the plan's cluster",
        ),
        (lambda d: d["model"].update({"num_layers": 40}), "model.num_layers", "its model has 40"),
        (lambda d: d["cluster"]["links"][3].pop("latency_s"), "cluster.links.3.latency_s", "Field required"),
        (lambda d: d.update({"cluster": "cluster24"}), "cluster", "valid dictionary"),
    ],
    ids=["placed-node-missing", "flow-node-missing", "model-layers", "link-field", "cluster-not-object"],
)
def test_an_embedded_fleet_that_disagrees_names_file_and_field(
    tmp_path: Path, mutate: object, field: str, expected: str
) -> None:
    data = plan_to_dict(_planned())
    assert "n0" in data["placement"]
    mutate(data)  # type: ignore[operator]
    assert_load_fails(tmp_path / "plan.json", data, field, expected)
