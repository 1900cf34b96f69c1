"""Profile folders written by save_profile load back through planner.formats.profiles unchanged."""

from __future__ import annotations

from pathlib import Path

import pytest

from planner.errors import InvalidInput
from planner.formats.profiles import load_profile_dir
from planner.profile import LatencyTable
from services.profiling.save import save_profile

MODEL = {
    "model": "m",
    "num_layers": 8,
    "token_size_bytes": 4,
    "activation_size_bytes_per_token": 512,
    "param_bytes_per_layer": 1000,
}


def entry(profile_dir: str, k: int) -> dict[str, object]:
    ks = [str(i) for i in range(1, k + 1)]
    return {
        "max_num_layers": k,
        "vram_bytes": 10**9,
        "kv_cache_capacity_token_layers": {x: 500 for x in ks},
        "prompt_max_requests": 2,
        "prompt_max_tokens": 256,
        "decode_max_tokens": {x: 8 for x in ks},
        "profile_dir": profile_dir,
    }


def test_round_trip_and_merge(tmp_path: Path) -> None:
    prompt = LatencyTable(((0.0, 0.0), (16.0, 1.25), (64.0, 3.5)))
    decode = LatencyTable(((0.0, 0.0), (1.0, 0.5), (8.0, 0.75)))
    save_profile(tmp_path, "fast", MODEL, entry("fast", 4), prompt, decode)
    save_profile(tmp_path, "slow", MODEL, entry("slow", 2), decode, prompt)  # a second type joins
    assert (tmp_path / "fast" / "prompt_bs2time.csv").read_text().splitlines()[0] == "0,0"
    ps = load_profile_dir(tmp_path)
    assert set(ps.types()) == {"fast", "slow"}
    fast = ps.get("fast")
    assert fast.prompt == prompt and fast.decode == decode
    assert fast.kv_capacity == (500,) * 4 and fast.prompt_max_requests == 2 and fast.decode_max_for(3) == 8
    assert ps.get("slow").prompt == decode and ps.get("slow").max_layers == 2


def test_refuses_to_mix_models(tmp_path: Path) -> None:
    table = LatencyTable(((0.0, 0.0), (1.0, 1.0)))
    save_profile(tmp_path, "a", MODEL, entry("a", 1), table, table)
    with pytest.raises(InvalidInput):
        save_profile(tmp_path, "b", {**MODEL, "model": "other"}, entry("b", 1), table, table)
