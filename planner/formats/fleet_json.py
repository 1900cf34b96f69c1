"""The exact JSON form of a fleet (Cluster) and a model (ModelSpec), as a plan embeds them so it can be
simulated, served or sent to a service on a machine that has never seen the fleet's file.

Unlike the cluster YAML (link classes per region pair), every node and every directed link is written out
in order, so reading back gives an equal Cluster — same nodes, same links in the same order, same floats
(JSON writes a float's shortest repr, which reads back to the very same double). Names are not repeated
here: the plan's `cluster_name` / `model_name` are the names."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from planner.cluster import Cluster, Link, Node
from planner.errors import InvalidInput
from planner.formats.profiles import validation_error
from planner.model import ModelSpec


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class _NodeModel(_Strict):
    name: str = Field(min_length=1)
    gpu_type: str = Field(min_length=1)
    region: str = Field(min_length=1)
    nic_in_bytes_per_s: float = Field(gt=0)
    nic_out_bytes_per_s: float = Field(gt=0)


class _LinkModel(_Strict):
    src: str = Field(min_length=1)
    dst: str = Field(min_length=1)
    bandwidth_bytes_per_s: float = Field(gt=0)
    latency_s: float = Field(ge=0)


class ClusterModel(_Strict):
    """A plan's `cluster` object."""

    coordinator_region: str = Field(min_length=1)
    coordinator_nic_bytes_per_s: float = Field(gt=0)
    nodes: list[_NodeModel] = Field(min_length=1)
    links: list[_LinkModel]


class ModelModel(_Strict):
    """A plan's `model` object: the sizes the planner and simulator use (ModelSpec), not the HF config."""

    num_layers: int = Field(ge=1)
    hidden_size: int = Field(ge=1)
    num_heads: int = Field(ge=1)
    num_kv_heads: int = Field(ge=1)
    intermediate_size: int = Field(ge=1)
    vocab_size: int = Field(ge=1)
    dtype_bytes: int = Field(ge=1)
    token_bytes: int = Field(ge=1)
    layer_bytes_override: int | None = Field(default=None, ge=1)
    activation_bytes_override: int | None = Field(default=None, ge=1)


# ------------------------------------------------------------------------------------------ write


def cluster_to_plain(cluster: Cluster) -> dict[str, Any]:
    return {
        "coordinator_region": cluster.coordinator_region,
        "coordinator_nic_bytes_per_s": float(cluster.coordinator_nic_bytes_per_s),
        "nodes": [
            {
                "name": n.name,
                "gpu_type": n.gpu_type,
                "region": n.region,
                "nic_in_bytes_per_s": float(n.nic_in_bytes_per_s),
                "nic_out_bytes_per_s": float(n.nic_out_bytes_per_s),
            }
            for n in cluster.nodes
        ],
        "links": [
            {
                "src": lk.src,
                "dst": lk.dst,
                "bandwidth_bytes_per_s": float(lk.bandwidth_bytes_per_s),
                "latency_s": float(lk.latency_s),
            }
            for lk in cluster.links
        ],
    }


def model_to_plain(model: ModelSpec) -> dict[str, Any]:
    out = asdict(model)
    del out["name"]
    return out


# ------------------------------------------------------------------------------------------- read


def cluster_from_plain(data: Any, *, name: str, source: str, field: str = "cluster") -> Cluster:
    """A Cluster from its plan form; errors name `source` and the field below `field`."""
    if not isinstance(data, dict):
        raise InvalidInput(f"expected an object, got {type(data).__name__}", source=source, field=field)
    try:
        parsed = ClusterModel.model_validate(data)
    except ValidationError as exc:
        raise _nested(validation_error(exc, source), field) from None
    nodes: list[Node] = []
    for i, n in enumerate(parsed.nodes):
        try:
            nodes.append(Node(n.name, n.gpu_type, n.region, n.nic_in_bytes_per_s, n.nic_out_bytes_per_s))
        except InvalidInput as exc:
            raise InvalidInput(exc.detail, source=source, field=f"{field}.nodes.{i}") from None
    links: list[Link] = []
    for i, lk in enumerate(parsed.links):
        try:
            links.append(Link(lk.src, lk.dst, lk.bandwidth_bytes_per_s, lk.latency_s))
        except InvalidInput as exc:
            raise InvalidInput(exc.detail, source=source, field=f"{field}.links.{i}") from None
    try:
        return Cluster(
            nodes=tuple(nodes),
            links=tuple(links),
            name=name,
            coordinator_region=parsed.coordinator_region,
            coordinator_nic_bytes_per_s=parsed.coordinator_nic_bytes_per_s,
            meta={"source": source, "format": "plan-embedded"},
        )
    except InvalidInput as exc:
        # Duplicates and dangling link ends: the message names the node or link.
        raise InvalidInput(exc.detail, source=source, field=field) from None


def model_from_plain(data: Any, *, name: str, source: str, field: str = "model") -> ModelSpec:
    if not isinstance(data, dict):
        raise InvalidInput(f"expected an object, got {type(data).__name__}", source=source, field=field)
    try:
        parsed = ModelModel.model_validate(data)
    except ValidationError as exc:
        raise _nested(validation_error(exc, source), field) from None
    if parsed.hidden_size % parsed.num_heads or parsed.num_heads % parsed.num_kv_heads:
        raise InvalidInput(
            "hidden_size must be a multiple of num_heads, and num_heads of num_kv_heads",
            source=source,
            field=f"{field}.num_heads",
        )
    return ModelSpec(name=name, **parsed.model_dump())


def _nested(exc: InvalidInput, field: str) -> InvalidInput:
    inner = f"{field}.{exc.field}" if exc.field else field
    return InvalidInput(exc.detail, source=exc.source, field=inner)
