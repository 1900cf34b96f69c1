"""The one error table: every row is reachable, it is the only mapping (the coordinator and the job services
answer each error class identically over real HTTP, gRPC codes come from the same rows), and a placement
that cannot route is the caller's error (422) while NoRoute itself stays 503."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import httpx
import pytest
from fastapi import FastAPI
from pydantic import BaseModel

import services.coordinator.errors as coordinator_errors
from planner.errors import CapacityExceeded, InfeasiblePlan, InvalidInput, NoRoute, Unavailable, UnknownName
from services import grpc_errors
from services.coordinator.routes import install_errors as install_coordinator_errors
from services.errors_table import (
    ERROR_TABLE,
    GENERIC_5XX,
    INTERNAL,
    BodyTooLarge,
    Conflict,
    InfeasiblePlacement,
    InvalidBody,
    MethodNotAllowed,
    ModelNotFound,
    NotFound,
    Unauthorized,
    UnroutablePlacement,
    error_id,
    evaluating_user_placement,
    kind_of,
)
from services.jobs.http import install as install_job_errors
from services.jobs.serving import RunningServers

SERVICES = Path(__file__).resolve().parents[2] / "services"

# One fresh instance per row of the table, most specific first, and an error no row covers.
SAMPLES: list[Callable[[], BaseException]] = [
    lambda: Unauthorized("missing or wrong API key"),
    lambda: ModelNotFound("model", "gpt-5", ["smollm2-135m"], field="model"),
    lambda: NotFound("plan", "f" * 32),
    lambda: MethodNotAllowed("method not allowed: PUT /v1/plans"),
    lambda: Conflict("plan x is running"),
    lambda: BodyTooLarge("over the limit", field="body"),
    lambda: InvalidBody("time_limit_s: must be > 0", field="time_limit_s"),
    lambda: UnknownName("placement method", "genius", ["petals"], field="method"),
    lambda: InvalidInput("must be >= 1", field="max_tokens"),
    lambda: UnroutablePlacement("no chain covers layers [0, 4)", uncovered=((0, 4),)),
    lambda: InfeasiblePlacement("node n0 holds 90 layers"),
    lambda: CapacityExceeded("queue full", retry_after_s=2.2),
    lambda: NoRoute("no live chain covers layers [12, 30)"),
    lambda: Unavailable("planner unreachable"),
    lambda: InfeasiblePlan("the fleet cannot hold the model"),
    lambda: RuntimeError("boom: secret internals"),
]
CAPACITY = 11  # the CapacityExceeded sample


def test_every_row_is_reached_by_its_own_class() -> None:
    """A row shadowed by a more general one above it would never answer: each class gets its own row."""
    by_class = {type(make()): make for make in SAMPLES}
    for cls, kind in ERROR_TABLE:
        assert cls in by_class, f"no sample for {cls.__name__}"
        assert kind_of(by_class[cls]()) is kind, cls.__name__
    assert kind_of(RuntimeError("x")) is INTERNAL


def test_the_coordinator_has_no_table_of_its_own() -> None:
    assert coordinator_errors.ERROR_TABLE is ERROR_TABLE
    assert coordinator_errors.kind_of is kind_of
    assert coordinator_errors.AuthenticationFailed is Unauthorized
    assert coordinator_errors.NotFound is NotFound
    # No other service module spells an OpenAI error type or builds a mapping row.
    needles = ("ErrorKind(", '"invalid_request_error"', '"rate_limit_error"', '"service_unavailable"')
    offenders = [
        f"{path.relative_to(SERVICES)}: {needle}"
        for path in SERVICES.rglob("*.py")
        if path.name != "errors_table.py"
        for needle in needles
        if needle in path.read_text()
    ]
    assert offenders == []


class Body(BaseModel):
    n: int


def _app(install: Callable[[FastAPI], None]) -> FastAPI:
    app = FastAPI()
    install(app)

    @app.get("/raise/{index}")
    def raise_sample(index: int) -> None:
        raise SAMPLES[index]()

    @app.post("/body")
    def body(payload: Body) -> dict[str, int]:
        return {"n": payload.n}

    return app


@pytest.fixture(scope="module")
def servers() -> Iterator[list[RunningServers]]:
    """The job services' and the coordinator's HTTP error handling, each on a real loopback server."""
    running = [
        RunningServers(
            app, host="127.0.0.1", port=0, grpc_spec=None, on_close=lambda: None
        ).start_background()
        for app in (
            _app(lambda app: install_job_errors(app, max_body_bytes=10_000)),
            _app(install_coordinator_errors),
        )
    ]
    try:
        yield running
    finally:
        for s in running:
            s.stop()


@pytest.fixture
def both(servers: list[RunningServers]) -> Iterator[tuple[httpx.Client, httpx.Client]]:
    """Fresh clients per test: after an internal error the server closes that connection, and a pooled one
    reused by the next test could meet the reset."""
    with (
        httpx.Client(base_url=servers[0].base_url, timeout=10) as jobs,
        httpx.Client(base_url=servers[1].base_url, timeout=10) as coordinator,
    ):
        yield jobs, coordinator


def test_both_services_answer_each_error_class_the_same(both: tuple[httpx.Client, httpx.Client]) -> None:
    jobs, coordinator = both
    # First: the internal-error sample (last) makes the server close its connection after answering.
    full = jobs.get(f"/raise/{CAPACITY}")
    assert full.headers["retry-after"] == "3"  # 2.2 s, rounded up: never invite an early retry
    for index, make in enumerate(SAMPLES):
        exc, kind = make(), kind_of(make())
        answers = [client.get(f"/raise/{index}") for client in (jobs, coordinator)]
        for answer in answers:
            error = answer.json()["error"]
            assert (answer.status_code, error["type"], error["code"]) == (
                kind.http_status,
                kind.openai_type,
                kind.code,
            ), type(exc).__name__
            assert error["param"] == getattr(exc, "field", None)
            if kind.http_status >= 500:
                # A generic text per code and the id its log entry carries; never the exception's text.
                generic = GENERIC_5XX.get(kind.code, GENERIC_5XX["internal_error"])
                assert re.fullmatch(re.escape(generic) + r" \(error id [0-9a-f]{16}\)", error["message"])
                assert "secret" not in error["message"]
            else:
                assert error["message"] == str(exc)
        without_ids = [re.sub(r"error id [0-9a-f]+", "", a.text) for a in answers]
        assert without_ids[0] == without_ids[1]
        assert answers[0].headers.get("retry-after") == answers[1].headers.get("retry-after")


def test_framework_errors_go_through_the_table(both: tuple[httpx.Client, httpx.Client]) -> None:
    jobs, coordinator = both
    for client in both:
        missing = client.get("/nowhere")
        assert missing.status_code == kind_of(NotFound("route", "x")).http_status
        assert "/nowhere" in missing.json()["error"]["message"]
        wrong = client.put("/body", json={"n": 1})
        assert wrong.status_code == kind_of(MethodNotAllowed("x")).http_status
    # The one difference between the services is a difference of type: the job services raise InvalidBody
    # (FastAPI's 422), the OpenAI-compatible coordinator plain InvalidInput (OpenAI's 400).
    for client, cls in ((jobs, InvalidBody), (coordinator, InvalidInput)):
        bad = client.post("/body", json={"n": "many"})
        kind = kind_of(cls("x"))
        assert (bad.status_code, bad.json()["error"]["code"]) == (kind.http_status, kind.code)
        assert bad.json()["error"]["param"] == "n"


def test_grpc_codes_come_from_the_same_rows() -> None:
    assert isinstance(SAMPLES[CAPACITY](), CapacityExceeded)
    for make in SAMPLES:
        exc = make()
        code, details = grpc_errors.status(exc)
        assert code == kind_of(exc).grpc_code
        if kind_of(exc).http_status >= 500:  # a generic text and an id for the log, never the exception's
            generic = GENERIC_5XX.get(kind_of(exc).code, GENERIC_5XX["internal_error"])
            assert details == f"{generic} (error id {error_id(exc)})"
            assert str(exc) not in details
        else:
            assert details == str(exc)
    assert grpc_errors.trailing_metadata(CapacityExceeded("full", retry_after_s=0.2)) == (
        ("retry-after", "1"),
    )
    assert grpc_errors.trailing_metadata(Unavailable("down")) == ()


def test_no_route_while_evaluating_a_placement_is_the_callers_error() -> None:
    with pytest.raises(UnroutablePlacement) as caught, evaluating_user_placement():
        raise NoRoute("no chain covers layers [0, 4)", uncovered=((0, 4),))
    assert caught.value.uncovered == ((0, 4),) and "[0, 4)" in str(caught.value)
    routed = kind_of(caught.value)
    serving = kind_of(NoRoute("no live chain"))
    assert (routed.http_status, routed.grpc_code) == (422, grpc.StatusCode.FAILED_PRECONDITION)
    assert (serving.http_status, serving.grpc_code) == (503, grpc.StatusCode.UNAVAILABLE)
    with pytest.raises(InfeasiblePlacement), evaluating_user_placement():
        raise InfeasiblePlan("node n0 holds 90 layers")
    assert kind_of(InfeasiblePlacement("x")).http_status == 422
    # Anything else passes through unchanged.
    with pytest.raises(Unavailable), evaluating_user_placement():
        raise Unavailable("down")
