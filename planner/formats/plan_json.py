"""Plan JSON: what every service reads and writes. Edge keys are serialised as "u->v"; layer ranges as
[start, end) pairs. Parsing goes through pydantic so a bad file names the field that is wrong.

A plan embeds the fleet (`cluster`: every node and directed link) and the model sizes (`model`) it was
made for, plus the name of the GPU profile set (`profiles`), so it can be simulated, served or sent to a
service anywhere. Plans written before that have none of the three and still load: their `cluster_name` /
`model_name` are then resolved as bundled names by whoever uses them."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from planner.cluster import ENDPOINTS, Cluster
from planner.errors import InvalidInput
from planner.formats import read_text, with_source
from planner.formats.fleet_json import cluster_from_plain, cluster_to_plain, model_from_plain, model_to_plain
from planner.formats.profiles import validation_error
from planner.placement import LayerRange, Placement
from planner.plan import Plan

FORMAT = "brl-plan/1"
EDGE_SEP = "->"


def edge_key(src: str, dst: str) -> str:
    return f"{src}{EDGE_SEP}{dst}"


def parse_edge_key(key: str, *, source: str = "plan") -> tuple[str, str]:
    parts = key.split(EDGE_SEP)
    if len(parts) != 2 or not parts[0] or not parts[1]:
        raise InvalidInput(
            f"expected an edge key 'u->v', got {key!r}", source=source, field=f"edge_flows.{key}"
        )
    return parts[0], parts[1]


class _PlanModel(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format: str = FORMAT
    cluster_name: str = Field(min_length=1)
    model_name: str = Field(min_length=1)
    method: str = Field(min_length=1)
    num_layers: int = Field(ge=1)
    placement: dict[str, tuple[int, int]]
    edge_flows: dict[str, float] = Field(default_factory=dict)
    objective_tok_per_s: float = Field(default=0.0, ge=0)
    bound_tok_per_s: float | None = Field(default=None, ge=0)
    solver_stats: dict[str, Any] = Field(default_factory=dict)
    provenance: dict[str, Any] = Field(default_factory=dict)
    metrics: dict[str, Any] = Field(default_factory=dict)
    cluster: dict[str, Any] | None = None
    model: dict[str, Any] | None = None
    profiles: str | None = Field(default=None, min_length=1)


def _plain(value: Any) -> Any:
    """JSON-safe copy: tuples → lists, non-finite floats → None (strict JSON has no inf/nan)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def plan_to_dict(plan: Plan) -> dict[str, Any]:
    out: dict[str, Any] = {
        "format": FORMAT,
        "cluster_name": plan.cluster_name,
        "model_name": plan.model_name,
        "method": plan.method,
        "num_layers": plan.placement.num_layers,
        "placement": {n: [r.start, r.end] for n, r in plan.placement.ranges.items()},
        "edge_flows": {edge_key(u, v): float(f) for (u, v), f in plan.edge_flows.items()},
        "objective_tok_per_s": float(plan.objective_tok_per_s),
        "bound_tok_per_s": None if plan.bound_tok_per_s is None else float(plan.bound_tok_per_s),
        "solver_stats": _plain(dict(plan.solver_stats)),
        "provenance": _plain(dict(plan.provenance)),
        "metrics": _plain(dict(plan.metrics)),
    }
    if plan.profiles_name is not None:
        out["profiles"] = plan.profiles_name
    if plan.model is not None:
        out["model"] = model_to_plain(plan.model)
    # Last: the fleet is the long part of the file.
    if plan.cluster is not None:
        out["cluster"] = cluster_to_plain(plan.cluster)
    return out


def plan_from_dict(data: Any, *, source: str = "plan") -> Plan:
    if not isinstance(data, dict):
        raise InvalidInput(f"expected a JSON object, got {type(data).__name__}", source=source)
    try:
        parsed = _PlanModel.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc, source) from None
    if parsed.format != FORMAT:
        raise InvalidInput(
            f"expected format {FORMAT!r}, got {parsed.format!r}", source=source, field="format"
        )
    ranges: dict[str, LayerRange] = {}
    for node, (start, end) in parsed.placement.items():
        try:
            ranges[node] = LayerRange(start, end)
        except InvalidInput as exc:
            raise with_source(exc, source, f"placement.{node}") from None
    try:
        placement = Placement(parsed.num_layers, ranges)
    except InvalidInput as exc:
        field = f"placement.{exc.field}" if exc.field else "placement"
        raise InvalidInput(exc.detail, source=source, field=field) from None
    flows: dict[tuple[str, str], float] = {}
    for key, value in parsed.edge_flows.items():
        if not math.isfinite(value) or value < 0:
            raise InvalidInput(
                f"expected a finite flow >= 0 tokens/s, got {value}", source=source, field=f"edge_flows.{key}"
            )
        flows[parse_edge_key(key, source=source)] = value
    cluster = None
    if parsed.cluster is not None:
        cluster = cluster_from_plain(parsed.cluster, name=parsed.cluster_name, source=source)
        _check_fleet(cluster, placement, flows, source)
    model = None
    if parsed.model is not None:
        model = model_from_plain(parsed.model, name=parsed.model_name, source=source)
        if model.num_layers != placement.num_layers:
            raise InvalidInput(
                f"the plan places {placement.num_layers} layers but its model has {model.num_layers}",
                source=source,
                field="model.num_layers",
            )
    return Plan(
        cluster_name=parsed.cluster_name,
        model_name=parsed.model_name,
        method=parsed.method,
        placement=placement,
        edge_flows=flows,
        objective_tok_per_s=parsed.objective_tok_per_s,
        bound_tok_per_s=parsed.bound_tok_per_s,
        solver_stats=parsed.solver_stats,
        provenance=parsed.provenance,
        metrics=parsed.metrics,
        cluster=cluster,
        model=model,
        profiles_name=parsed.profiles,
    )


def _check_fleet(
    cluster: Cluster, placement: Placement, flows: dict[tuple[str, str], float], source: str
) -> None:
    """The embedded fleet must hold every node the placement and the flows name."""
    for node in placement.ranges:
        if not cluster.has_node(node):
            raise InvalidInput(
                f"places node {node!r}, which the plan's cluster {cluster.name!r} lacks",
                source=source,
                field=f"placement.{node}",
            )
    for u, v in flows:
        for end in (u, v):
            if end not in ENDPOINTS and not cluster.has_node(end):
                raise InvalidInput(
                    f"names node {end!r}, which the plan's cluster {cluster.name!r} lacks",
                    source=source,
                    field=f"edge_flows.{edge_key(u, v)}",
                )


def plan_to_json(plan: Plan) -> str:
    return json.dumps(plan_to_dict(plan), indent=1, sort_keys=False, allow_nan=False)


def plan_from_json(text: str, *, source: str = "plan") -> Plan:
    if not text.strip():
        raise InvalidInput("empty; expected a plan JSON object", source=source)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInput(
            f"not valid JSON: {exc.msg} (column {exc.colno})", source=source, field=f"line {exc.lineno}"
        ) from None
    return plan_from_dict(data, source=source)


def save_plan(plan: Plan, path: str | Path) -> None:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(plan_to_json(plan) + "\n", encoding="utf-8")


def load_plan(path: str | Path) -> Plan:
    return plan_from_json(read_text(path), source=str(path))
