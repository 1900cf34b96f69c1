"""Worker settings: the layer range is optional (a worker may start holding nothing and wait for a Load)."""

from __future__ import annotations

import pytest

from planner.errors import InvalidInput
from services.worker.settings import from_env, parse_layers


def test_no_layers_means_the_empty_range() -> None:
    assert from_env({}).layer_range == (0, 0)
    assert from_env({"BRL_LAYERS": "0:0"}).layer_range == (0, 0)
    assert from_env({"BRL_LAYERS": "2:6"}, layers="0:3").layer_range == (0, 3)  # a flag wins over the env
    assert parse_layers("  ") == (0, 0)


@pytest.mark.parametrize("text", ["3:3", "4:2", "-1:2", "a:b", "7"])
def test_a_bad_range_names_the_field(text: str) -> None:
    with pytest.raises(InvalidInput) as err:
        from_env({}, layers=text)
    assert err.value.field == "layers" and "START" in str(err.value)
