"""The coordinator's plan file: the fleet it routes over is the one the plan embeds (no cluster file or
bundled name needed); a named cluster still wins, and older plans without a fleet keep the live graph."""

from __future__ import annotations

from pathlib import Path

from planner import bundled
from planner.cluster import Cluster, Link
from planner.flow import plan_from_placement
from planner.formats.plan_json import plan_from_dict, plan_to_dict, save_plan
from planner.placement import LayerRange, Placement
from services.coordinator.main import build
from services.coordinator.settings import CoordinatorSettings
from tests.services.coordinator.fakeserver import FakeTokenizer

FLEET_YAML = """\
coordinator: {region: lab}
node_groups:
  - {gpu_type: cpu-fast, count: 1, region: lab, names: [big]}
  - {gpu_type: cpu-slow, count: 1, region: lab, names: [small]}
links:
  intra_region: {bandwidth_bytes_per_s: 5.0e8, latency_ms: 0.25}
"""


def _plan_file(tmp_path: Path, *, embed: bool = True) -> Path:
    fleet_file = tmp_path / "labfleet.yaml"
    fleet_file.write_text(FLEET_YAML)
    cluster, spec = bundled.cluster(str(fleet_file)), bundled.model("smollm2-135m")
    fleet_file.unlink()
    placement = Placement(30, {"big": LayerRange(0, 30), "small": LayerRange(0, 12)})
    plan = plan_from_placement(cluster, spec, bundled.profiles(spec), placement, method="hand")
    if not embed:
        data = plan_to_dict(plan)
        for key in ("cluster", "model", "profiles"):
            del data[key]
        plan = plan_from_dict(data)
    path = tmp_path / "plan.json"
    save_plan(plan, path)
    return path


def _base_cluster(tmp_path: Path, **settings: object) -> object:
    coord = build(
        CoordinatorSettings(http_port=0, grpc_port=0, log_dir=tmp_path, **settings),  # type: ignore[arg-type]
        tokenizer=FakeTokenizer(),  # type: ignore[arg-type]
    )
    try:
        return coord.fleet.base_cluster
    finally:
        coord.engine.events.close()


def test_the_plan_file_brings_its_fleet(tmp_path: Path) -> None:
    base = _base_cluster(tmp_path, plan=_plan_file(tmp_path))
    assert isinstance(base, Cluster) and base.name == "labfleet"
    assert base.node_names == ("big", "small")
    assert base.link("big", "small") == Link("big", "small", 5.0e8, 0.25e-3)


def test_a_named_cluster_wins_and_old_plans_keep_the_live_graph(tmp_path: Path) -> None:
    named = _base_cluster(tmp_path, plan=_plan_file(tmp_path), cluster="local-cpu")
    assert isinstance(named, Cluster) and named.name == "local-cpu"
    assert _base_cluster(tmp_path, plan=_plan_file(tmp_path, embed=False)) is None
