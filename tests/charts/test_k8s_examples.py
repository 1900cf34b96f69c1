"""k8s/: the plain manifests are the chart rendered for the three-pool fleet and must never drift from it.

Regenerate after changing the chart: `BRL_UPDATE_K8S=1 .venv/bin/pytest tests/charts/test_k8s_examples.py`.
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from tests.charts import helm as h

EXAMPLE_DIR = h.K8S_DIR / h.K8S_SCENARIO
HEADER = (
    "# Generated from charts/brl with charts/brl/ci/{scenario}-values.yaml; do not edit by hand.\n"
    "# Regenerate: BRL_UPDATE_K8S=1 .venv/bin/pytest tests/charts/test_k8s_examples.py\n"
)


def _expected(helm_bin: Path) -> dict[str, str]:
    # --skip-tests: `helm test` pods mean nothing without Helm.
    rendered = h.template(
        helm_bin,
        h.SCENARIOS[h.K8S_SCENARIO],
        release=h.K8S_RELEASE,
        namespace=h.K8S_NAMESPACE,
        flags=("--skip-tests",),
    )
    header = HEADER.format(scenario=h.K8S_SCENARIO)
    files = {name: header + body for name, body in h.split_by_source(rendered.stdout).items()}
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "namespace": h.K8S_NAMESPACE,
        "resources": list(files),
    }
    files["kustomization.yaml"] = header + yaml.safe_dump(kustomization, sort_keys=False)
    return files


def test_committed_manifests_equal_a_fresh_render(helm_bin: Path) -> None:
    expected = _expected(helm_bin)
    if os.environ.get("BRL_UPDATE_K8S"):
        EXAMPLE_DIR.mkdir(parents=True, exist_ok=True)
        for stale in EXAMPLE_DIR.glob("*.yaml"):
            stale.unlink()
        for name, text in expected.items():
            (EXAMPLE_DIR / name).write_text(text)
    committed = {p.name: p.read_text() for p in EXAMPLE_DIR.glob("*.yaml")}
    assert sorted(committed) == sorted(expected), (
        "k8s/ files differ from the chart's templates (see module doc)"
    )
    for name, text in expected.items():
        assert committed[name] == text, f"k8s/{h.K8S_SCENARIO}/{name} drifted from the chart (see module doc)"


def test_kubectl_kustomize_builds_the_example_offline(kubectl_bin: Path) -> None:
    """What `kubectl apply -k k8s/three-pools` would send, built without an API server."""
    built = h.documents(h.run(kubectl_bin, "kustomize", EXAMPLE_DIR).stdout)
    committed = [
        d
        for p in sorted(EXAMPLE_DIR.glob("*.yaml"))
        if p.name != "kustomization.yaml"
        for d in h.documents(p.read_text())
    ]
    assert sorted((d["kind"], d["metadata"]["name"]) for d in built) == sorted(
        (d["kind"], d["metadata"]["name"]) for d in committed
    )
    assert all(d["metadata"]["namespace"] == h.K8S_NAMESPACE for d in built)
    workers = {d["metadata"]["name"]: d["spec"]["replicas"] for d in built if d["kind"] == "StatefulSet"}
    assert workers == {"brl-worker-a100": 4, "brl-worker-l4": 8, "brl-worker-t4": 12}
