"""The whitelist evaluator for Helix ini values and strict ini reading."""

from __future__ import annotations

from pathlib import Path

import pytest

from planner.errors import InvalidInput
from planner.formats.ini_values import get_text, get_value, parse_value, read_ini


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1000 * mbps", 1e9),
        ("10 * gbps", 1e10),
        ("55 * MilliSec", 55 * 1e-3),
        ("24000.0 * MB", 24e9),
        ("-1", -1),
        ("[0, 1, 'sink']", [0, 1, "sink"]),
        ('"L4"', "L4"),
        ("1 / 4", 0.25),
    ],
)
def test_values(text: str, value: object) -> None:
    assert parse_value(text, source="f.ini", field="[S] k") == value


@pytest.mark.parametrize("text", ["__import__('os')", "open('x')", "1 ** 2", "fast * mbps", "1 +", "1 / 0"])
def test_rejected_values_name_the_field(text: str) -> None:
    with pytest.raises(InvalidInput) as err:
        parse_value(text, source="f.ini", field="[S] k")
    assert (err.value.source, err.value.field) == ("f.ini", "[S] k")


def test_read_and_get(tmp_path: Path) -> None:
    f = tmp_path / "a.ini"
    f.write_text("[A100]\nvram_size = 40 * GB\ntype = L4\nName = x\n")
    parser, source, text = read_ini(f)
    assert source == str(f) and "A100" in text
    assert get_value(parser, "A100", "vram_size", source) == 40e9
    assert get_text(parser, "A100", "type", source) == "L4"
    assert get_text(parser, "A100", "Name", source) == "x"  # keys stay case-sensitive
    with pytest.raises(InvalidInput, match="missing key 'disk_speed'"):
        get_value(parser, "A100", "disk_speed", source)
    with pytest.raises(InvalidInput, match=r"missing section \[T4\]"):
        get_value(parser, "T4", "vram_size", source)
