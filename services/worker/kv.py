"""Per-request KV cache of the torch backend: one growable buffer per request for the layers it runs.

Freed on finish, abort or release. Capacity is counted in tokens (a request of n tokens running any part
of this worker's layers uses n), the unit the coordinator's KV accounting speaks.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

_MIN_SLOTS = 64


@dataclass
class RequestKV:
    """Keys and values of layers [start, end) of one request: [layers, 2, kv_heads, slots, head_dim]."""

    start: int
    end: int
    buffer: torch.Tensor
    length: int = 0

    def layer(self, layer: int, new_tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Views of this layer's keys and values; the first `length + new_tokens` slots are valid."""
        i = layer - self.start
        return self.buffer[i, 0], self.buffer[i, 1]


class KVStore:
    def __init__(self, *, num_kv_heads: int, head_dim: int, dtype: torch.dtype, capacity_tokens: int) -> None:
        self.num_kv_heads = num_kv_heads
        self.head_dim = head_dim
        self.dtype = dtype
        self.capacity_tokens = capacity_tokens
        self._requests: dict[str, RequestKV] = {}

    def __contains__(self, request_id: object) -> bool:
        return request_id in self._requests

    def get(self, request_id: str) -> RequestKV | None:
        return self._requests.get(request_id)

    def used_tokens(self) -> int:
        return sum(kv.length for kv in self._requests.values())

    def has_room(self, new_tokens: int) -> bool:
        return self.used_tokens() + new_tokens <= self.capacity_tokens

    def reserve(self, request_id: str, start: int, end: int, total_tokens: int) -> RequestKV:
        """The request's cache with room for `total_tokens`, created or grown (doubling) as needed."""
        kv = self._requests.get(request_id)
        if kv is None:
            slots = max(_MIN_SLOTS, _next_pow2(total_tokens))
            kv = RequestKV(start, end, self._alloc(end - start, slots))
            self._requests[request_id] = kv
        elif total_tokens > kv.buffer.shape[3]:
            grown = self._alloc(end - start, _next_pow2(total_tokens))
            grown[:, :, :, : kv.length] = kv.buffer[:, :, :, : kv.length]
            kv.buffer = grown
        return kv

    def _alloc(self, layers: int, slots: int) -> torch.Tensor:
        return torch.empty(layers, 2, self.num_kv_heads, slots, self.head_dim, dtype=self.dtype)

    def free(self, request_id: str) -> bool:
        return self._requests.pop(request_id, None) is not None

    def request_ids(self) -> list[str]:
        return list(self._requests)


def _next_pow2(n: int) -> int:
    return 1 << max(0, n - 1).bit_length()
