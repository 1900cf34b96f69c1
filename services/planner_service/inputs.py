"""Turn a request's fleet / model / placement fields into core objects (Cluster, ModelSpec, ProfileSet).

Names resolve through planner.bundled only — a request can never make the service read an arbitrary path.
Inline text is written to a private temporary file and read by the same loaders the CLI uses, so a file
that works with `brl plan` works here, with the same error messages (the source is named "cluster_text").
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from planner.cluster import Cluster
from planner.errors import InvalidInput, UnknownName
from planner.model import ModelSpec, model_from_hf_config
from planner.placement import LayerRange, Placement
from planner.profile import ProfileSet


@dataclass(frozen=True)
class Inputs:
    cluster: Cluster
    model: ModelSpec
    profiles: ProfileSet
    profiles_name: str


def _bundled() -> Any:
    import planner.bundled as bundled  # written by the foundation helper; imported late to keep start-up light

    return bundled


def _relabel(exc: InvalidInput, field: str) -> InvalidInput:
    """The same error, naming the request field and not the temporary file it was read from."""
    return InvalidInput(
        exc.detail, source="request", field=field if exc.field is None else f"{field}.{exc.field}"
    )


def _looks_like_ini(text: str) -> bool:
    first = next(
        (
            line.strip()
            for line in text.splitlines()
            if line.strip() and not line.strip().startswith(("#", ";"))
        ),
        "",
    )
    return first.startswith("[")


def _cluster_from_text(text: str, field: str) -> Cluster:
    suffix = ".ini" if _looks_like_ini(text) else ".yaml"
    with tempfile.TemporaryDirectory(prefix="brl-req-") as tmp:
        path = Path(tmp) / f"cluster{suffix}"
        path.write_text(text, encoding="utf-8")
        try:
            cluster = _bundled().cluster(str(path))
        except InvalidInput as exc:
            raise _relabel(exc, field) from None
    return cluster  # type: ignore[no-any-return]


def _only_bundled(kind: str, name: str, valid: tuple[str, ...], field: str) -> str:
    # A name that is not bundled is refused here: the loaders would also accept a path on this server.
    if name not in valid:
        raise UnknownName(kind, name, valid, source="request", field=field)
    return name


def load_cluster(body: Mapping[str, Any]) -> Cluster:
    if body.get("cluster") is not None:
        name = _only_bundled("cluster", str(body["cluster"]), _bundled().cluster_names(), "cluster")
        try:
            return _bundled().cluster(name)  # type: ignore[no-any-return]
        except InvalidInput as exc:
            raise _relabel(exc, "cluster") from None
    if body.get("cluster_text") is not None:
        return _cluster_from_text(str(body["cluster_text"]), "cluster_text")
    spec = body.get("cluster_spec")
    if not isinstance(spec, Mapping):
        raise InvalidInput("give exactly one of cluster, cluster_text, cluster_spec", field="cluster")
    return _cluster_from_text(yaml.safe_dump(json.loads(json.dumps(spec)), sort_keys=False), "cluster_spec")


def load_model(body: Mapping[str, Any]) -> ModelSpec:
    if body.get("model") is not None:
        name = _only_bundled("model", str(body["model"]), _bundled().model_names(), "model")
        try:
            return _bundled().model(name)  # type: ignore[no-any-return]
        except InvalidInput as exc:
            raise _relabel(exc, "model") from None
    config = body.get("hf_config")
    if not isinstance(config, Mapping):
        raise InvalidInput("give exactly one of model, hf_config", field="model")
    name = str(body.get("model_name") or config.get("_name_or_path") or "custom-model")
    return model_from_hf_config(config, name=name, source="hf_config")


def load_inputs(body: Mapping[str, Any]) -> Inputs:
    cluster = load_cluster(body)
    model = load_model(body)
    profiles_name = str(body.get("profiles") or body.get("model") or model.name)
    _only_bundled(
        "GPU profile set",
        profiles_name,
        _bundled().profile_names(),
        "profiles" if body.get("profiles") else "model",
    )
    try:
        profiles = _bundled().profiles(profiles_name)
    except InvalidInput as exc:
        raise _relabel(exc, "profiles" if body.get("profiles") else "model") from None
    if body.get("hf_config") is not None:
        # Profiles are per layer of one model: an inline model must have the layer count they were made for.
        layers = _bundled().helix_settings(profiles_name).get("num_layers")
        if layers is not None and int(layers) != model.num_layers:
            raise InvalidInput(
                f"profiles {profiles_name!r} are for a {layers}-layer model; hf_config has "
                f"{model.num_layers} layers",
                field="hf_config.num_hidden_layers",
            )
    missing = sorted({n.gpu_type for n in cluster.nodes} - set(profiles.types()))
    if missing:
        raise InvalidInput(
            f"no GPU profile for {', '.join(missing)} with model profiles {profiles_name!r}; "
            f"profiled types: {', '.join(sorted(profiles.types()))}",
            field="cluster",
        )
    return Inputs(cluster, model, profiles, profiles_name)


def load_placement(raw: Mapping[str, Any], cluster: Cluster, num_layers: int) -> Placement:
    ranges: dict[str, LayerRange] = {}
    for node, pair in raw.items():
        field = f"placement.{node}"
        if not cluster.has_node(node):
            raise InvalidInput(
                f"no node {node!r} in the cluster; nodes: {', '.join(cluster.node_names[:50])}", field=field
            )
        start, end = int(pair[0]), int(pair[1])
        if not 0 <= start < end <= num_layers:
            raise InvalidInput(
                f"layer range [{start}, {end}) must satisfy 0 <= start < end <= {num_layers}", field=field
            )
        ranges[node] = LayerRange(start, end)
    return Placement(num_layers, ranges)
