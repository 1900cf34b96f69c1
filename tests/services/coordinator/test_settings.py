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
    with pytest.raises(InvalidInput, match="dead_end"):
        from_env({"BRL_DEAD_END": "retry"})


def test_dead_end_rule_from_env_and_default() -> None:
    assert from_env({}).dead_end == "keep-entry"
    assert from_env({"BRL_DEAD_END": "rollback"}).dead_end == "rollback"


def test_admin_key_and_prompt_cap_from_env() -> None:
    s = from_env({"BRL_ADMIN_API_KEY": "adm", "BRL_API_KEY": "k", "BRL_MAX_PROMPT_CHARS": "5000"})
    assert s.admin_api_key == "adm" and s.max_prompt_chars == 5000
    assert from_env({}).admin_api_key is None  # no admin routes unless asked for


def test_the_inference_key_may_not_be_the_admin_key() -> None:
    with pytest.raises(InvalidInput, match="admin_api_key must differ"):
        from_env({"BRL_API_KEY": "same", "BRL_ADMIN_API_KEY": "same"})
    with pytest.raises(InvalidInput, match="max_prompt_chars"):
        from_env({"BRL_MAX_PROMPT_CHARS": "0"})
