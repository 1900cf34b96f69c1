"""charts/brl with routerSpec.replicaCount > 1 (ci/three-replicas-values.yaml): replicas on different
nodes, a PodDisruptionBudget, rolling updates, a replica id per pod, and workers that register with every
replica through the headless Service; one replica keeps the single-coordinator objects."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from services.worker.registration import parse_coordinators
from tests.charts import helm as h

SCENARIO = "three-replicas"
SELECTOR = {
    "app.kubernetes.io/component": "coordinator",
    "app.kubernetes.io/instance": "brl",
    "app.kubernetes.io/name": "brl",
}


def _coordinator(objects: list[dict[str, Any]]) -> dict[str, Any]:
    return next(d for d in h.by_kind(objects, "Deployment") if d["metadata"]["name"] == "brl-coordinator")


def _named(objects: list[dict[str, Any]], kind: str, name: str) -> list[dict[str, Any]]:
    return [d for d in h.by_kind(objects, kind) if d["metadata"]["name"] == name]


def test_replicas_spread_drain_one_at_a_time_and_name_themselves(
    docs: dict[str, list[dict[str, Any]]],
) -> None:
    objects = docs[SCENARIO]
    dep = _coordinator(objects)
    assert dep["spec"]["replicas"] == 3
    assert dep["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0},
    }
    pod = dep["spec"]["template"]["spec"]
    (term,) = pod["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert term == {"labelSelector": {"matchLabels": SELECTOR}, "topologyKey": "kubernetes.io/hostname"}
    # The scenario's nodeSelectorTerms survive next to the anti-affinity.
    node_terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert node_terms["nodeSelectorTerms"][0]["matchExpressions"][0]["key"] == "kubernetes.io/arch"
    env = {e["name"]: e for e in pod["containers"][0]["env"]}
    assert env["BRL_REPLICA_ID"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}

    (pdb,) = _named(objects, "PodDisruptionBudget", "brl-coordinator")
    assert pdb["spec"] == {"maxUnavailable": 1, "selector": {"matchLabels": SELECTOR}}


def test_workers_register_with_every_replica(docs: dict[str, list[dict[str, Any]]]) -> None:
    objects = docs[SCENARIO]
    (headless,) = _named(objects, "Service", "brl-coordinator-replicas")
    assert headless["spec"]["clusterIP"] == "None" and headless["spec"]["publishNotReadyAddresses"] is True
    assert headless["spec"]["selector"] == SELECTOR
    assert [p["port"] for p in headless["spec"]["ports"]] == [50050]
    for sts in h.by_kind(objects, "StatefulSet"):
        script = sts["spec"]["template"]["spec"]["containers"][0]["args"][0]
        (line,) = [w for w in script.split() if w.startswith("'dns:")]
        assert parse_coordinators(line.strip("'")) == ([], "brl-coordinator-replicas.brl.svc:50050")


def test_replicas_run_the_controller_and_reach_each_other(docs: dict[str, list[dict[str, Any]]]) -> None:
    """Replicas and the rollout controller together: every replica runs it (only the leader acts, in
    the coordinator), workers carry no range, and coordinator pods may call each other's gRPC port."""
    objects = docs[SCENARIO]
    pod = _coordinator(objects)["spec"]["template"]["spec"]
    env = {e["name"]: e for e in pod["containers"][0]["env"]}
    assert env["BRL_AUTO_REPLAN"]["value"] == "1"
    for sts in h.by_kind(objects, "StatefulSet"):
        script = sts["spec"]["template"]["spec"]["containers"][0]["args"][0]
        assert "--layers" not in script
    (policy,) = _named(objects, "NetworkPolicy", "brl-coordinator")
    grpc_rule = next(r for r in policy["spec"]["ingress"] if r["ports"][0]["port"] == "grpc")
    (peer,) = grpc_rule["from"]
    (expr,) = peer["podSelector"]["matchExpressions"]
    assert expr["key"] == "app.kubernetes.io/component" and set(expr["values"]) == {"worker", "coordinator"}


def test_one_replica_keeps_the_single_coordinator_shape(docs: dict[str, list[dict[str, Any]]]) -> None:
    objects = docs["one-pool"]
    dep = _coordinator(objects)
    assert dep["spec"]["replicas"] == 1 and dep["spec"]["strategy"] == {"type": "Recreate"}
    assert "podAntiAffinity" not in (dep["spec"]["template"]["spec"].get("affinity") or {})
    assert not _named(objects, "Service", "brl-coordinator-replicas")
    assert not _named(objects, "PodDisruptionBudget", "brl-coordinator")


def test_soft_anti_affinity_static_ranges_and_a_bad_value(helm_bin: Path) -> None:
    soft = h.template(helm_bin, h.SCENARIOS[SCENARIO], sets=("routerSpec.podAntiAffinity=soft",))
    pod = _coordinator(h.documents(soft.stdout))["spec"]["template"]["spec"]
    (preferred,) = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert (
        preferred["weight"] == 100 and preferred["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    )
    # Static ranges with replicas render too: each worker pod gets its range, no controller runs.
    static = h.template(
        helm_bin,
        h.SCENARIOS[SCENARIO],
        sets=("controller.enabled=false", "servingEngineSpec.gpuPools[0].layers={0:15,15:30}"),
    )
    static_pod = _coordinator(h.documents(static.stdout))["spec"]["template"]["spec"]
    assert "BRL_AUTO_REPLAN" not in {e["name"] for e in static_pod["containers"][0]["env"]}
    bad = h.template(
        helm_bin, h.SCENARIOS[SCENARIO], sets=("routerSpec.podAntiAffinity=always",), check=False
    )
    assert bad.returncode != 0 and "podAntiAffinity" in bad.stderr
