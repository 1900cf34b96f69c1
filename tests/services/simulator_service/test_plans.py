"""Where a simulation's fleet comes from: an inline plan's embedded fleet and model (rebuilt with the same
loaders as a request's), bundled names for older plans; and plans of the planner service embed the fleet.
Real planner and simulator services on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from planner import bundled
from planner.errors import InvalidInput
from planner.flow import plan_from_placement
from planner.formats.fleet_json import model_to_plain
from planner.formats.plan_json import load_plan, plan_from_dict, plan_to_dict, save_plan
from planner.placement import LayerRange, Placement
from planner.plan import Plan
from services.planner_service.inputs import load_inputs
from services.planner_service.main import settings_from as planner_settings
from services.planner_service.main import start as start_planner
from services.simulator_service.main import settings_from, start
from services.simulator_service.plans import hf_config_of, plan_fleet
from tests.services.jobs.client import API_KEY, running, wait_job

SHORT = {"mode": "offline", "duration_s": 20, "warmup_s": 5, "seed": 1, "plots": False}
FLEET_YAML = """\
coordinator: {region: lab}
node_groups:
  - {gpu_type: cpu-fast, count: 1, region: lab, names: [big]}
  - {gpu_type: cpu-slow, count: 2, region: lab, name_prefix: small-}
links:
  intra_region: {bandwidth_bytes_per_s: 5.0e8, latency_ms: 0.25}
  overrides:
    - {nodes: [small-0, small-1], bandwidth_bytes_per_s: 1.0e8, latency_ms: 3, directed: true}
"""


def _plan_of_a_deleted_file(tmp_path: Path) -> Plan:
    """`brl plan` on a fleet file that is gone by the time the plan is used."""
    fleet_file = tmp_path / "labfleet.yaml"
    fleet_file.write_text(FLEET_YAML)
    cluster, spec = bundled.cluster(str(fleet_file)), bundled.model("smollm2-135m")
    fleet_file.unlink()
    placement = Placement(
        30, {"big": LayerRange(0, 30), "small-0": LayerRange(0, 12), "small-1": LayerRange(12, 24)}
    )
    plan = plan_from_placement(cluster, spec, bundled.profiles(spec), placement, method="hand")
    assert plan.objective_tok_per_s > 0
    return plan


def test_an_inline_plan_brings_its_fleet(tmp_path: Path) -> None:
    plan = _plan_of_a_deleted_file(tmp_path)
    fleet = plan_fleet(plan)
    assert set(fleet) == {"cluster_spec", "model"} and fleet["model"] == "smollm2-135m"
    inputs = load_inputs(fleet)
    assert plan.cluster is not None
    assert inputs.cluster.nodes == plan.cluster.nodes and inputs.cluster.links == plan.cluster.links
    assert inputs.cluster.name == "labfleet" and inputs.model == plan.model


def test_an_old_plan_names_bundled_ones() -> None:
    spec = bundled.model("llama2-70b")
    old = Plan("cluster24", "llama2-70b", "ilp", bundled.layout("ilp", "cluster24", spec))
    assert plan_fleet(old) == {"cluster": "cluster24", "model": "llama2-70b"}


def test_a_model_that_is_not_bundled_travels_as_its_sizes(tmp_path: Path) -> None:
    plan = _plan_of_a_deleted_file(tmp_path)
    assert plan.model is not None
    # What a HF config.json outside the bundle gives: the sizes, none of the paper's byte overrides.
    custom = replace(
        plan.model, name="my-smol", token_bytes=2, layer_bytes_override=None, activation_bytes_override=None
    )
    data = {**plan_to_dict(plan), "model_name": "my-smol", "model": model_to_plain(custom)}
    moved = plan_from_dict(data)
    assert moved.model == custom and moved.profiles_name == "smollm2-135m"
    fleet = plan_fleet(moved)
    assert fleet["hf_config"] == hf_config_of(custom) and fleet["profiles"] == "smollm2-135m"
    assert load_inputs(fleet).model == custom


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[httpx.Client, httpx.Client]]:
    root = tmp_path_factory.mktemp("plans")
    planner = planner_settings(
        {"db_path": str(root / "p.db"), "port": 0, "api_key": API_KEY, "max_workers": 1}
    )
    with running(lambda: start_planner(planner)) as (_, plans):
        simulator = settings_from(
            {
                "db_path": str(root / "s.db"),
                "port": 0,
                "grpc_port": 0,
                "api_key": API_KEY,
                "max_workers": 1,
                "planner_db": str(root / "p.db"),
            }
        )
        with running(lambda: start(simulator)) as (_, sims):
            yield plans, sims


def test_an_inline_plan_of_a_deleted_fleet_file_simulates(
    tmp_path: Path, services: tuple[httpx.Client, httpx.Client]
) -> None:
    _, sims = services
    path = tmp_path / "plan.json"
    save_plan(_plan_of_a_deleted_file(tmp_path), path)
    body = {"plan": plan_to_dict(load_plan(path)), **SHORT}
    response = sims.post("/v1/simulations", json=body)
    assert response.status_code == 202, response.text
    job = wait_job(sims, response.json()["url"])
    assert job["status"] == "succeeded", job["error"]
    assert job["result"]["summary"]["admitted"] > 0
    # The stored request is self-contained: the embedded fleet was copied in as a cluster spec.
    assert job["request"]["cluster_spec"]["name"] == "labfleet" and "cluster" not in job["request"]


def test_an_inline_plan_whose_fleet_lacks_a_placed_node_is_a_422(
    tmp_path: Path, services: tuple[httpx.Client, httpx.Client]
) -> None:
    _, sims = services
    data = plan_to_dict(_plan_of_a_deleted_file(tmp_path))
    data["cluster"]["nodes"] = [n for n in data["cluster"]["nodes"] if n["name"] != "small-1"]
    data["cluster"]["links"] = [
        lk for lk in data["cluster"]["links"] if "small-1" not in (lk["src"], lk["dst"])
    ]
    response = sims.post("/v1/simulations", json={"plan": data, **SHORT})
    assert 400 <= response.status_code < 500, response.text
    assert "small-1" in response.text and "placement.small-1" in response.text


def test_planner_service_plans_embed_the_fleet(services: tuple[httpx.Client, httpx.Client]) -> None:
    plans, sims = services
    body: dict[str, Any] = {"cluster_text": FLEET_YAML, "model": "smollm2-135m", "method": "petals"}
    job = wait_job(plans, plans.post("/v1/plans", json={**body, "time_limit_s": 5}).json()["url"])
    assert job["status"] == "succeeded", job["error"]
    bare = plans.get(f"/v1/plans/{job['id']}/plan")
    assert bare.status_code == 200
    plan = plan_from_dict(bare.json(), source="GET /v1/plans/{id}/plan")
    assert plan.cluster is not None and plan.model == bundled.model("smollm2-135m")
    assert [n.name for n in plan.cluster.nodes] == ["big", "small-0", "small-1"]
    assert plan.cluster.link("small-0", "small-1").bandwidth_bytes_per_s == 1.0e8  # type: ignore[union-attr]
    assert plan.cluster.link("small-1", "small-0").bandwidth_bytes_per_s == 5.0e8  # type: ignore[union-attr]
    # The same plan, by id and inline, simulates to the same result on the same seed.
    by_id = wait_job(sims, sims.post("/v1/simulations", json={"plan_id": job["id"], **SHORT}).json()["url"])
    inline = wait_job(sims, sims.post("/v1/simulations", json={"plan": bare.json(), **SHORT}).json()["url"])
    assert by_id["status"] == inline["status"] == "succeeded"
    assert by_id["result"]["summary"] == inline["result"]["summary"]


def test_a_plan_the_embedded_fleet_cannot_write_as_yaml_names_the_field() -> None:
    from planner.cluster import SINK, SOURCE, Cluster, Link, Node

    odd = Cluster((Node("a", "cpu-fast", "lab"),), (Link(SOURCE, SINK, 1e9, 0.0),), name="odd")
    plan = Plan("odd", "smollm2-135m", "hand", Placement(30, {"a": LayerRange(0, 30)}), cluster=odd)
    with pytest.raises(InvalidInput) as err:
        plan_fleet(plan)
    assert err.value.field == "plan.cluster"


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda d: d["cluster"]["nodes"][1].update({"gpu_type": "H999"}), "plan.cluster.nodes.1.gpu_type"),
        (lambda d: d["cluster"]["nodes"][2].update({"region": "moon base"}), "plan.cluster.nodes.2.region"),
        (lambda d: d["cluster"].update({"coordinator_region": "é"}), "plan.cluster.coordinator_region"),
    ],
    ids=["unknown-gpu-type", "bad-region", "bad-coordinator-region"],
)
def test_an_embedded_fleet_the_loaders_refuse_names_the_plan_field(
    tmp_path: Path, services: tuple[httpx.Client, httpx.Client], mutate: Any, field: str
) -> None:
    _, sims = services
    data = plan_to_dict(_plan_of_a_deleted_file(tmp_path))
    mutate(data)
    response = sims.post("/v1/simulations", json={"plan": data, **SHORT})
    assert 400 <= response.status_code < 500, response.text
    assert field in response.text
