"""The compiled engine (simulator/_fastcore.c): the event loop, the workers, the links and the coordinator's
per-token cycle in C, the same model step for step, so a run gives the same figures bit for bit (tests/
simulator/test_fast_engine.py runs both engines). Admission, routing, KV books, feeding and reports stay in
Python: they run once per query, not once per token and hop, which is what a 1,000-GPU run is made of.

It is built when the package is installed with a C compiler at hand (setup.py: an optional extension);
without it every run takes the Python engine. It covers the runs the paper's simulator makes: none of the
real-deployment extras (throttles, shared hosts, coordinator CPU, BRL's chain steps), no failures, no
per-token callbacks and no policy that learns hop times (`which_engine` says why a run cannot use it)."""

from __future__ import annotations

import gc
import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from planner.errors import InvalidInput
from planner.routing.base import RoutingPolicy
from simulator.engine import EventLoop
from simulator.metrics import _NBINS, LatencyHistogram, Metrics

if TYPE_CHECKING:
    from simulator.config import SimConfig

ENGINES = ("auto", "python", "compiled")
SOURCE = Path(__file__).with_name("_fastcore.c")


def _load() -> tuple[Any, str | None]:
    """The compiled module, or None and why not."""
    try:
        from simulator import _fastcore
    except ImportError:  # installed without a C compiler: the Python engine runs everything
        return None, "it is not built (install the package where a C compiler is at hand: make setup)"
    # From a source tree (an editable install), a build older than its source would run old code.
    if SOURCE.exists() and _fastcore.SOURCE_SHA != hashlib.sha256(SOURCE.read_bytes()).hexdigest():
        return None, f"its build is older than {SOURCE.name} (rebuild: make setup, or pip install -e .)"
    return _fastcore, None


_fastcore, _missing = _load()


def available() -> bool:
    return _fastcore is not None


def unsupported(cfg: SimConfig, policy: RoutingPolicy, per_token_callback: bool) -> str | None:
    """Why the compiled engine cannot run this simulation (None: it can)."""
    if _missing is not None:
        return _missing
    extras = [
        name
        for name, used in (
            ("throttle", any(s != 1.0 for s in (cfg.throttle or {}).values())),
            ("hosts", bool(cfg.hosts)),
            ("coordinator_cpu_s_per_iteration", cfg.coordinator_cpu_s_per_iteration > 0),
            ("pipeline_depth", cfg.pipeline_depth is not None),
            ("failures", bool(cfg.failures)),
        )
        if used
    ]
    if extras:
        return f"it does not model {', '.join(extras)}"
    if per_token_callback:
        return "a per-token callback (on_iteration) is set"
    if type(policy).observe is not RoutingPolicy.observe:
        return f"the {cfg.policy!r} policy learns from every hop's time"
    return None


def which_engine(cfg: SimConfig, policy: RoutingPolicy, per_token_callback: bool) -> str:
    """ "python" or "compiled" for `cfg.engine` ("auto": compiled where it can run)."""
    if cfg.engine == "python":
        return "python"
    why = unsupported(cfg, policy, per_token_callback)
    if why is None:
        return "compiled"
    if cfg.engine == "compiled":
        raise InvalidInput(f"the compiled engine cannot run this simulation: {why}", field="engine")
    return "python"


class FastLoop(EventLoop):
    """simulator.engine.EventLoop's interface over the compiled core; the metrics window is the core's.
    It has no `_heap`: Python code that pushes events itself (the Python engine's hot path) fails loudly
    here rather than schedule beside the core."""

    def __init__(self, start_s: float, metrics: Metrics) -> None:  # no super().__init__: no Python heap
        assert _fastcore is not None
        self.core = _fastcore.Core(
            start_s, metrics.window_start_s, metrics.window_end_s, metrics.bin_s, _NBINS
        )
        self.metrics = metrics
        self.core_error: type[Exception] = _fastcore.ClockError

    @property  # type: ignore[override]
    def now(self) -> float:
        return float(self.core.now)

    @now.setter
    def now(self, value: float) -> None:
        raise AttributeError("the compiled engine's clock moves only by its events")

    @property  # type: ignore[override]
    def handled(self) -> int:
        return int(self.core.handled)

    @handled.setter
    def handled(self, value: int) -> None:
        raise AttributeError("the compiled engine counts its events itself")

    def schedule(self, time_s: float, fn: Callable[..., None], *args: Any) -> None:
        try:
            self.core.schedule(time_s, fn, *args)
        except self.core_error as e:
            raise InvalidInput(str(e)) from None

    def pending(self) -> int:
        return int(self.core.pending)

    def next_time(self) -> float | None:
        t = self.core.next_time
        return None if t is None else float(t)

    def run(self, until_s: float | None = None, *, stop: Callable[[], bool] | None = None) -> None:
        # What exists now (the fleet, its tables, the policy) lives through the run: the collector need
        # not walk it again and again while the run makes and drops its small objects (a tenth of a
        # 1,000-GPU run's time went there).
        gc.freeze()
        try:
            self.core.run(until_s, stop)
        except self.core_error as e:
            raise InvalidInput(str(e)) from None
        finally:
            gc.unfreeze()
        self.copy_metrics()

    def copy_metrics(self) -> None:
        """Put what the core counted into the Metrics object the reports read."""
        got = self.core.metrics()
        m = self.metrics
        for name in (
            "total_tokens",
            "total_decode_tokens",
            "window_decode_tokens",
            "window_prompt_tokens",
            "last_finish_s",
        ):
            setattr(m, name, got[name])
        m.series = got["series"]
        m.decode_series = got["decode_series"]
        for name in ("prompt", "decode", "ttft"):
            counts, n, total = got[name]
            hist: LatencyHistogram = getattr(m, name)
            hist.counts, hist.n, hist.total = counts, n, total
