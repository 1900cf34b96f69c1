"""Settings come from BRL_* variables, flags override them, bad values name the field."""

from __future__ import annotations

import pytest

from planner.errors import InvalidInput
from services.coordinator.settings import from_env


def test_env_then_flags() -> None:
    s = from_env({"BRL_HTTP_PORT": "9001", "BRL_API_KEY": "k", "BRL_POLICY": "random"}, policy="swarm")
    assert s.http_port == 9001 and s.api_key == "k" and s.policy == "swarm"
    assert s.model_name == "smollm2-135m"


def test_bad_value_names_field() -> None:
    with pytest.raises(InvalidInput, match="http_port"):
        from_env({"BRL_HTTP_PORT": "99999"})
