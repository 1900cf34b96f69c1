"""A coordinator replica's KV book follows the share of each worker's cache the worker gives it (sent in
heartbeats, services/worker/leases.py): requests in flight keep their charges, admission uses the share."""

from __future__ import annotations

import time

import pytest

from planner import bundled
from planner.errors import InvalidInput
from planner.placement import LayerRange
from planner.routing import RouteRequest
from services.coordinator.fleet import Fleet
from services.coordinator.main import coordinator_session_id
from services.coordinator.registry import Registry, WorkerInfo
from services.coordinator.settings import from_env


def test_book_follows_the_share_and_keeps_charges() -> None:
    model = bundled.model("smollm2-135m")
    registry = Registry(time.monotonic, expiry_s=60, num_layers=model.num_layers)
    registry.register(WorkerInfo("w0", "127.0.0.1:1", LayerRange(0, model.num_layers), "cpu", 1000))
    fleet = Fleet(registry, model)
    chain = fleet.choose(RouteRequest("req-r0.aaaa-1", 100, 50))
    assert chain is not None
    assert fleet.kv.capacity("w0") == 1000 * model.num_layers
    charged = fleet.kv.used("w0")
    assert charged > 0

    # A second replica registered with w0: it now gives this one half its cache.
    registry.heartbeat("w0", kv_used_tokens=100, kv_capacity_tokens=500)
    assert fleet.choose(RouteRequest("req-r0.aaaa-2", 100, 50)) is not None
    assert fleet.kv.capacity("w0") == 500 * model.num_layers
    assert fleet.kv.charged("req-r0.aaaa-1")  # the request in flight kept its charge on the new book
    # Admission now stops at the share's high-water mark, not the whole cache's.
    admitted = 2
    while fleet.choose(RouteRequest(f"req-r0.aaaa-{admitted + 1}", 100, 50)) is not None:
        admitted += 1
    assert fleet.kv.used("w0") <= 0.9 * 500 * model.num_layers
    assert admitted == 3  # 130 expected tokens each: 3 x 130 = 390 <= 450 < 4 x 130
    # A request the share can never hold is refused up front, naming why.
    assert fleet.never_fits(RouteRequest("big", 400, 200)) is not None


def test_replica_id_starts_every_session_id() -> None:
    assert from_env({}, replica_id="coord-0").replica_id == "coord-0"
    a, b = coordinator_session_id("coord-0"), coordinator_session_id("coord-0")
    assert a.startswith("coord-0.") and b.startswith("coord-0.") and a != b
    assert coordinator_session_id(None)  # default: the host name


def test_a_bad_replica_id_is_refused_naming_the_field() -> None:
    with pytest.raises(InvalidInput) as err:
        from_env({"BRL_REPLICA_ID": "two words"})
    assert err.value.field == "replica_id"
