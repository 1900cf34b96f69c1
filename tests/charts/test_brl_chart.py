"""charts/brl: lint, render and schema-check every scenario in charts/brl/ci/, then check what the
objects say (one StatefulSet per GPU pool, probes, NetworkPolicy, labels, optional objects).

No Kubernetes API server can run here: objects are validated offline against the OpenAPI schemas of
Kubernetes 1.35 that kubernetes-validate ships, in strict mode (unknown fields are errors).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from planner.formats.cluster_yaml import load_cluster_yaml
from planner.formats.plan_json import plan_from_json
from tests.charts import helm as h

SCENARIOS = sorted(h.SCENARIOS)
STANDARD_LABELS = (
    "helm.sh/chart",
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/component",
    "app.kubernetes.io/version",
    "app.kubernetes.io/managed-by",
    "app.kubernetes.io/part-of",
)
# Custom resources whose schemas are not part of Kubernetes: checked by hand below.
CRD_KINDS = {"ServiceMonitor"}


def _values(name: str) -> dict[str, Any]:
    merged: dict[str, Any] = yaml.safe_load((h.CHART / "values.yaml").read_text())
    override = yaml.safe_load(h.SCENARIOS[name].read_text())
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    return merged


def _workers(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {s["metadata"]["labels"]["brl.io/pool"]: s for s in h.by_kind(docs, "StatefulSet")}


def _container(obj: dict[str, Any]) -> dict[str, Any]:
    spec = obj["spec"]["template"]["spec"]
    return dict(spec["containers"][0])


def test_there_are_three_scenarios_or_more() -> None:
    assert {"one-pool", "three-pools", "three-regions"} <= set(SCENARIOS)


@pytest.mark.parametrize("scenario", ["defaults", *SCENARIOS])
def test_helm_lint_strict(helm_bin: Path, scenario: str) -> None:
    values: list[str | Path] = [] if scenario == "defaults" else ["-f", h.SCENARIOS[scenario]]
    proc = h.run(helm_bin, "lint", h.CHART, "--strict", *values, "--kube-version", h.KUBE_VERSION)
    assert "0 chart(s) failed" in proc.stdout


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_object_passes_strict_kubernetes_schema(
    docs: dict[str, list[dict[str, Any]]], scenario: str
) -> None:
    objects = docs[scenario]
    assert len(objects) >= 8
    for obj in objects:
        if obj["kind"] in CRD_KINDS:
            continue
        try:
            kubernetes_validate.validate(obj, h.KUBE_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(
                f"{scenario}: {obj['kind']}/{obj['metadata']['name']}: {exc.message} at {list(exc.path)}"
            )


def test_strict_validation_would_catch_a_typo(docs: dict[str, list[dict[str, Any]]]) -> None:
    """Guards the check above: a misspelt field in a rendered object must be rejected."""
    sts = yaml.safe_load(yaml.safe_dump(h.by_kind(docs["one-pool"], "StatefulSet")[0]))
    sts["spec"]["template"]["spec"]["containers"][0]["startupProbes"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(sts, h.KUBE_VERSION, strict=True)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_one_statefulset_per_gpu_pool(docs: dict[str, list[dict[str, Any]]], scenario: str) -> None:
    pools = _values(scenario)["servingEngineSpec"]["gpuPools"]
    workers = _workers(docs[scenario])
    assert sorted(workers) == sorted(p["name"] for p in pools)
    for pool in pools:
        sts = workers[pool["name"]]
        assert sts["spec"]["replicas"] == pool["replicaCount"]
        assert sts["metadata"]["labels"]["brl.io/gpu-type"] == pool["gpuType"]
        resources = _container(sts)["resources"]
        assert resources["limits"]["nvidia.com/gpu"] == str(pool.get("requestGPU", 1))
        assert resources["requests"]["nvidia.com/gpu"] == resources["limits"]["nvidia.com/gpu"]
        pod = sts["spec"]["template"]["spec"]
        if pool.get("nodeSelector"):
            assert pod["nodeSelector"] == pool["nodeSelector"]
        if pool.get("nodeSelectorTerms"):
            terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
            assert terms["nodeSelectorTerms"] == pool["nodeSelectorTerms"]
        tolerations = pod.get("tolerations", [])
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in tolerations
        for extra in pool.get("tolerations", []):
            assert extra in tolerations
        # Each replica registers as <pool>-<ordinal>; its layer range comes at run time from the
        # coordinator's controller, or in static mode (controller.enabled=false) is baked in per replica.
        script = _container(sts)["args"][0]
        if _controller_enabled(scenario):
            assert "--layers" not in script and "layers=" not in script
        else:
            for i, layers in enumerate(pool.get("layers") or []):
                assert f"{i}) layers='{layers}' ;;" in script
            assert '--layers "$layers"' in script
        assert f'--name "{pool["name"]}-$ordinal"' in script
        backend = pool.get("backend") or _values(scenario)["servingEngineSpec"]["backend"]
        assert f"--backend '{backend}'" in script


def _configmap(objects: list[dict[str, Any]], suffix: str) -> dict[str, Any]:
    return next(c for c in h.by_kind(objects, "ConfigMap") if c["metadata"]["name"].endswith(suffix))


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_fleet_configmap_loads_with_one_node_per_worker(
    docs: dict[str, list[dict[str, Any]]], scenario: str, tmp_path: Path
) -> None:
    """The planner's own loader reads the fleet, and its node names are the names workers register under."""
    path = tmp_path / "cluster.yaml"
    path.write_text(_configmap(docs[scenario], "-fleet")["data"]["cluster.yaml"])
    cluster = load_cluster_yaml(path)
    expected = [
        (f"{p['name']}-{i}", p["gpuType"], p.get("region", "default"))
        for p in _values(scenario)["servingEngineSpec"]["gpuPools"]
        for i in range(p["replicaCount"])
    ]
    assert [(n.name, n.gpu_type, n.region) for n in cluster.nodes] == expected
    values = _values(scenario)
    assert cluster.coordinator_region == (values["fleet"].get("coordinatorRegion") or expected[0][2])
    if len(cluster.regions()) > 1:
        a, b = next((x, y) for x in cluster.nodes for y in cluster.nodes if x.region != y.region)
        link = cluster.link(a.name, b.name)
        assert link is not None
        assert link.bandwidth_bytes_per_s == values["fleet"]["links"]["interRegion"]["bandwidthBytesPerS"]


def test_plan_configmap_loads_and_names_fleet_nodes(
    docs: dict[str, list[dict[str, Any]]], tmp_path: Path
) -> None:
    plan = plan_from_json(_configmap(docs["one-pool"], "-plan")["data"]["plan.json"])
    path = tmp_path / "cluster.yaml"
    path.write_text(_configmap(docs["one-pool"], "-fleet")["data"]["cluster.yaml"])
    cluster = load_cluster_yaml(path)
    assert set(plan.placement) <= set(cluster.node_names)
    assert plan.placement.layer_coverage() == [1] * plan.placement.num_layers
    # Static mode: the worker script gives each replica exactly the plan's range.
    script = _container(h.by_kind(docs["static-layers"], "StatefulSet")[0])["args"][0]
    for name in plan.placement:
        r = plan.placement.ranges[name]
        assert f"{name.rsplit('-', 1)[1]}) layers='{r.start}:{r.end}' ;;" in script


def _controller_enabled(scenario: str) -> bool:
    return bool((_values(scenario).get("controller") or {}).get("enabled", True))


def _coordinator_env(objects: list[dict[str, Any]]) -> dict[str, Any]:
    coordinator = next(
        d for d in h.by_kind(objects, "Deployment") if d["metadata"]["name"].endswith("-coordinator")
    )
    return {e["name"]: e.get("value") for e in _container(coordinator)["env"]}


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_controller_runs_in_the_coordinator_and_workers_start_without_a_range(
    docs: dict[str, list[dict[str, Any]]], scenario: str
) -> None:
    """With the controller the coordinator re-plans (BRL_AUTO_REPLAN) and keeps the plan it starts from;
    no worker pod carries a layer range, so a pool's StatefulSet scales to any size."""
    env = _coordinator_env(docs[scenario])
    enabled = _controller_enabled(scenario)
    assert (env.get("BRL_AUTO_REPLAN") == "1") == enabled
    if _values(scenario).get("plan", {}).get("enabled"):
        assert env["BRL_PLAN"] == "/etc/brl/plan/plan.json"
    for sts in h.by_kind(docs[scenario], "StatefulSet"):
        assert ("--layers" in _container(sts)["args"][0]) == (not enabled)


def test_scaling_a_pool_needs_no_new_ranges(helm_bin: Path) -> None:
    """With the controller, a pool scaled past its `layers` list still renders (ranges come at run time);
    in static mode the chart refuses a replica without a range."""
    scaled = ("servingEngineSpec.gpuPools[0].replicaCount=5",)
    rendered = h.template(helm_bin, h.SCENARIOS["one-pool"], sets=scaled)
    sts = h.by_kind(h.documents(rendered.stdout), "StatefulSet")[0]
    assert sts["spec"]["replicas"] == 5 and "--layers" not in _container(sts)["args"][0]
    static = h.template(helm_bin, h.SCENARIOS["static-layers"], sets=scaled, check=False)
    assert static.returncode != 0 and "2 layer ranges for 5 replicas" in static.stderr


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_probes_are_native_grpc_for_grpc_and_http_for_http(
    docs: dict[str, list[dict[str, Any]]], scenario: str
) -> None:
    for sts in h.by_kind(docs[scenario], "StatefulSet"):
        c = _container(sts)
        port = c["ports"][0]["containerPort"]
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert c[probe]["grpc"] == {"port": port}
        # Weight loading: a worker gets at least 10 minutes before the kubelet gives up on it.
        assert c["startupProbe"]["periodSeconds"] * c["startupProbe"]["failureThreshold"] >= 600
    coordinator = next(
        d for d in h.by_kind(docs[scenario], "Deployment") if d["metadata"]["name"].endswith("-coordinator")
    )
    c = _container(coordinator)
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert c["readinessProbe"]["httpGet"]["port"] == "http"
    assert c["livenessProbe"]["grpc"] == {"port": ports["grpc"]}
    svc = next(
        s for s in h.by_kind(docs[scenario], "Service") if s["metadata"]["name"].endswith("-coordinator")
    )
    assert {p["name"] for p in svc["spec"]["ports"]} == {"http", "grpc"}


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_standard_labels_and_selectors(docs: dict[str, list[dict[str, Any]]], scenario: str) -> None:
    objects = docs[scenario]
    for obj in objects:
        labels = obj["metadata"]["labels"]
        missing = [k for k in STANDARD_LABELS if k not in labels]
        assert not missing, f"{obj['kind']}/{obj['metadata']['name']} lacks {missing}"
        assert labels["app.kubernetes.io/instance"] == "brl"
    pod_labels = [
        w["spec"]["template"]["metadata"]["labels"]
        for w in objects
        if w["kind"] in ("Deployment", "StatefulSet")
    ]
    for workload in objects:
        if workload["kind"] in ("Deployment", "StatefulSet"):
            selector = workload["spec"]["selector"]["matchLabels"]
            assert selector.items() <= workload["spec"]["template"]["metadata"]["labels"].items()
    for svc in h.by_kind(objects, "Service"):
        selector = svc["spec"]["selector"]
        assert any(selector.items() <= labels.items() for labels in pod_labels), svc["metadata"]["name"]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_pods_run_as_non_root(docs: dict[str, list[dict[str, Any]]], scenario: str) -> None:
    for obj in docs[scenario]:
        if obj["kind"] in ("Deployment", "StatefulSet", "Job", "Pod"):
            pod = obj["spec"] if obj["kind"] == "Pod" else obj["spec"]["template"]["spec"]
            assert pod["automountServiceAccountToken"] is False
            assert pod["securityContext"]["runAsNonRoot"] is True
            for c in pod["containers"]:
                assert c["securityContext"]["allowPrivilegeEscalation"] is False


def test_workers_reachable_only_from_coordinator_and_workers(docs: dict[str, list[dict[str, Any]]]) -> None:
    policies = {p["metadata"]["name"]: p for p in h.by_kind(docs["three-pools"], "NetworkPolicy")}
    workers = policies["brl-workers"]
    assert workers["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "worker"
    assert workers["spec"]["policyTypes"] == ["Ingress"]
    (rule,) = workers["spec"]["ingress"]
    (peer,) = rule["from"]
    assert set(peer) == {"podSelector"}  # no namespaceSelector / ipBlock: same namespace, these pods only
    (expr,) = peer["podSelector"]["matchExpressions"]
    assert expr["key"] == "app.kubernetes.io/component" and sorted(expr["values"]) == [
        "coordinator",
        "worker",
    ]
    assert peer["podSelector"]["matchLabels"]["app.kubernetes.io/instance"] == "brl"
    grpc_rule = policies["brl-coordinator"]["spec"]["ingress"][1]
    assert grpc_rule["ports"][0]["port"] == "grpc"
    assert grpc_rule["from"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "worker"
    # The three-regions scenario restricts the HTTP port to a gateway namespace.
    regions = {p["metadata"]["name"]: p for p in h.by_kind(docs["three-regions"], "NetworkPolicy")}
    assert regions["brl-coordinator"]["spec"]["ingress"][0]["from"][0]["namespaceSelector"]


def test_service_monitor_shape(docs: dict[str, list[dict[str, Any]]]) -> None:
    (sm,) = h.by_kind(docs["three-regions"], "ServiceMonitor")
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    assert sm["metadata"]["labels"]["release"] == "prometheus"
    svc = next(
        s for s in h.by_kind(docs["three-regions"], "Service") if s["metadata"]["name"] == "brl-coordinator"
    )
    assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    assert sm["spec"]["endpoints"][0]["port"] in {p["name"] for p in svc["spec"]["ports"]}


def test_every_optional_object_is_behind_enabled(
    helm_bin: Path, docs: dict[str, list[dict[str, Any]]]
) -> None:
    sets = (
        "routerSpec.pdb.enabled=false",
        "routerSpec.serviceMonitor.enabled=false",
        "servingEngineSpec.pdb.enabled=false",
        "plannerSpec.enabled=false",
        "simulatorSpec.enabled=false",
        "simulatorSpec.dryRunJob.enabled=false",
        "networkPolicy.enabled=false",
        "plan.enabled=false",
        "routerSpec.ingress.enabled=false",
        "helmTest.enabled=false",
        "serviceAccount.create=false",
    )
    off = {
        d["kind"] for d in h.documents(h.template(helm_bin, h.SCENARIOS["three-regions"], sets=sets).stdout)
    }
    # ... and every optional object is switched on by at least one scenario, so the checks above see it.
    on = {d["kind"] for objects in docs.values() for d in objects}
    # hostPath weights and no planner: no claim either.
    assert off == {"ConfigMap", "Deployment", "Service", "StatefulSet"}
    assert {
        "PodDisruptionBudget",
        "NetworkPolicy",
        "ServiceMonitor",
        "Job",
        "Ingress",
        "Pod",
        "ServiceAccount",
        "Secret",
    } <= on


def test_model_source_pvc_hostpath_emptydir(docs: dict[str, list[dict[str, Any]]]) -> None:
    def models_volume(scenario: str) -> dict[str, Any]:
        sts = h.by_kind(docs[scenario], "StatefulSet")[0]
        return next(v for v in sts["spec"]["template"]["spec"]["volumes"] if v["name"] == "models")

    assert models_volume("three-pools")["persistentVolumeClaim"]["claimName"] == "brl-models"
    assert models_volume("three-regions")["hostPath"]["path"] == "/var/cache/brl"
    assert "emptyDir" in models_volume("one-pool")
    pvcs = {p["metadata"]["name"]: p for p in h.by_kind(docs["three-pools"], "PersistentVolumeClaim")}
    assert pvcs["brl-models"]["spec"]["accessModes"] == ["ReadOnlyMany"]
    assert pvcs["brl-models"]["spec"]["resources"]["requests"]["storage"] == "300Gi"
    assert "brl-planner" in pvcs


def test_schema_rejects_unknown_routing_policy(helm_bin: Path) -> None:
    proc = h.template(helm_bin, sets=("routerSpec.routingLogic=fastest",), check=False)
    assert proc.returncode != 0
    assert "routingLogic" in proc.stderr and "maxflow" in proc.stderr


def test_notes_print_how_to_reach_the_endpoint(helm_bin: Path) -> None:
    for scenario, needle in (
        ("three-pools", "port-forward svc/brl-coordinator 8000:80"),
        ("three-regions", "loadBalancer.ingress[0].ip"),
    ):
        # --dry-run=client renders NOTES.txt without contacting an API server.
        proc = h.run(
            helm_bin,
            "install",
            "brl",
            h.CHART,
            "--dry-run=client",
            "--namespace",
            "brl",
            "-f",
            h.SCENARIOS[scenario],
        )
        notes = proc.stdout.partition("NOTES:")[2]
        assert needle in notes
        assert "/v1/completions" in notes


def test_duplicate_pool_names_are_rejected(helm_bin: Path, tmp_path: Path) -> None:
    values = tmp_path / "dup.yaml"
    pool = {"name": "t4", "gpuType": "T4", "replicaCount": 1}
    values.write_text(
        yaml.safe_dump({"servingEngineSpec": {"gpuPools": [pool, {**pool, "gpuType": "T4x2"}]}})
    )
    proc = h.template(helm_bin, values, check=False)
    assert proc.returncode != 0 and 'pool name "t4" is used twice' in proc.stderr


def test_existing_model_claim_is_used_not_created(helm_bin: Path) -> None:
    objects = h.documents(
        h.template(
            helm_bin,
            h.SCENARIOS["three-pools"],
            sets=("servingEngineSpec.modelSource.pvc.existingClaim=weights",),
        ).stdout
    )
    claims = {p["metadata"]["name"] for p in h.by_kind(objects, "PersistentVolumeClaim")}
    assert claims == {"brl-planner"}
    for sts in h.by_kind(objects, "StatefulSet"):
        volumes = {v["name"]: v for v in sts["spec"]["template"]["spec"]["volumes"]}
        assert volumes["models"]["persistentVolumeClaim"]["claimName"] == "weights"


def test_hf_config_ships_in_the_model_configmap(helm_bin: Path, tmp_path: Path) -> None:
    values = tmp_path / "model.yaml"
    values.write_text(
        yaml.safe_dump({"model": {"name": "m", "numLayers": 2, "hfConfig": {"num_hidden_layers": 2}}})
    )
    objects = h.documents(h.template(helm_bin, values).stdout)
    model = next(c for c in h.by_kind(objects, "ConfigMap") if c["metadata"]["name"].endswith("-model"))
    assert yaml.safe_load(model["data"]["config.json"]) == {"num_hidden_layers": 2}
    assert yaml.safe_load(model["data"]["model.yaml"])["num_layers"] == 2


def test_routing_logic_values_are_the_routing_registry_keys() -> None:
    """Helm values use the same keys as the CLI and REST: the schema's enum is planner.routing's registry."""
    from planner.routing import policy_names

    schema = json.loads((h.CHART / "values.schema.json").read_text())
    enum = schema["properties"]["routerSpec"]["properties"]["routingLogic"]["enum"]
    assert sorted(enum) == sorted(policy_names())


def test_dead_end_rule_reaches_the_coordinator_and_matches_the_router(helm_bin: Path) -> None:
    from planner.routing.maxflow import DEAD_END_RULES, DEFAULT_DEAD_END

    schema = json.loads((h.CHART / "values.schema.json").read_text())
    assert sorted(schema["properties"]["routerSpec"]["properties"]["deadEnd"]["enum"]) == sorted(
        DEAD_END_RULES
    )
    for sets, want in (((), DEFAULT_DEAD_END), (("routerSpec.deadEnd=rollback",), "rollback")):
        proc = h.template(helm_bin, h.SCENARIOS["one-pool"], sets=sets)
        coordinator = next(
            d
            for d in h.by_kind(h.documents(proc.stdout), "Deployment")
            if d["metadata"]["name"] == "brl-coordinator"
        )
        assert {e["name"]: e.get("value") for e in _container(coordinator)["env"]}["BRL_DEAD_END"] == want
    bad = h.template(helm_bin, sets=("routerSpec.deadEnd=retry",), check=False)
    assert bad.returncode != 0 and "deadEnd" in bad.stderr


def test_coordinator_fetches_a_plan_by_id_from_the_planner_service(helm_bin: Path) -> None:
    proc = h.template(helm_bin, h.SCENARIOS["one-pool"], sets=("plan.plannerPlanId=job-42",))
    coordinator = next(
        d
        for d in h.by_kind(h.documents(proc.stdout), "Deployment")
        if d["metadata"]["name"] == "brl-coordinator"
    )
    env = {e["name"]: e.get("value") for e in _container(coordinator)["env"]}
    assert env["BRL_PLAN_ID"] == "job-42"
    assert env["BRL_PLANNER_URL"].startswith("http://brl-planner:")
    off = h.template(
        helm_bin,
        h.SCENARIOS["one-pool"],
        sets=("plan.plannerPlanId=job-42", "plannerSpec.enabled=false"),
        check=False,
    )
    assert off.returncode != 0 and "plannerSpec.enabled" in off.stderr
