"""The planner service's pages: its plan jobs listed live, a plan's placement, flow graph and min cut, and
two plans side by side (the page kit is services/jobs/pages.py)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI

from services.jobs.pages import PageSpec
from services.jobs.pages import install as add_pages
from services.jobs.pages_views import plan_of_job
from services.jobs.store import Job
from services.planner_service.service import PlannerService


def _detail(job: Job) -> tuple[str, Mapping[str, Any]]:
    return "plan.html", {"pic": plan_of_job(job)}


def _compare(a: Job, b: Job) -> tuple[str, Mapping[str, Any]]:
    pairs = [(job, plan_of_job(job, graph=False, row_px=11)) for job in (a, b)]
    return "compare_plans.html", {"a": a, "b": b, "pairs": pairs}


def install(app: FastAPI, service: PlannerService) -> None:
    add_pages(app, service, PageSpec("Planner", "plans", "/v1/plans", _detail, _compare))
