"""The simulator service's pages: dry runs listed live, a run's metrics and plots, and two runs side by side
(throughput, latency percentiles, placements). The page kit is services/jobs/pages.py."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI

from services.jobs.pages import PageSpec
from services.jobs.pages import install as add_pages
from services.jobs.pages_views import PERCENTILES, RunFigures, compare_charts, plan_of_job, run_figures
from services.jobs.store import Job
from services.simulator_service.service import SimulatorService

# Rows of the side-by-side table: (key, label); latency keys are "<latency>.<percentile>".
THROUGHPUT_ROWS = (
    ("decode_tok_per_s", "decode tok/s"),
    ("all_tok_per_s", "all tok/s (prompt + decode)"),
    ("max_flow_tok_per_s", "plan max-flow tok/s"),
    ("flow_efficiency", "flow efficiency"),
)
EMPTY = RunFigures({}, {}, {}, (), (), ())


def _detail(job: Job) -> tuple[str, Mapping[str, Any]]:
    return "simulation.html", {
        "run": run_figures(job),
        "pic": plan_of_job(job, graph=False, row_px=11),
        "percentiles": PERCENTILES,
    }


def _name(job: Job, pic: Any) -> str:
    label = job.request.get("label")
    if label:
        return str(label)
    return f"{pic.method} {job.id[:6]}" if pic is not None else job.id[:8]


def _value(run: RunFigures, key: str) -> float | None:
    if "." in key:
        latency, p = key.split(".")
        return run.latency.get(latency, {}).get(p)
    return run.throughput.get(key) if key in run.throughput else run.counts.get(key)


def _compare(a: Job, b: Job) -> tuple[str, Mapping[str, Any]]:
    sides = []
    for job in (a, b):
        pic = plan_of_job(job, graph=False, row_px=11)
        sides.append((job, run_figures(job) or EMPTY, pic, _name(job, pic)))
    rows = list(THROUGHPUT_ROWS)
    for latency in sides[0][1].latency or sides[1][1].latency:
        rows += [(f"{latency}.{p}", f"{latency} latency {p} (s)") for p in PERCENTILES]
    rows += [("finished", "finished requests"), ("rejected", "rejected")]
    values = {key: [_value(side[1], key) for side in sides] for key, _ in rows}
    ratios = {key: (v[1] / v[0] if v[0] and v[1] is not None else None) for key, v in values.items()}
    charts = compare_charts(sides[0][1], sides[1][1], [sides[0][3], sides[1][3]])
    return "compare_simulations.html", {
        "a": a,
        "b": b,
        "sides": sides,
        "rows": rows,
        "values": values,
        "ratios": ratios,
        "charts": charts,
    }


def install(app: FastAPI, service: SimulatorService) -> None:
    add_pages(app, service, PageSpec("Simulator", "simulations", "/v1/simulations", _detail, _compare))
