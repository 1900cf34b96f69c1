"""Backend registry: `--backend` names to factories. vLLM is imported only when its backend is built."""

from __future__ import annotations

from collections.abc import Callable

from planner.errors import UnknownName
from services.worker.backends.base import Backend, ShardSpec

Factory = Callable[[ShardSpec], Backend]
_FACTORIES: dict[str, Factory] = {}


def register_backend(name: str) -> Callable[[Factory], Factory]:
    def deco(factory: Factory) -> Factory:
        _FACTORIES[name] = factory
        return factory

    return deco


@register_backend("torch")
def _torch(spec: ShardSpec) -> Backend:
    from services.worker.backends.torch_backend import TorchBackend

    return TorchBackend(spec)


@register_backend("vllm")
def _vllm(spec: ShardSpec) -> Backend:
    from services.worker.backends.vllm_backend import VllmBackend  # heavy: only when asked for

    return VllmBackend(spec)


def backend_names() -> tuple[str, ...]:
    return tuple(sorted(_FACTORIES))


def make_backend(name: str, spec: ShardSpec) -> Backend:
    factory = _FACTORIES.get(name)
    if factory is None:
        raise UnknownName("backend", name, backend_names(), field="backend")
    return factory(spec)
