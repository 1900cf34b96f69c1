"""Profile CSVs and settings JSON → ProfileSet; malformed ones name the file and the line or field."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from planner import bundled
from planner.errors import InvalidInput, UnknownName
from planner.formats.profiles import (
    load_helix_settings_json,
    load_latency_csv,
    load_profile_dir,
    profiles_from_settings,
    save_latency_csv,
)

# The artifact's combined settings file, copied into the repository (checksum in tests/data/reference).
PAPER_SETTINGS = Path(__file__).resolve().parents[2] / "data" / "reference" / "model_on_machine_settings.json"


def test_csv_round_trip(tmp_path: Path) -> None:
    table = load_latency_csv(bundled.PROFILES_DIR / "llama2-70b" / "t4" / "prompt_bs2time.csv")
    assert table.points[0] == (0.0, 0.0)
    save_latency_csv(table, tmp_path / "t.csv")
    assert load_latency_csv(tmp_path / "t.csv") == table


def _mini_settings(**gpu: object) -> dict[str, object]:
    entry: dict[str, object] = {
        "max_num_layers": 2,
        "kv_cache_capacity_token_layers": {"1": 1000, "2": 800},
        "prompt_max_requests": 2,
        "decode_max_tokens": {"1": 64, "2": 32},
        "profile_dir": "cpu",
        "vram_bytes": 8_000_000_000,
    }
    entry.update(gpu)
    return {"model": "tiny", "num_layers": 4, "gpus": {"cpu": entry}}


def _mini_dir(tmp_path: Path, settings: dict[str, object]) -> Path:
    folder = tmp_path / "tiny"
    (folder / "cpu").mkdir(parents=True)
    (folder / "cpu" / "prompt_bs2time.csv").write_text("0,0\n100,5\n200,9\n")
    (folder / "cpu" / "decode_bs2time.csv").write_text("0,0\n8,1.5\n")
    (folder / "settings.json").write_text(json.dumps(settings))
    return folder


def test_profile_dir_with_a_cpu_type(tmp_path: Path) -> None:
    ps = load_profile_dir(_mini_dir(tmp_path, _mini_settings()))
    cpu = ps.get("cpu")
    assert ps.model_name == "tiny"
    assert cpu.vram_bytes == 8_000_000_000 and cpu.max_layers == 2
    assert cpu.kv_capacity_for(2) == 800 and cpu.decode_max_for(1) == 64
    assert cpu.prompt_max_tokens == 4096  # 2048 per request, as the paper
    assert cpu.prompt.ms(150) == pytest.approx(7.0)


def test_a_measured_lm_head_loads_as_a_table_from_zero(tmp_path: Path) -> None:
    ps = load_profile_dir(_mini_dir(tmp_path, _mini_settings(lm_head_ms=[[4, 10.0], [1, 4.0]])))
    head = ps.get("cpu").lm_head
    assert head is not None and head.points == ((0.0, 0.0), (1.0, 4.0), (4.0, 10.0))
    assert head.ms(2) == pytest.approx(6.0)


def test_paper_settings_json_agrees_with_bundled() -> None:
    entry = load_helix_settings_json(PAPER_SETTINGS, "llama2_70b")
    # The artifact's CSVs sit at profiles/llama2_70b/<gpu>/; the bundled copies are byte-identical
    # (tests/test_reference_data.py), so the paper's entry is pointed at them.
    for gpu in entry["gpus"].values():
        gpu["profile_dir"] = gpu["profile_dir"].removeprefix("profiles/llama2_70b/")
    ps = profiles_from_settings(
        entry,
        bundled.PROFILES_DIR / "llama2-70b",
        model_name="llama2-70b",
        machine_profiles=bundled.machine_profiles(),
    )
    mine = bundled.profiles("llama2-70b")
    assert set(ps.types()) == set(mine.types())
    for gpu in ps.types():
        a, b = ps.get(gpu), mine.get(gpu)
        assert (a.prompt, a.decode, a.kv_capacity, a.max_layers, a.vram_bytes, a.decode_max_tokens) == (
            b.prompt,
            b.decode,
            b.kv_capacity,
            b.max_layers,
            b.vram_bytes,
            b.decode_max_tokens,
        )
    with pytest.raises(UnknownName, match="llama2_70b"):
        load_helix_settings_json(PAPER_SETTINGS, "gpt4")


@pytest.mark.parametrize(
    ("text", "line", "expected"),
    [
        ("0,0\n100,5,7\n", "line 2", "2 comma-separated"),
        ("0,0\n100,fast\n", "line 2", "expected numbers"),
        ("0,0\n100,5\n50,6\n", "line 3", "must increase"),
        ("0,0\n100,-5\n", "line 2", "non-negative"),
        ("", None, "empty"),
        ("0,0\n", None, "at least 2 rows"),
    ],
    ids=["three-cells", "non-numeric", "decreasing", "negative", "empty", "one-row"],
)
def test_malformed_csv(tmp_path: Path, text: str, line: str | None, expected: str) -> None:
    f = tmp_path / "prompt_bs2time.csv"
    f.write_text(text)
    with pytest.raises(InvalidInput) as err:
        load_latency_csv(f)
    assert err.value.source == str(f)
    assert expected in str(err.value)
    assert err.value.field == line


@pytest.mark.parametrize(
    ("change", "field", "expected"),
    [
        ({"kv_cache_capacity_token_layers": {"1": 1000}}, "gpus.cpu.kv_cache_capacity_token_layers", "k=2"),
        ({"max_num_layers": 0}, "gpus.cpu.max_num_layers", "greater than or equal to 1"),
        ({"vram_bytes": None}, "gpus.cpu.vram_bytes", "no VRAM size"),
        ({"decode_max_tokens": {"1": "many", "2": 3}}, "gpus.cpu.decode_max_tokens.1", "integer"),
        ({"profile_dir": "missing"}, None, "file not found"),
        ({"lm_head_ms": [[0, 1.0], [4, 2.0]]}, "gpus.cpu.lm_head_ms", "sampled sequences must be >= 1"),
        ({"lm_head_ms": [[1, 1.0], [1, 2.0]]}, "gpus.cpu.lm_head_ms", "strictly increasing"),
        ({"lm_head_ms": [[1, "fast"]]}, "gpus.cpu.lm_head_ms.0.1", "number"),
    ],
    ids=[
        "kv-missing-k",
        "zero-layers",
        "no-vram",
        "non-numeric-json",
        "missing-csv",
        "head-zero",
        "head-twice",
        "head-text",
    ],
)
def test_malformed_settings(
    tmp_path: Path, change: dict[str, object], field: str | None, expected: str
) -> None:
    folder = _mini_dir(tmp_path, _mini_settings(**change))
    with pytest.raises(InvalidInput) as err:
        load_profile_dir(folder)
    assert expected in str(err.value)
    if field is not None:
        assert err.value.field == field
        assert err.value.source == str(folder / "settings.json")


def test_settings_not_json(tmp_path: Path) -> None:
    folder = _mini_dir(tmp_path, _mini_settings())
    (folder / "settings.json").write_text("{not json")
    with pytest.raises(InvalidInput, match="not valid JSON") as err:
        load_profile_dir(folder)
    assert err.value.field == "line 1"


def test_bundled_profiles_copy_is_complete(tmp_path: Path) -> None:
    copy = tmp_path / "llama1-30b"
    shutil.copytree(bundled.PROFILES_DIR / "llama1-30b", copy)
    ps = load_profile_dir(copy, machine_profiles=bundled.machine_profiles())
    assert ps.get("T4x4").max_layers == 30 and ps.get("A100").max_layers == 18
    assert ps.get("A100").decode_max_for(18) == 35
