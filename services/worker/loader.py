"""A worker's live Load: serve another layer range without dropping the requests already running.

Beside (old + new fit the layer budget): the missing tensors are read in a thread of their own while the
old range keeps stepping; they are installed between two steps and the new range takes new requests at
once; the old range drains and its extra layers are freed when its last request ends. Drained first
(they do not fit): the old range takes no new request, its running requests finish, what the new range
does not need is freed, then the missing tensors are read. Unloaded (the empty range [0, 0)): the worker
takes no new request, its running ones finish (or are released, with force) and every layer is freed; it
stays registered, holding nothing, until the next Load. See Load in protos/worker.proto.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from planner.errors import InvalidInput
from services.errors_table import Conflict
from services.worker.backends.base import Backend
from services.worker.batcher import Batcher
from services.worker.checkpoint import layer_of
from services.worker.ranges import (
    EMPTY,
    LOAD_UNLOADED,
    Ranges,
    Span,
    drained,
    is_empty,
    load_mode,
    overlap,
    within,
)
from services.worker.records import (
    LOAD_BESIDE,
    LOAD_DRAINED_FIRST,
    LOAD_REPLACED,
    LOAD_UNCHANGED,
    LoadOrder,
    LoadReport,
    WorkerInfo,
    WorkerStats,
)

log = logging.getLogger("brl.worker.loader")
Rebuild = Callable[[LoadOrder], Callable[[], Backend]]
InfoFn = Callable[[], WorkerInfo]
# How often a drain checks whether the old range's last request has ended (cheap: a scan of a dict).
_DRAIN_POLL_S = 0.01


@dataclass(frozen=True)
class LoadFigures:
    last_load_s: float = 0.0
    last_load_layers: int = 0
    load_s_per_layer: float = 0.0  # from the last load that read at least one layer


class LayerLoader:
    def __init__(
        self, batcher: Batcher, *, rebuild: Rebuild, info: InfoFn, max_loaded_layers: int | None = None
    ) -> None:
        self.batcher = batcher
        self.rebuild = rebuild
        self.info = info
        self.max_loaded_layers = max_loaded_layers
        self.figures = LoadFigures()
        self._busy = False
        self._drops: set[asyncio.Task[None]] = set()
        if is_empty(batcher.ranges.serving):
            batcher.ranges = Ranges(serving=None)  # a worker started with no layers serves nothing yet

    def stats(self, base: WorkerStats) -> WorkerStats:
        r = self.batcher.ranges
        return replace(
            base,
            serving=() if r.serving is None else (r.serving,),
            draining=() if r.draining is None else (r.draining,),
            loading=r.loading is not None,
            loading_range=r.loading,
            held_layers=self.batcher.backend.held_layer_count(),
            load_s_per_layer=self.figures.load_s_per_layer,
            last_load_layers=self.figures.last_load_layers,
            last_load_s=self.figures.last_load_s,
        )

    async def load(self, order: LoadOrder) -> LoadReport:
        b = self.batcher
        backend = b.backend
        if self._busy or b.ranges.loading is not None or b.ranges.draining is not None:
            r = b.ranges
            doing = f"loading [{r.loading[0]},{r.loading[1]})" if r.loading else "draining its old range"
            raise Conflict(f"this worker is still {doing}; retry once it is done")
        if (order.model and order.model != backend.spec.model) or (
            order.backend and order.backend != backend.name
        ):
            self._busy = True
            try:
                await b.replace_backend(self.rebuild(order), force=order.force)
            finally:
                self._busy = False
            return LoadReport(self.info(), LOAD_REPLACED)
        new = (order.start_layer, order.end_layer)
        if new != EMPTY and not 0 <= new[0] < new[1] <= backend.shape.num_layers:
            raise InvalidInput(
                f"layers [{new[0]},{new[1]}) are not within the model's {backend.shape.num_layers} layers "
                "(the empty range [0,0) unloads every layer)",
                field="end_layer" if new[0] >= 0 else "start_layer",
            )
        old = b.ranges.serving
        if new == old or (new == EMPTY and old is None and not backend.held_layers()):
            return LoadReport(self.info(), LOAD_UNCHANGED)
        if not backend.live_load:
            raise Conflict(
                f"the {backend.name} backend cannot change its layers while serving (its slice is built "
                f"when the engine starts); restart this worker with --layers {new[0]}:{new[1]}"
            )
        if new == EMPTY:
            return await self._unload(old, force=order.force)
        held_count = None if backend.reuses_held_layers else backend.held_layer_count()
        mode = load_mode(backend.held_layers(), new, self.max_loaded_layers, held_count=held_count)
        self._busy = True
        try:
            drain_s = 0.0
            if mode == LOAD_DRAINED_FIRST:
                drain_s = await self._drain_first(old, new, force=order.force)
            else:
                b.ranges = Ranges(serving=old, loading=new)
            started = time.perf_counter()
            try:
                held = backend.held_tensors()
                staged = await asyncio.to_thread(backend.read_layers, new[0], new[1], held)
                await b.in_step_thread(lambda: backend.install(staged, new[0], new[1]))
            except BaseException:
                b.ranges = Ranges(serving=old if mode == LOAD_BESIDE else None)
                raise
            load_s = time.perf_counter() - started
            tensors = backend.staged_names(staged)
            layers = len({i for n in tensors if (i := layer_of(n)) is not None})
            self._record(load_s, layers)
            # The old range drains unless the new one holds it all and reuses its layers (and KV).
            reused = old is not None and within(*old, new) and backend.reuses_held_layers
            leftover = old if mode == LOAD_BESIDE and old is not None and not reused else None
            b.ranges = Ranges(serving=new, draining=leftover)
            if leftover is not None:
                task = asyncio.get_running_loop().create_task(self._drop_when_drained(new))
                self._drops.add(task)
                task.add_done_callback(self._drops.discard)
            log.info("now serving layers [%d,%d) (%s, %d layers read in %.3f s)", *new, mode, layers, load_s)
            return LoadReport(
                self.info(),
                mode,
                layers_read=layers,
                tensors_read=tensors,
                load_s=load_s,
                drain_s=drain_s,
                draining=() if leftover is None else (leftover,),
            )
        finally:
            self._busy = False

    async def close(self) -> None:
        for task in list(self._drops):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # --- steps of a load -------------------------------------------------------------------------------

    async def _unload(self, old: Span | None, *, force: bool) -> LoadReport:
        """Frees every layer once the requests running here end (or are released, with force)."""
        b = self.batcher
        self._busy = True
        try:
            b.ranges = Ranges(serving=None, draining=old)
            started = time.perf_counter()
            if force:
                b.release(b.request_ids())
            await self._until_drained(EMPTY)
            freed = await b.in_step_thread(lambda: b.backend.keep_only([]))
            b.ranges = Ranges(serving=None)
            drain_s = time.perf_counter() - started
            log.info("unloaded: %d layers freed after %.3f s of draining", freed, drain_s)
            return LoadReport(self.info(), LOAD_UNLOADED, drain_s=drain_s)
        finally:
            self._busy = False

    async def _drain_first(self, old: Span | None, new: Span, *, force: bool) -> float:
        """The old range stops taking requests; once its running ones end (or are released, with force),
        everything the new range does not reuse is freed. Returns the seconds spent waiting."""
        b = self.batcher
        b.ranges = Ranges(serving=None, draining=old, loading=new)
        started = time.perf_counter()
        if force:
            b.release([rid for rid in b.request_ids()])
        # A backend whose new range reads every layer again keeps nothing of the old one.
        reuses = b.backend.reuses_held_layers
        await self._until_drained(new if reuses else EMPTY)
        kept = overlap(old, new) if reuses else None
        await b.in_step_thread(lambda: b.backend.keep_only([] if kept is None else [kept]))
        return time.perf_counter() - started

    async def _drop_when_drained(self, new: Span) -> None:
        b = self.batcher
        if b.backend.reuses_held_layers:
            await self._until_drained(new)
        else:  # requests on the old runner may lie inside the new range: wait for that runner to empty
            while b.backend.requests_on_old_layers():
                await asyncio.sleep(_DRAIN_POLL_S)
        freed = await b.in_step_thread(lambda: b.backend.keep_only([new]))
        b.ranges = Ranges(serving=new)
        log.info("old range drained: %d layers freed", freed)

    async def _until_drained(self, target: Span) -> None:
        while not drained(self.batcher.active_spans(), target):
            await asyncio.sleep(_DRAIN_POLL_S)

    def _record(self, load_s: float, layers: int) -> None:
        per_layer = load_s / layers if layers else self.figures.load_s_per_layer
        self.figures = LoadFigures(last_load_s=load_s, last_load_layers=layers, load_s_per_layer=per_layer)
