"""Pages of a job service (planner, simulator): a job list, a job's page and a compare page under /ui.

Each page is the shared base page of services/web (its login form, key-in-header fetches and polling in
brl.js; no data in it) whose script (static/jobs/pages.js there) fetches a server-rendered fragment under
/ui/fragments: with an API key configured the fragments answer 401 and the page shows the login form. Lists
poll the service's JSON list route; pages of queued or running jobs re-fetch their fragment. Out of the
OpenAPI schema.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Query
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse, RedirectResponse
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from services.jobs.http import api_key_checker
from services.jobs.service import JobService
from services.jobs.store import ACTIVE, Job
from services.web import pages

HERE = Path(__file__).parent
JOB_ID = PathParam(pattern=r"^[0-9a-f]{32}$", description="job id (32 hex digits)")
JOB_ID_QUERY = Query(pattern=r"^[0-9a-f]{32}$", description="job id (32 hex digits)")
# How often a list or an unfinished job's page asks again (the issue asks for at most 2 s).
POLL_MS = 1500
PAGE_BODY = '<div id="job-view" aria-live="polite"><p class="brl-muted">loading…</p></div>'

_env = Environment(
    loader=FileSystemLoader(HERE / "templates"),
    autoescape=select_autoescape(["html"]),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


_env.filters["num"] = _fmt


def render(template: str, **context: Any) -> str:
    return _env.get_template(template).render(**context)


@dataclass(frozen=True)
class PageSpec:
    """What differs between the services: names, the JSON list route the list polls, and how a job's page
    and a comparison of two jobs are rendered (template name and context)."""

    title: str
    plural: str  # the URL noun: "plans" or "simulations"
    json_route: str  # e.g. "/v1/plans"
    detail: Callable[[Job], tuple[str, Mapping[str, Any]]]
    compare: Callable[[Job, Job], tuple[str, Mapping[str, Any]]]


def _page(spec: PageSpec, view: str, fragment: str, heading: str) -> HTMLResponse:
    return pages.render(
        title=f"{spec.title} · {heading}",
        body=PAGE_BODY,
        scripts=[f"{pages.STATIC_URL}/jobs/pages.js"],
        styles=[f"{pages.STATIC_URL}/jobs/pages.css"],
        nav=[(spec.plural, f"/ui/{spec.plural}")],
        config={
            "view": view,
            "fragment": fragment,
            "json": spec.json_route,
            "base": f"/ui/{spec.plural}",
            "poll_ms": POLL_MS,
        },
    )


def install(app: FastAPI, service: JobService, spec: PageSpec) -> None:
    """The shared static files (services/web) and this service's pages and fragments under /ui."""
    pages.mount(app)
    router = APIRouter()
    add_page_routes(router, service, spec)
    app.include_router(router)


def add_page_routes(router: APIRouter, service: JobService, spec: PageSpec) -> None:
    """Pages and fragments under /ui for one job service (the static files come from `pages.mount`)."""
    auth = [Depends(api_key_checker(service.settings.api_key))]
    base = f"/ui/{spec.plural}"
    frag = f"/ui/fragments/{spec.plural}"

    @router.get("/ui", include_in_schema=False)
    def ui_root() -> RedirectResponse:
        return RedirectResponse(base, status_code=307)

    @router.get(base, include_in_schema=False)
    def list_page() -> HTMLResponse:
        return _page(spec, "list", frag, "jobs")

    @router.get(f"{base}/compare", include_in_schema=False)
    def compare_page(a: Annotated[str, JOB_ID_QUERY], b: Annotated[str, JOB_ID_QUERY]) -> HTMLResponse:
        return _page(spec, "compare", f"{frag}/compare?a={a}&b={b}", f"compare {a[:8]} · {b[:8]}")

    @router.get(base + "/{job_id}", include_in_schema=False)
    def job_page(job_id: Annotated[str, JOB_ID]) -> HTMLResponse:
        return _page(spec, "job", f"{frag}/{job_id}", job_id[:8])

    @router.get(frag, include_in_schema=False, dependencies=auth, response_class=HTMLResponse)
    def list_fragment() -> HTMLResponse:
        return HTMLResponse(render("list.html", spec=spec, poll_ms=POLL_MS))

    @router.get(f"{frag}/compare", include_in_schema=False, dependencies=auth, response_class=HTMLResponse)
    def compare_fragment(a: Annotated[str, JOB_ID_QUERY], b: Annotated[str, JOB_ID_QUERY]) -> HTMLResponse:
        template, context = spec.compare(service.get(a), service.get(b))
        return HTMLResponse(render(template, spec=spec, **context))

    @router.get(frag + "/{job_id}", include_in_schema=False, dependencies=auth, response_class=HTMLResponse)
    def job_fragment(job_id: Annotated[str, JOB_ID]) -> HTMLResponse:
        job = service.get(job_id)
        template, context = spec.detail(job)
        html = render(template, spec=spec, job=job, active=job.status in ACTIVE, **context)
        return HTMLResponse(html)
