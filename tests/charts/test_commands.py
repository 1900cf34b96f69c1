"""The command lines the chart renders are ones `brl` accepts: every container's argv is parsed by the
real CLI parser, and every BRL_* variable the chart sets is a setting the service reads."""

from __future__ import annotations

import argparse
import re
import shlex
from typing import Any

import pytest

from services.cli.main import build_parser
from services.coordinator.settings import CoordinatorSettings
from services.planner_service.settings import ENV_PREFIX as PLANNER_PREFIX
from services.planner_service.settings import PlannerSettings
from services.simulator_service.settings import ENV_PREFIX as SIMULATOR_PREFIX
from services.simulator_service.settings import SimulatorSettings
from services.worker.settings import from_env as worker_settings
from tests.charts import helm as h

SCENARIOS = sorted(h.SCENARIOS)


def _parse(argv: list[str]) -> argparse.Namespace:
    try:
        return build_parser().parse_args(argv)
    except SystemExit as exc:  # argparse reports a bad flag by exiting
        raise AssertionError(f"`brl {' '.join(argv)}` is rejected by the CLI (exit {exc.code})") from None


def _worker_argv(script: str, ordinal: int) -> list[str]:
    """The `exec brl worker ...` line of a worker's start script, with the shell variables filled in
    the way the script fills them for replica `ordinal`."""
    joined = script.replace("\\\n", " ")
    exec_line = next(line for line in joined.splitlines() if line.strip().startswith("exec brl worker"))
    case = re.search(rf"^\s*{ordinal}\) layers='([^']+)' ;;", script, re.MULTILINE)
    default = re.search(r"^\s*layers='([^']+)'$", script, re.MULTILINE)
    layers = case or default
    # Static mode bakes a range per replica; with the controller, workers start without one.
    assert (layers is not None) == ('--layers "$layers"' in exec_line), (
        "a range set but not passed, or the reverse"
    )
    values = {
        "layers": layers[1] if layers is not None else "",
        "ordinal": str(ordinal),
        "POD_NAME": f"brl-worker-x-{ordinal}",
        "POD_NAMESPACE": "brl",
    }
    filled = re.sub(r"\$(\w+)", lambda m: values[m[1]], exec_line)
    words = shlex.split(filled)
    assert words[:2] == ["exec", "brl"]
    return words[2:]


def _container(obj: dict[str, Any]) -> dict[str, Any]:
    return dict(obj["spec"]["template"]["spec"]["containers"][0])


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_worker_command_lines_parse_into_valid_settings(
    docs: dict[str, list[dict[str, Any]]], scenario: str
) -> None:
    for sts in h.by_kind(docs[scenario], "StatefulSet"):
        script = _container(sts)["args"][0]
        for ordinal in range(sts["spec"]["replicas"]):
            args = _parse(_worker_argv(script, ordinal))
            assert args.command == "worker"
            fields = {k: v for k, v in vars(args).items() if k not in {"command", "func"} and v is not None}
            settings = worker_settings(environ={}, **fields)
            assert settings.host == "0.0.0.0"
            assert settings.name == f"{sts['metadata']['labels']['brl.io/pool']}-{ordinal}"
            assert settings.advertise is not None and settings.advertise.endswith(f":{settings.port}")
            # One coordinator: its Service; replicas: every replica pod, by the headless Service's name.
            assert settings.coordinator in (
                "brl-coordinator.brl.svc:50050",
                "dns:brl-coordinator-replicas.brl.svc:50050",
            )


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_control_plane_command_lines_parse(docs: dict[str, list[dict[str, Any]]], scenario: str) -> None:
    seen = set()
    for obj in docs[scenario]:
        if obj["kind"] not in ("Deployment", "Job"):
            continue
        argv = [str(a) for a in _container(obj)["args"]]
        seen.add(_parse(argv).command)
    assert "coordinator" in seen
    expected = {"coordinator"}
    values = h.SCENARIOS[scenario].read_text()
    if "dryRunJob:\n    enabled: true" in values:
        expected.add("simulate")
    assert expected <= seen


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_coordinator_env_names_are_settings(docs: dict[str, list[dict[str, Any]]], scenario: str) -> None:
    coordinator = next(
        d for d in h.by_kind(docs[scenario], "Deployment") if d["metadata"]["name"] == "brl-coordinator"
    )
    env = {e["name"]: e for e in _container(coordinator)["env"]}
    known = {f"BRL_{name.upper()}" for name in CoordinatorSettings.model_fields} | {"BRL_CACHE_DIR"}
    unknown = {name for name in env if name.startswith("BRL_")} - known
    assert not unknown, f"the coordinator ignores {unknown}"
    assert env["BRL_HOST"]["value"] == "0.0.0.0"
    assert env["BRL_CLUSTER"]["value"] == "/etc/brl/fleet/cluster.yaml"


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_job_service_env_names_are_settings(docs: dict[str, list[dict[str, Any]]], scenario: str) -> None:
    """A misspelt key variable would leave a service open without a word: every BRL_PLANNER_* /
    BRL_SIMULATOR_* variable the chart sets is a field of that service's settings."""
    seen = 0
    for name, prefix, fields in (
        ("brl-planner", PLANNER_PREFIX, PlannerSettings.model_fields),
        ("brl-simulator", SIMULATOR_PREFIX, SimulatorSettings.model_fields),
    ):
        deployment = next(
            (d for d in h.by_kind(docs[scenario], "Deployment") if d["metadata"]["name"] == name), None
        )
        if deployment is None:
            continue
        env = {e["name"] for e in _container(deployment)["env"]}
        known = {prefix + field.upper() for field in fields}
        assert prefix + "API_KEY" in env
        assert {n for n in env if n.startswith(prefix)} <= known
        seen += 1
    assert seen >= 1
