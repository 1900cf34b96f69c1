"""A tiny random Llama folder shared by the profiling tests (the worker tests' own fixture maker)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.services.worker.conftest import save_tiny_llama


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_llama(tmp_path_factory.mktemp("profile-tiny"))
