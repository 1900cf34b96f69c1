"""Live workers: who registered, what they hold, their last heartbeat and real KV use; expiry.

Pure bookkeeping with the clock passed in; the gRPC servicer and the engine call it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from planner.errors import InvalidInput
from planner.placement import LayerRange


@dataclass(frozen=True)
class WorkerInfo:
    name: str
    address: str
    layers: LayerRange
    gpu_type: str
    kv_capacity_tokens: int
    model: str = ""
    backend: str = ""
    speed_factor: float = 1.0


@dataclass(frozen=True)
class IdleWorker:
    """A registered worker that holds no layers (started without a range, or unloaded): alive, serving
    nothing, waiting for a Load from a controller. Kept apart from the serving workers, so no routing or
    KV book ever sees it; `Registry.idle()` lists them."""

    name: str
    address: str
    gpu_type: str
    kv_capacity_tokens: int = 0
    model: str = ""
    backend: str = ""
    speed_factor: float = 1.0
    layers: None = None  # a serving worker's LayerRange; this one has none


@dataclass(frozen=True)
class WorkerState:
    info: WorkerInfo
    registered_at_s: float
    last_seen_s: float
    kv_used_tokens: int = 0
    queue_depth: int = 0


# Fleet events for `watch` listeners: a worker registered for the first time, or was removed (lost,
# expired or deregistered). The listener gets the worker's last state (its last heartbeat time included).
JOINED = "joined"
LOST = "lost"
FleetListener = Callable[[str, WorkerState], None]


class Registry:
    """name -> WorkerState for live workers. `subscribe` listeners fire after any join, leave, range change
    or cordon; `watch` listeners get each join and loss with the worker's state (the rollout controller).
    A cordoned worker is alive (its requests in flight run on) but routing gives it no new request."""

    def __init__(self, clock: Callable[[], float], *, expiry_s: float, num_layers: int) -> None:
        self._clock = clock
        self.expiry_s = expiry_s
        self.num_layers = num_layers
        self._workers: dict[str, WorkerState] = {}
        self._listeners: list[Callable[[], None]] = []
        self._watchers: list[FleetListener] = []
        self._idle: dict[str, tuple[IdleWorker, float]] = {}  # name -> (info, last seen)
        self._cordoned: set[str] = set()
        self.version = 0

    def subscribe(self, listener: Callable[[], None]) -> None:
        self._listeners.append(listener)

    def watch(self, listener: FleetListener) -> None:
        self._watchers.append(listener)

    def _event(self, kind: str, state: WorkerState) -> None:
        for listener in self._watchers:
            listener(kind, state)

    def _changed(self) -> None:
        self.version += 1
        for listener in self._listeners:
            listener()

    def register(self, info: WorkerInfo | IdleWorker) -> bool:
        """Adds or refreshes a worker; True when the fleet's shape changed."""
        if isinstance(info, IdleWorker):
            self._cordoned.discard(info.name)
            was_serving = self._workers.pop(info.name, None) is not None
            is_new = info.name not in self._idle
            self._idle[info.name] = (info, self._clock())
            # A new idle worker (one a controller may give layers) or one unloaded on purpose (its layers
            # leave the fleet; no LOST event: it lives) changes the fleet for `subscribe` listeners.
            if was_serving or is_new:
                self._changed()
            return was_serving or is_new
        self._idle.pop(info.name, None)
        if info.layers.end > self.num_layers:
            raise InvalidInput(
                f"worker {info.name!r} holds layers {info.layers} but the model has {self.num_layers}",
                source="Register",
                field="layer_end",
            )
        if info.kv_capacity_tokens < 1:
            raise InvalidInput(
                f"worker {info.name!r}: kv_capacity_tokens must be >= 1",
                source="Register",
                field="kv_capacity_tokens",
            )
        now = self._clock()
        old = self._workers.get(info.name)
        self._workers[info.name] = WorkerState(info, registered_at_s=now, last_seen_s=now)
        changed = old is None or old.info != info
        if old is not None and old.info.layers != info.layers:
            self._cordoned.discard(info.name)  # it serves its new range: routable again
        if changed:
            self._changed()
        if old is None:
            self._event(JOINED, self._workers[info.name])
        return changed

    def heartbeat(
        self, name: str, *, kv_used_tokens: int, kv_capacity_tokens: int | None = None, queue_depth: int = 0
    ) -> bool:
        """False when the worker is unknown (it must register again)."""
        old = self._workers.get(name)
        if old is None:
            idle = self._idle.get(name)
            if idle is not None:
                self._idle[name] = (idle[0], self._clock())
            return idle is not None
        info = old.info
        if kv_capacity_tokens and kv_capacity_tokens != info.kv_capacity_tokens:
            info = replace(info, kv_capacity_tokens=kv_capacity_tokens)
        self._workers[name] = replace(
            old,
            info=info,
            last_seen_s=self._clock(),
            kv_used_tokens=max(0, kv_used_tokens),
            queue_depth=max(0, queue_depth),
        )
        return True

    def remove(self, name: str) -> bool:
        if self._idle.pop(name, None) is not None:
            return True
        old = self._workers.pop(name, None)
        if old is None:
            return False
        self._cordoned.discard(name)
        self._changed()
        self._event(LOST, old)
        return True

    def cordon(self, name: str) -> bool:
        """New requests stop routing to this serving worker (it is about to unload or to drop its range);
        the ones it runs finish there. Lasts until it registers another range, goes idle or leaves (or
        `uncordon`). False when it is not serving or already cordoned."""
        if name not in self._workers or name in self._cordoned:
            return False
        self._cordoned.add(name)
        self._changed()
        return True

    def uncordon(self, name: str) -> None:
        if name in self._cordoned:
            self._cordoned.discard(name)
            self._changed()

    def cordoned(self) -> frozenset[str]:
        return frozenset(self._cordoned)

    def routable(self) -> dict[str, WorkerState]:
        """The serving workers new requests may route to: `alive()` less the cordoned ones."""
        return {n: w for n, w in self._workers.items() if n not in self._cordoned}

    def expire(self) -> list[str]:
        """Drops workers silent for longer than expiry_s; returns their names."""
        cutoff = self._clock() - self.expiry_s
        silent_idle = [n for n, (_, seen_s) in self._idle.items() if seen_s < cutoff]
        for name in silent_idle:
            del self._idle[name]
        lost = [n for n, w in self._workers.items() if w.last_seen_s < cutoff]
        states = [self._workers.pop(name) for name in lost]
        self._cordoned -= set(lost)
        if lost:
            self._changed()
        for state in states:
            self._event(LOST, state)
        return lost

    def get(self, name: str) -> WorkerState | None:
        return self._workers.get(name)

    def alive(self) -> dict[str, WorkerState]:
        return dict(self._workers)

    def idle(self) -> dict[str, IdleWorker]:
        """Live workers that hold no layers (not in `alive()`): the ones a controller can give a range."""
        return {name: info for name, (info, _) in self._idle.items()}

    def names(self) -> list[str]:
        return sorted(self._workers)

    def address(self, name: str) -> str | None:
        w = self._workers.get(name)
        return w.info.address if w else None

    def uncovered(self, *, routable_only: bool = False) -> list[tuple[int, int]]:
        """Layer runs no live worker holds (`routable_only`: no worker new requests may route to)."""
        counts = [0] * self.num_layers
        for w in (self.routable() if routable_only else self._workers).values():
            for layer in range(w.info.layers.start, w.info.layers.end):
                counts[layer] += 1
        runs: list[tuple[int, int]] = []
        start: int | None = None
        for layer, c in enumerate([*counts, 1]):
            if c == 0 and start is None:
                start = layer
            elif c and start is not None:
                runs.append((start, layer))
                start = None
        return runs

    def kv_usage_max(self) -> float:
        """Fraction of KV used on the fullest live worker (what limits admission)."""
        fr = [
            w.kv_used_tokens / w.info.kv_capacity_tokens
            for w in self._workers.values()
            if w.info.kv_capacity_tokens > 0
        ]
        return max(fr, default=0.0)
