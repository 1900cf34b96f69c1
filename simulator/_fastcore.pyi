# The compiled core's interface (simulator/_fastcore.c; used only by simulator.fast_engine).
from array import array
from collections.abc import Callable, Sequence
from typing import Any

SOURCE_SHA: str

class ClockError(ValueError): ...

class Core:
    now: float
    handled: int
    pending: int
    next_time: float | None
    def __init__(
        self, start_s: float, window_start_s: float, window_end_s: float, bin_s: float, nbins: int
    ) -> None: ...
    def add_worker(
        self,
        seg_layers: Sequence[int],
        limits: tuple[int, int, int, int],
        cpu_s_per_token: float,
        step_overhead_s: float,
        kv_real: int,
        tables: int,
    ) -> int: ...
    def add_tables(
        self,
        prompt_s: Callable[[int], float],
        decode_s: Callable[[int], float],
        head_s: Callable[[int], float] | None,
    ) -> int: ...
    def add_link(self, s_per_token: float, latency_s: float, free_at: float) -> int: ...
    def add_query(
        self,
        obj: object,
        qid: int,
        input_len: int,
        output_len: int,
        iteration: int,
        t_arrive: float,
        route: Sequence[tuple[int, int, int, int]],
        sink_link: int,
        account: Sequence[tuple[array[float], int, float]],
        on_decode: Callable[[], None] | None,
    ) -> int: ...
    def issue(self, slot: int) -> None: ...
    def issue_at(self, slot: int, time_s: float) -> None: ...
    def set_arrive(self, slot: int, time_s: float) -> None: ...
    def schedule(self, time_s: float, fn: Callable[..., None], *args: Any) -> None: ...
    def set_callbacks(
        self, on_finish: Callable[[Any, float], None], on_prompt_done: Callable[[float], None] | None
    ) -> None: ...
    def run(self, until_s: float | None, stop: Callable[[], bool] | None) -> None: ...
    def queued(self, worker: int) -> int: ...
    def worker(self, worker: int) -> dict[str, Any]: ...
    def link_free_at(self, link: int) -> float: ...
    def metrics(self) -> dict[str, Any]: ...
