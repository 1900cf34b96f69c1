"""The schema of the cluster YAML (pydantic, constrained fields): what each key may hold. The format itself,
with an example and its units, is described in planner.formats.cluster_yaml."""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

DEFAULT_NIC_BYTES_PER_S = 10e9
DEFAULT_REGION = "default"
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$"
MS = 1e-3  # multiply, never divide: `55 * 1e-3` is how the paper's ini files produce latencies


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LinkClass(_Strict):
    bandwidth_bytes_per_s: float = Field(gt=0, allow_inf_nan=False)
    latency_ms: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    latency_s: float | None = Field(default=None, ge=0, allow_inf_nan=False)

    @model_validator(mode="after")
    def _one_latency(self) -> LinkClass:
        if (self.latency_ms is None) == (self.latency_s is None):
            raise ValueError("give exactly one of latency_ms or latency_s")
        return self

    def seconds(self) -> float:
        return self.latency_s if self.latency_s is not None else float(self.latency_ms or 0.0) * MS


class RegionPair(LinkClass):
    regions: tuple[str, str]


class LinkOverride(_Strict):
    nodes: tuple[str, str]
    directed: bool = False
    absent: bool = False
    bandwidth_bytes_per_s: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    latency_ms: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    latency_s: float | None = Field(default=None, ge=0, allow_inf_nan=False)

    @model_validator(mode="after")
    def _values(self) -> LinkOverride:
        has_values = any(v is not None for v in (self.bandwidth_bytes_per_s, self.latency_ms, self.latency_s))
        if self.absent and has_values:
            raise ValueError("an absent link takes no bandwidth or latency")
        if not self.absent:
            if self.bandwidth_bytes_per_s is None:
                raise ValueError("give bandwidth_bytes_per_s (or absent: true)")
            if (self.latency_ms is None) == (self.latency_s is None):
                raise ValueError("give exactly one of latency_ms or latency_s")
        return self

    def as_class(self) -> LinkClass:
        return LinkClass(
            bandwidth_bytes_per_s=float(self.bandwidth_bytes_per_s or 0.0),
            latency_ms=self.latency_ms,
            latency_s=self.latency_s,
        )


class NodeGroup(_Strict):
    gpu_type: str = Field(pattern=NAME_PATTERN)
    count: int = Field(ge=1)
    region: str = Field(default=DEFAULT_REGION, pattern=NAME_PATTERN)
    name_prefix: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
    names: list[str] | None = None
    nic_in_bytes_per_s: float = Field(default=DEFAULT_NIC_BYTES_PER_S, gt=0, allow_inf_nan=False)
    nic_out_bytes_per_s: float = Field(default=DEFAULT_NIC_BYTES_PER_S, gt=0, allow_inf_nan=False)

    @field_validator("names")
    @classmethod
    def _names(cls, v: list[str] | None) -> list[str] | None:
        for n in v or []:
            if not re.match(NAME_PATTERN, n):
                raise ValueError(f"bad node name {n!r}: letters, digits and _ . + - only")
        return v

    @model_validator(mode="after")
    def _count(self) -> NodeGroup:
        if self.names is not None and len(self.names) != self.count:
            raise ValueError(f"names lists {len(self.names)} nodes but count is {self.count}")
        if self.names is not None and self.name_prefix is not None:
            raise ValueError("give names or name_prefix, not both")
        return self


class Coordinator(_Strict):
    region: str = Field(default=DEFAULT_REGION, pattern=NAME_PATTERN)
    nic_bytes_per_s: float = Field(default=DEFAULT_NIC_BYTES_PER_S, gt=0, allow_inf_nan=False)


class Links(_Strict):
    intra_region: LinkClass | None = None
    inter_region: LinkClass | None = None
    regions: dict[str, LinkClass] = Field(default_factory=dict)
    region_pairs: list[RegionPair] = Field(default_factory=list)
    overrides: list[LinkOverride] = Field(default_factory=list)


class ClusterFile(_Strict):
    name: str | None = Field(default=None, pattern=NAME_PATTERN)
    coordinator: Coordinator = Field(default_factory=Coordinator)
    node_groups: list[NodeGroup] = Field(min_length=1)
    links: Links
