"""Hidden states between hops: torch tensors <-> WireTensor bytes (any dtype, no numpy round trip)."""

from __future__ import annotations

import torch

from services.worker.backends.base import DTYPES
from services.worker.records import WireTensor

_NAMES = {dtype: name for name, dtype in DTYPES.items()}


def to_wire(t: torch.Tensor) -> WireTensor:
    t = t.detach().contiguous()
    return WireTensor(data=t.view(torch.uint8).numpy().tobytes(), dtype=_NAMES[t.dtype], shape=tuple(t.shape))


def from_wire(w: WireTensor) -> torch.Tensor:
    """The tensor (a private copy: the message's bytes are immutable). Shape and dtype checked before."""
    return torch.frombuffer(bytearray(w.data), dtype=DTYPES[w.dtype]).view(w.shape)
