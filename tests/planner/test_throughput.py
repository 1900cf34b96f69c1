"""planner.throughput: the paper's typical-throughput fixed point, against the artifact's converged tables."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from planner import bundled
from planner.throughput import THROUGHPUT_SETTING_KEYS, peak_tok_per_s, typical_throughput

# The artifact's converged tables, copied into the repository (checksum in tests/data/reference).
REFERENCE = (
    Path(__file__).resolve().parents[1] / "data/reference/typical_throughput_24node_A100x4_L4x8_T4x12.json"
)


def _reference() -> dict:
    return json.loads(REFERENCE.read_text())


@pytest.mark.parametrize(("model_name", "key"), [("llama2-70b", "LLaMa70B"), ("llama1-30b", "LLaMa30B")])
def test_reproduces_reference_tables_for_every_type_and_k(model_name: str, key: str) -> None:
    ref = _reference()[key]
    cluster = bundled.cluster("cluster24")
    model = bundled.model(model_name)
    table = typical_throughput(cluster, model, bundled.profiles(model), bundled.helix_settings(model))
    checked = 0
    for gpu, rows in ref["per_gpu_per_layercount"].items():
        assert table.max_layers(gpu) == len(rows)
        for k, row in rows.items():
            want = row["typical_tp_tokens_per_s"]
            assert table.tp(gpu, int(k)) == pytest.approx(want, rel=5e-3)
            checked += 1
    for gpu, perf in ref["normalized_perf"].items():
        assert table.normalized_perf[gpu] == pytest.approx(perf, rel=5e-3)
    assert dict(table.typical_layers) == ref["typical_layers"]
    assert checked >= 20


def test_depends_on_the_fleet_not_only_the_gpu() -> None:
    model = bundled.model("llama2-70b")
    profiles = bundled.profiles(model)
    settings = bundled.helix_settings(model)
    full = typical_throughput(bundled.cluster("cluster24"), model, profiles, settings)
    only_a100 = typical_throughput(bundled.cluster("cluster24-a100"), model, profiles, settings)
    assert only_a100.types() == ("A100",)
    assert only_a100.tp("A100", 12) != pytest.approx(full.tp("A100", 12), rel=1e-3)


def test_rounds_matter_because_the_iteration_oscillates() -> None:
    model = bundled.model("llama2-70b")
    args = (bundled.cluster("cluster24"), model, bundled.profiles(model), bundled.helix_settings(model))
    ten, eleven = typical_throughput(*args), typical_throughput(*args, rounds=11)
    assert ten.normalized_perf["A100"] != pytest.approx(eleven.normalized_perf["A100"], rel=0.05)


def test_unknown_type_and_out_of_range_k_are_input_errors() -> None:
    from planner.errors import InvalidInput, UnknownName

    model = bundled.model("llama2-70b")
    table = typical_throughput(
        bundled.cluster("cluster24"), model, bundled.profiles(model), bundled.helix_settings(model)
    )
    with pytest.raises(UnknownName):
        table.tp("H100", 1)
    with pytest.raises(InvalidInput):
        table.tp("T4", 5)


def test_works_without_paper_settings() -> None:
    model = bundled.model("llama2-70b")
    table = typical_throughput(bundled.cluster("cluster24"), model, bundled.profiles(model), None)
    for gpu in table.types():
        row = [table.tp(gpu, k) for k in range(1, table.max_layers(gpu) + 1)]
        assert all(v > 0 for v in row)
        assert row[0] > row[-1]


def test_profiles_carry_their_settings_so_every_caller_gets_one_table() -> None:
    """A caller passing no settings (a hand-made plan, a live re-plan) gets the table `brl plan` gets:
    the profile set keeps the model-level entries of the file it was loaded from."""
    cluster = bundled.cluster("cluster24")
    model = bundled.model("llama2-70b")
    profiles = bundled.profiles(model)
    assert set(profiles.throughput_settings) == set(THROUGHPUT_SETTING_KEYS)
    given = typical_throughput(cluster, model, profiles, bundled.helix_settings(model))
    assert typical_throughput(cluster, model, profiles).tp_by_type == given.tp_by_type
    # An explicit empty mapping still means "profile-derived defaults", a different table.
    assert typical_throughput(cluster, model, profiles, {}).tp_by_type != given.tp_by_type


def test_peak_rate_is_never_below_the_typical_batch_rate() -> None:
    """tp is the rate of one particular batch mix, so the ceiling over every batch must cover it."""
    cluster = bundled.cluster("cluster24")
    model = bundled.model("llama2-70b")
    profiles = bundled.profiles(model)
    table = typical_throughput(cluster, model, profiles)
    for gpu in table.types():
        profile = profiles.get(gpu)
        for k in range(1, table.max_layers(gpu) + 1):
            assert peak_tok_per_s(profile, k) >= table.tp(gpu, k)
            assert peak_tok_per_s(profile, k, decode_only=True) <= peak_tok_per_s(profile, k)
