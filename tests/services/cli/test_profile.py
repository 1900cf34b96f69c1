"""`brl profile` end to end on a tiny random Llama: the folder it writes is a valid profile set, in the same
format as the bundled smollm2 CPU profiles."""

from __future__ import annotations

import json
from pathlib import Path

from planner.formats.profiles import load_profile_dir, load_settings
from services.cli.main import main
from tests.services.worker.conftest import save_tiny_llama

BUNDLED_SMOLLM2 = Path(__file__).resolve().parents[3] / "planner" / "data" / "profiles" / "smollm2-135m"


def test_brl_profile_writes_a_loadable_monotone_profile(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    model = save_tiny_llama(tmp_path / "tiny")
    out = tmp_path / "profiles"
    argv = [
        "profile",
        "--model",
        str(model),
        "--backend",
        "torch",
        "--layers",
        "3",
        "--gpu-type",
        "cpu-x",
        "-o",
        str(out),
        "--prompt-tokens",
        "8,32",
        "--decode-batches",
        "1,4",
        "--decode-context",
        "24",
        "--repeats",
        "1",
        "--kv-cache-gib",
        "0.001",
    ]
    assert main(argv) == 0
    assert "wrote" in capsys.readouterr().out
    profile = load_profile_dir(out).get("cpu-x")
    for table in (profile.prompt, profile.decode):
        assert table.points[0] == (0.0, 0.0)
        ms = [y for _, y in table.points[1:]]
        assert all(y > 0 for y in ms) and ms == sorted(ms)
    assert [x for x, _ in profile.prompt.points] == [0, 8, 32]
    assert profile.max_layers == 3
    # 1 MiB of KV at float32, 2 KV heads x 32 dims x 2 (K and V) x 4 bytes per token per layer.
    assert profile.kv_capacity == ((2**30 // 1000) // (2 * 2 * 32 * 4),) * 3
    assert profile.prompt_max_tokens == 32 and profile.decode_max_for(2) == 4
    head = load_settings(out / "settings.json")["gpus"]["cpu-x"]["lm_head_ms"]
    assert [b for b, _ in head] == [1, 4] and all(ms >= 0 for _, ms in head)


def test_output_has_the_keys_of_the_bundled_cpu_profiles(tmp_path: Path) -> None:
    model = save_tiny_llama(tmp_path / "tiny")
    out = tmp_path / "profiles"
    argv = [
        "profile",
        "--model",
        str(model),
        "--layers",
        "2",
        "-o",
        str(out),
        "--quick",
        "--decode-context",
        "16",
        "--prompt-tokens",
        "8,16",
        "--decode-batches",
        "1,2",
    ]
    assert main(argv) == 0
    mine = load_settings(out / "settings.json")
    theirs = load_settings(BUNDLED_SMOLLM2 / "settings.json")
    assert set(theirs) - {"gpus"} <= set(mine)
    their_entry = theirs["gpus"]["cpu"]
    my_entry = mine["gpus"]["cpu"]
    required = {
        "max_num_layers",
        "kv_cache_capacity_token_layers",
        "prompt_max_requests",
        "prompt_max_tokens",
        "decode_max_tokens",
        "profile_dir",
        "vram_bytes",
    }
    assert required <= set(their_entry) and required <= set(my_entry)
    for name in ("prompt_bs2time.csv", "decode_bs2time.csv"):
        first = (out / my_entry["profile_dir"] / name).read_text().splitlines()[0]
        assert first == (BUNDLED_SMOLLM2 / their_entry["profile_dir"] / name).read_text().splitlines()[
            0
        ].replace("0.0", "0")
    json.dumps(mine)  # plain JSON all the way down
