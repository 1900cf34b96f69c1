"""Execution backends of a worker (one interface, a registry keyed by the `--backend` flag)."""

from services.worker.backends.base import Backend, ShardSpec, Work, WorkOut
from services.worker.backends.registry import backend_names, make_backend, register_backend

__all__ = ["Backend", "ShardSpec", "Work", "WorkOut", "backend_names", "make_backend", "register_backend"]
