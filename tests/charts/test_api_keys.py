"""charts/brl keys and reachability: every API key reaches its pod through a Secret (never a plain env
value), the planner and simulator services always have a key, and NetworkPolicies let only the pods that
need them reach those services."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.charts import helm as h

SCENARIOS = sorted(h.SCENARIOS)
WORKLOADS = ("Deployment", "StatefulSet", "Job", "Pod")


def _pod_spec(obj: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = obj["spec"] if obj["kind"] == "Pod" else obj["spec"]["template"]["spec"]
    return spec


def _pod_labels(obj: dict[str, Any]) -> dict[str, str]:
    labels: dict[str, str] = (
        obj["metadata"]["labels"] if obj["kind"] == "Pod" else obj["spec"]["template"]["metadata"]["labels"]
    )
    return labels


def _deployment(objects: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return next(d for d in h.by_kind(objects, "Deployment") if d["metadata"]["name"] == name)


def _env(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in _pod_spec(obj)["containers"][0].get("env", [])}


def _key_ref(obj: dict[str, Any], var: str) -> dict[str, Any]:
    entry = _env(obj)[var]
    assert "value" not in entry, f"{var} is a plain value"
    ref: dict[str, Any] = entry["valueFrom"]["secretKeyRef"]
    return ref


def _secret(objects: list[dict[str, Any]]) -> dict[str, str] | None:
    """The chart-created key Secret's data, decoded; None when the chart creates none."""
    secrets = [s for s in h.by_kind(objects, "Secret") if s["metadata"]["name"] == "brl-api-keys"]
    if not secrets:
        return None
    (secret,) = secrets
    return {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}


def _render(helm_bin: Path, *values: Path, sets: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    return h.documents(h.template(helm_bin, *values, sets=sets).stdout)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_job_services_take_their_keys_from_a_secret(
    docs: dict[str, list[dict[str, Any]]], scenario: str
) -> None:
    objects = docs[scenario]
    deployments = {d["metadata"]["name"] for d in h.by_kind(objects, "Deployment")}
    secret = _secret(objects)
    existing = yaml.safe_load(h.SCENARIOS[scenario].read_text()).get("apiKeys", {}).get("existingSecret")
    checked = 0
    for name, var, key in (
        ("brl-planner", "BRL_PLANNER_API_KEY", "planner-api-key"),
        ("brl-simulator", "BRL_SIMULATOR_API_KEY", "simulator-api-key"),
    ):
        if name not in deployments:
            continue
        ref = _key_ref(_deployment(objects, name), var)
        # The service's own key is required: a pod without it does not start rather than start open.
        assert ref == {"name": existing or "brl-api-keys", "key": key}
        if not existing:
            assert secret is not None and len(secret[key]) >= 16
        checked += 1
    assert checked >= 1
    if "brl-planner" in deployments:
        # Whoever fetches plans from the planner sends the planner's key, from the same Secret entry.
        planner_ref = _key_ref(_deployment(objects, "brl-planner"), "BRL_PLANNER_API_KEY")
        assert _key_ref(_deployment(objects, "brl-coordinator"), "BRL_PLANNER_API_KEY") == planner_ref
        assert _env(_deployment(objects, "brl-coordinator"))["BRL_PLANNER_URL"]["value"].startswith("http://")
        if "brl-simulator" in deployments:
            sim = _deployment(objects, "brl-simulator")
            assert _key_ref(sim, "BRL_SIMULATOR_PLANNER_API_KEY") == planner_ref


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_no_key_is_a_plain_value_anywhere(docs: dict[str, list[dict[str, Any]]], scenario: str) -> None:
    objects = docs[scenario]
    for obj in objects:
        if obj["kind"] not in WORKLOADS:
            continue
        for container in _pod_spec(obj)["containers"]:
            for entry in container.get("env", []):
                if "KEY" in entry["name"]:
                    assert "value" not in entry, (
                        f"{obj['metadata']['name']}: {entry['name']} is a plain value"
                    )
                    assert "secretKeyRef" in entry["valueFrom"]
    # ... nor does any key's text appear outside its Secret (args, annotations, ConfigMaps).
    secret = _secret(objects) or {}
    elsewhere = json.dumps([o for o in objects if o["kind"] != "Secret"])
    for key, value in secret.items():
        assert value not in elsewhere, f"{key} leaks outside the Secret"


def test_given_keys_go_into_the_secret_and_random_ones_fill_the_rest(
    docs: dict[str, list[dict[str, Any]]],
) -> None:
    secret = _secret(docs["one-pool"])
    assert secret is not None
    assert secret["inference-api-key"] == "one-pool-example-inference-key"
    assert secret["admin-api-key"] == "one-pool-example-admin-key"
    # one-pool has no simulator service: no simulator key to hold.
    assert set(secret) == {"inference-api-key", "admin-api-key", "planner-api-key"}
    assert len(secret["planner-api-key"]) == 40 and secret["planner-api-key"].isalnum()
    coordinator = _deployment(docs["one-pool"], "brl-coordinator")
    assert _key_ref(coordinator, "BRL_API_KEY") == {"name": "brl-api-keys", "key": "inference-api-key"}
    assert _key_ref(coordinator, "BRL_ADMIN_API_KEY") == {"name": "brl-api-keys", "key": "admin-api-key"}
    # An existing Secret: the chart creates none, and the optional keys may be absent from it.
    assert _secret(docs["three-pools"]) is None
    coordinator = _deployment(docs["three-pools"], "brl-coordinator")
    assert _key_ref(coordinator, "BRL_ADMIN_API_KEY") == {
        "name": "brl-api-keys",
        "key": "admin-api-key",
        "optional": True,
    }
    assert _key_ref(coordinator, "BRL_API_KEY")["optional"] is True


def test_without_keys_the_admin_routes_are_off_and_the_job_services_still_closed(helm_bin: Path) -> None:
    objects = _render(helm_bin)
    env = _env(_deployment(objects, "brl-coordinator"))
    assert "BRL_ADMIN_API_KEY" not in env and "BRL_API_KEY" not in env
    secret = _secret(objects)
    assert secret is not None and set(secret) == {"planner-api-key", "simulator-api-key"}
    assert secret["planner-api-key"] != secret["simulator-api-key"]
    # routerSpec.vllmApiKey (a Secret managed elsewhere) supplies the inference key in three-regions.
    regions = _deployment(
        h.documents(h.template(helm_bin, h.SCENARIOS["three-regions"]).stdout), "brl-coordinator"
    )
    assert _key_ref(regions, "BRL_API_KEY") == {"name": "brl-api-key", "key": "token"}


@pytest.mark.parametrize(
    ("sets", "needle"),
    [
        (
            ("plannerSpec.env[0].name=BRL_PLANNER_API_KEY", "plannerSpec.env[0].value=abcdefghijklmnopq"),
            "plannerSpec.env",
        ),
        (
            ("routerSpec.env[0].name=BRL_ADMIN_API_KEY", "routerSpec.env[0].value=abcdefghijklmnopq"),
            "routerSpec.env",
        ),
        (("apiKeys.admin=abcdefghijklmnopq", "apiKeys.inference=abcdefghijklmnopq"), "must differ"),
        (("apiKeys.planner=short",), "apiKeys"),
        (("apiKeys.admin=has spaces in the key",), "apiKeys"),
        (("apiKeys.inference=abcdefghijklmnopq", "routerSpec.vllmApiKey.secretName=mine"), "set twice"),
    ],
)
def test_bad_key_settings_fail_the_render(helm_bin: Path, sets: tuple[str, ...], needle: str) -> None:
    proc = h.template(helm_bin, sets=sets, check=False)
    assert proc.returncode != 0
    assert needle in proc.stderr


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """A Kubernetes LabelSelector (matchLabels + In/NotIn/Exists/DoesNotExist) applied to `labels`."""
    if not selector.get("matchLabels", {}).items() <= labels.items():
        return False
    for expr in selector.get("matchExpressions", []):
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        ok = {
            "In": key in labels and labels[key] in values,
            "NotIn": key not in labels or labels[key] not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[op]
        if not ok:
            return False
    return True


def _reachers(objects: list[dict[str, Any]], policy: dict[str, Any]) -> set[str]:
    """Names of the rendered workloads whose pods the policy admits (same-namespace podSelector peers)."""
    allowed = set()
    for rule in policy["spec"]["ingress"]:
        for peer in rule["from"]:
            assert set(peer) == {"podSelector"}, "no namespaceSelector / ipBlock by default"
            for obj in objects:
                if obj["kind"] in WORKLOADS and _selects(peer["podSelector"], _pod_labels(obj)):
                    allowed.add(obj["metadata"]["name"])
    return allowed


def test_only_the_coordinator_and_dry_run_job_reach_the_job_services(helm_bin: Path) -> None:
    # one-pool has the dry-run Job; switch on the simulator service and the policies to see all of them.
    objects = _render(
        helm_bin,
        h.SCENARIOS["one-pool"],
        sets=("networkPolicy.enabled=true", "simulatorSpec.enabled=true"),
    )
    policies = {p["metadata"]["name"]: p for p in h.by_kind(objects, "NetworkPolicy")}
    expected = {
        # The simulator service fetches plans by id from the planner.
        "brl-planner": {"brl-coordinator", "brl-dry-run", "brl-simulator"},
        "brl-simulator": {"brl-coordinator", "brl-dry-run"},
    }
    for name, reachers in expected.items():
        policy = policies[name]
        assert policy["spec"]["policyTypes"] == ["Ingress"]
        target = _deployment(objects, name)
        selected = [
            o["metadata"]["name"]
            for o in objects
            if o["kind"] in WORKLOADS and _selects(policy["spec"]["podSelector"], _pod_labels(o))
        ]
        assert selected == [name]
        assert _reachers(objects, policy) == reachers
        (rule,) = policy["spec"]["ingress"]
        ports = {p["name"] for p in _pod_spec(target)["containers"][0]["ports"]}
        assert {p["port"] for p in rule["ports"]} == ports == {"http", "grpc"}


def test_job_services_from_adds_peers_and_off_means_no_policy(helm_bin: Path) -> None:
    peer = {"namespaceSelector": {"matchLabels": {"team": "ci"}}}
    objects = _render(
        helm_bin,
        h.SCENARIOS["three-pools"],
        sets=("networkPolicy.jobServicesFrom[0].namespaceSelector.matchLabels.team=ci",),
    )
    policies = {p["metadata"]["name"]: p for p in h.by_kind(objects, "NetworkPolicy")}
    for name in ("brl-planner", "brl-simulator"):
        assert policies[name]["spec"]["ingress"][0]["from"][1:] == [peer]
    off = _render(helm_bin, h.SCENARIOS["three-pools"], sets=("plannerSpec.enabled=false",))
    assert "brl-planner" not in {p["metadata"]["name"] for p in h.by_kind(off, "NetworkPolicy")}
