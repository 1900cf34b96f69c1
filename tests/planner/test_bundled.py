"""Bundled names resolve to parsed objects; paths work too; unknown names list the valid ones."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from planner import bundled
from planner.errors import InvalidInput, UnknownName


def test_bundled_names() -> None:
    assert {"cluster24", "3cluster24", "cluster10"} <= set(bundled.cluster_names())
    assert {"llama2-70b", "llama1-30b", "smollm2-135m"} <= set(bundled.model_names())
    assert {"llama2-70b", "llama1-30b"} <= set(bundled.profile_names())
    assert {"A100", "V100", "L4", "L4x2", "T4", "T4x2", "T4x4"} <= set(bundled.known_gpu_types())


def test_every_bundled_cluster_and_layout_loads() -> None:
    for name in bundled.cluster_names():
        c = bundled.cluster(name)
        assert c.name == name and len(c.nodes) > 0
    for model, cluster, name in bundled.layouts():
        placement = bundled.layout(name, cluster, model)
        assert placement.num_layers == bundled.model(model).num_layers
        assert placement.uncovered() == ()


def test_every_bundled_profile_set_loads_for_its_model() -> None:
    for name in bundled.profile_names():
        spec = bundled.model(name)
        ps = bundled.profiles(spec)
        assert ps.model_name == name and len(ps.types()) > 0
        for gpu in ps.types():
            p = ps.get(gpu)
            assert p.kv_capacity_for(p.max_layers) >= 0 and p.prompt.ms(1) >= 0 and p.vram_bytes > 0


def test_paths_work_like_names(tmp_path: Path) -> None:
    copy = tmp_path / "mine.ini"
    shutil.copy(bundled.CLUSTERS_DIR / "cluster10.ini", copy)
    from_path = bundled.cluster(str(copy))
    assert from_path.name == "mine"
    assert from_path.nodes == bundled.cluster("cluster10").nodes
    model_dir = tmp_path / "m"
    model_dir.mkdir()
    shutil.copy(bundled.MODELS_DIR / "smollm2-135m" / "config.json", model_dir / "config.json")
    assert bundled.model(str(model_dir)).num_layers == 30
    assert bundled.model(str(model_dir / "config.json")).name == "m"


def test_path_model_has_no_paper_overrides(tmp_path: Path) -> None:
    shutil.copy(bundled.MODELS_DIR / "llama2-70b" / "config.json", tmp_path / "config.json")
    spec = bundled.model(str(tmp_path))
    assert spec.layer_bytes_override is None
    assert bundled.model("llama2-70b").bytes_per_layer == 1_530_000_000


def test_unknown_names_list_valid_ones(tmp_path: Path) -> None:
    with pytest.raises(UnknownName, match="cluster24"):
        bundled.cluster("cluster99")
    with pytest.raises(UnknownName, match="llama2-70b"):
        bundled.model("gpt-5")
    with pytest.raises(UnknownName, match="llama1-30b"):
        bundled.profiles("smollm2-135m-nonexistent")
    with pytest.raises(UnknownName, match="ilp"):
        bundled.layout("magic", "cluster24", "llama2-70b")
    with pytest.raises(InvalidInput, match="file not found"):
        bundled.cluster(str(tmp_path / "missing.yaml"))
    with pytest.raises(InvalidInput, match="unknown cluster file type"):
        (tmp_path / "c.txt").write_text("x")
        bundled.cluster(str(tmp_path / "c.txt"))


def test_profiles_check_the_model() -> None:
    ps = bundled.profiles(bundled.model("llama1-30b"))
    assert ps.model_name == "llama1-30b" and ps.get("A100").max_layers == 18
    settings = bundled.helix_settings("llama2-70b")
    assert settings["num_layers"] == 80 and settings["normalized_perf_initial"]["A100"] == 80
    assert settings["typical_layers_default"]["T4"] == 3
    settings["num_layers"] = 1  # a copy: the bundled one is untouched
    assert bundled.helix_settings("llama2-70b")["num_layers"] == 80


def test_layout_accepts_objects() -> None:
    c, m = bundled.cluster("cluster24-a100"), bundled.model("llama2-70b")
    placement = bundled.layout("separate", c, m)
    ranges = [placement.get(f"n{i}") for i in range(4)]
    assert [(r.start, r.end) for r in ranges if r is not None] == [(0, 20), (20, 40), (40, 60), (60, 80)]
    assert placement.has_full_chain()


def test_layout_names_and_unknown_layouts() -> None:
    assert set(bundled.layout_names("cluster24", "llama2-70b")) == {
        "homogeneous",
        "ilp",
        "ilp-single",
        "petals",
        "swarm",
    }
    assert bundled.layout_path("ilp", "cluster24", "llama2-70b").name == "ilp_sol.ini"
    # A pair with layouts lists its own names; a pair without lists every bundled layout with its fleet.
    with pytest.raises(UnknownName) as err:
        bundled.layout_path("magic", "cluster24", "llama2-70b")
    assert err.value.valid == bundled.layout_names("cluster24", "llama2-70b") and err.value.field == "layout"
    assert "expected one of: homogeneous, ilp, ilp-single, petals, swarm" in str(err.value)
    with pytest.raises(UnknownName) as err:
        bundled.layout_path("ilp", "cluster10", "llama2-70b")
    assert "separate (llama1-30b, cluster24-a100)" in str(err.value)
    for sneaky in ("../ilp", "ilp/x"):
        with pytest.raises(UnknownName):
            bundled.layout_path(sneaky, "cluster24", "llama2-70b")
    with pytest.raises(UnknownName):
        bundled.layout_path("ilp", "../llama2-70b/cluster24", "llama2-70b")
