"""Fuzz a live HTTP service from its own OpenAPI document (schemathesis generates the requests, hypothesis
drives them) and fail on any answer >= 500 or any answer the document does not describe.

Shared by the services' test_fuzz.py files. One call:

    report = fuzz_service(base_url, headers=AUTH, fill=fill, max_examples=20)

- `base_url`: a running server (real uvicorn on 127.0.0.1); its `/openapi.json` is the schema.
- `headers`: sent with every request (e.g. a valid API key, so calls get past auth).
- `fill(case, draw)`: optional; called on each generated case before it is sent, to swap some random
  values for real ones (a bundled fleet name, a known job id) so the data reaches the core logic and not
  only the validators. `draw(strategy)` draws from a hypothesis strategy: draw a boolean to fill only some
  cases, so the rest keep the raw generated data.
- `max_examples`: cases per operation and generation mode (valid bodies, then schema-violating ones).
- `skip`: operations left out, as "METHOD /path" (e.g. one that would stop the server).

Returns the statuses seen per operation ("POST /v1/plans" -> Counter of status codes), so a test can also
assert that the data went deep enough (some 2xx). Runs are derandomized: the same code sends the same cases.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Collection, Mapping
from typing import Any, TypeVar

import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import Case, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Err
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

T = TypeVar("T")
Draw = Callable[[st.SearchStrategy[T]], T]
Fill = Callable[[Case, Draw[Any]], None]

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


def operation_key(case_or_method: Case | str, path: str | None = None) -> str:
    """ "POST /v1/plans" for a case (or a method and a path)."""
    if isinstance(case_or_method, str):
        return f"{case_or_method.upper()} {path}"
    return f"{case_or_method.operation.method.upper()} {case_or_method.operation.path}"


def fuzz_service(
    base_url: str,
    *,
    headers: Mapping[str, str],
    fill: Fill | None = None,
    max_examples: int = 20,
    skip: Collection[str] = (),
    timeout_s: float = 30.0,
) -> dict[str, Counter[int]]:
    schema = schemathesis.openapi.from_url(f"{base_url.rstrip('/')}/openapi.json")
    seen: dict[str, Counter[int]] = {}
    for result in schema.get_all_operations():
        if isinstance(result, Err):  # an operation the document describes badly is itself a failure
            raise AssertionError(f"invalid OpenAPI operation: {result.err()}")
        operation = result.ok()
        key = operation_key(operation.method, operation.path)
        if key in skip:
            continue
        counts = seen.setdefault(key, Counter())
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            strategy = operation.as_strategy(generation_mode=mode)
            try:
                _run(strategy, base_url, headers, fill, max_examples, counts, timeout_s)
            except Unsatisfiable:
                # An operation with no parameters and no body has no invalid form to send.
                if mode is GenerationMode.POSITIVE:
                    raise
    return seen


def _run(
    strategy: st.SearchStrategy[Case],
    base_url: str,
    headers: Mapping[str, str],
    fill: Fill | None,
    max_examples: int,
    counts: Counter[int],
    timeout_s: float,
) -> None:
    @settings(
        max_examples=max_examples,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.explicit, Phase.generate],  # no shrinking: a failure is reported as found
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy, data=st.data())
    def run(case: Case, data: st.DataObject) -> None:
        if fill is not None:
            fill(case, data.draw)
        response = case.call(base_url=base_url, headers=dict(headers), timeout=timeout_s)
        counts[response.status_code] += 1
        case.validate_response(response, checks=CHECKS, headers=dict(headers))

    run()
