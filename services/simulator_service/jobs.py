"""The simulator's work, run in a job worker process: the same `simulator.run.simulate` and
`simulator.plots.save_all` as `brl simulate`, on a request made self-contained at submit time (plan JSON,
fleet and model fields, workload), with progress from the simulation's watch lines. With `fail` + `replan`,
the same comparison as `brl simulate --fail N@T --replan` (simulator.replan_compare) and its plot."""

from __future__ import annotations

import csv
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from planner.formats.plan_json import plan_from_dict
from services.jobs.context import JobContext
from services.planner_service.inputs import load_inputs

SIMULATE_TARGET = "services.simulator_service.jobs:simulate_job"
WARM_MODULES = (
    "simulator.run",
    "simulator.plots",
    "simulator.replan_compare",
    "planner.bundled",
    "services.simulator_service.jobs",
)
CONFIG_FIELDS = (
    "mode",
    "policy",
    "duration_s",
    "warmup_s",
    "seed",
    "target_tok_per_s",
    "initial_queries",
    "kv_high_water",
    "kv_output_ratio",
    "throttle",
    "step_overhead_s",
    "coordinator_cpu_s_per_iteration",
    "pipeline_depth",
    "dead_end",
    "engine",
)


def _write_csv(path: Path, header: tuple[str, ...], rows: list[Any]) -> str:
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    return str(path)


def sim_config(request: Mapping[str, Any], tmp: Path) -> Any:
    from simulator.run import SimConfig

    values: dict[str, Any] = {k: request[k] for k in CONFIG_FIELDS if request.get(k) is not None}
    # Inline workloads become CSV files in a private folder: the loaders read names or paths only.
    if request.get("lengths_pairs") is not None:
        values["lengths"] = _write_csv(
            tmp / "lengths.csv", ("input_len", "output_len"), [list(p) for p in request["lengths_pairs"]]
        )
    elif request.get("lengths"):
        values["lengths"] = request["lengths"]
    if request.get("arrival_counts") is not None:
        values["arrivals"] = _write_csv(
            tmp / "arrivals.csv",
            ("interval_idx", "num_requests"),
            [[i, c] for i, c in enumerate(request["arrival_counts"])],
        )
    elif request.get("arrivals"):
        values["arrivals"] = request["arrivals"]
    if request.get("fail"):
        values["failures"] = tuple((str(f["node"]), float(f["at_s"])) for f in request["fail"])
    if request.get("detect_s") is not None:
        values["replan_detect_s"] = float(request["detect_s"])
    if request.get("load_bandwidth_bytes_per_s") is not None:
        values["load_bandwidth_bytes_per_s"] = float(request["load_bandwidth_bytes_per_s"])
    if request.get("hosts"):
        from simulator.host import HostSpec

        values["hosts"] = tuple(
            HostSpec(
                h.get("name", "host"),
                float(h["cores"]),
                tuple(h.get("nodes", ())),
                coordinator=bool(h.get("coordinator", False)),
                background=float(h.get("background", 0.0)),
            )
            for h in request["hosts"]
        )
    return SimConfig(**values)


def simulate_job(request: Mapping[str, Any], ctx: JobContext) -> Mapping[str, Any]:
    from simulator.plots import save_all, save_replan
    from simulator.replan_compare import run_with_replan
    from simulator.run import WatchLine, load_time_s, simulate

    inputs = load_inputs(request)
    plan = plan_from_dict(request["plan"], source="plan")
    with tempfile.TemporaryDirectory(prefix="brl-sim-") as folder:
        tmp = Path(folder)
        config = sim_config(request, tmp)
        resolved = config.resolved()
        duration = float(resolved.duration_s)

        start_s = (
            resolved.load_time_s if resolved.load_time_s is not None else load_time_s(inputs.model, plan)
        )

        def on_watch(line: WatchLine) -> None:
            done = max(0.0, line.time_s - start_s)
            ctx.report(
                sim_time_s=round(line.time_s, 3),
                fraction=round(min(1.0, done / duration), 4),
                active=line.active,
                finished=line.finished,
            )

        compared = None
        if request.get("replan"):
            compared = run_with_replan(
                inputs.cluster,
                inputs.model,
                inputs.profiles,
                plan,
                config,
                replan_time_limit_s=float(request.get("replan_time_limit_s", 10.0)),
                on_watch=on_watch,
            )
            result = compared.with_replan
        else:
            result = simulate(inputs.cluster, inputs.model, inputs.profiles, plan, config, on_watch=on_watch)
        ctx.report(fraction=1.0, finished=result.finished, force=True)
        paths: list[Path] = []
        if request.get("plots", True):
            paths = save_all(result, tmp / "plots")
            if compared is not None:
                paths.append(save_replan(compared.without_replan, result, tmp / "plots" / "replan.png"))
            for path in paths:
                ctx.put_artifact(f"{path.stem}.png", "image/png", path.read_bytes())
    out: dict[str, Any] = {
        "summary": result.summary(),
        "result": result.to_dict(),
        "plots": [p.stem for p in paths],
        "plan_id": request.get("plan_id"),
        "profiles": inputs.profiles_name,
    }
    if compared is not None:
        out["replan"] = {**compared.figures, "without_replan": compared.without_replan.summary()}
    return out
