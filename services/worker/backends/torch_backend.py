"""Our own Llama layer-slice runner: the real safetensors weights of layers [start, end) only, ragged
batches flattened token-major (one matmul per projection for the whole step), attention per request
against its own KV cache.

The arithmetic follows transformers' Llama op for op (RMSNorm in fp32, RoPE from the same inverse
frequencies, SDPA with grouped KV heads), so a chain of shards reproduces the single-process model.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from planner.errors import InvalidInput
from services.worker.backends.base import DTYPES, Backend, ShardSpec, Work, WorkOut
from services.worker.checkpoint import (
    layer_of,
    load_tensors,
    model_shape,
    read_config,
    rope_theta,
    shard_filter,
)
from services.worker.kv import KVStore

# MKL takes a different (GEMV-like) path for fewer than 4 rows, which rounds differently; padding small
# batches to 4 rows makes every request's numbers independent of what it is batched with.
_MIN_ROWS = 4
_EMBED = "model.embed_tokens.weight"


@dataclass(frozen=True)
class _Block:
    input_norm: torch.Tensor
    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    o: torch.Tensor
    post_norm: torch.Tensor
    gate: torch.Tensor
    up: torch.Tensor
    down: torch.Tensor


def _linear(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    rows = x.shape[0]
    if rows >= _MIN_ROWS:
        return F.linear(x, weight)
    padded = torch.cat([x, x.new_zeros(_MIN_ROWS - rows, x.shape[1])])
    return F.linear(padded, weight)[:rows]


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class TorchBackend(Backend):
    name = "torch"

    def __init__(self, spec: ShardSpec) -> None:
        config = read_config(spec.model_dir)
        shape = model_shape(config, str(spec.model_dir / "config.json"))
        super().__init__(spec, shape)
        if not (spec.start == spec.end == 0 or 0 <= spec.start < spec.end <= shape.num_layers):
            raise InvalidInput(
                f"layers [{spec.start},{spec.end}) are outside the model's {shape.num_layers} layers",
                field="layers",
            )
        if spec.dtype not in DTYPES:
            raise InvalidInput(f"dtype {spec.dtype!r}; expected one of {sorted(DTYPES)}", field="dtype")
        self.dtype = DTYPES[spec.dtype]
        self.eps = float(config.get("rms_norm_eps", 1e-6))
        self.scale = shape.head_dim**-0.5
        theta = rope_theta(config)
        # Same expression as transformers' default RoPE, so cos/sin match bit for bit.
        self.inv_freq = 1.0 / (
            theta ** (torch.arange(0, shape.head_dim, 2, dtype=torch.float) / shape.head_dim)
        )
        self.tied = bool(config.get("tie_word_embeddings", False))
        # Every weight held, by checkpoint name; blocks, embeddings and head are views into it, rebuilt
        # when a live Load adds or frees layers.
        self.tensors = {} if spec.start == spec.end else self.read_layers(spec.start, spec.end, frozenset())
        self.blocks: dict[int, _Block] = {}
        self.embed: torch.Tensor | None = None
        self.norm: torch.Tensor | None = None
        self.lm_head: torch.Tensor | None = None
        self._rebuild()
        self.kv = KVStore(
            num_kv_heads=shape.num_kv_heads,
            head_dim=shape.head_dim,
            dtype=self.dtype,
            capacity_tokens=self._kv_capacity(spec),
        )

    @property
    def loaded_names(self) -> tuple[str, ...]:
        return tuple(sorted(self.tensors))

    def _kv_capacity(self, spec: ShardSpec) -> int:
        s = self.shape
        if spec.end == spec.start:
            return 0  # holds no layers: no KV either
        per_token = (spec.end - spec.start) * 2 * s.num_kv_heads * s.head_dim * self.dtype.itemsize
        return spec.kv_capacity_tokens or max(1, spec.kv_cache_bytes // per_token)

    def _rebuild(self) -> None:
        layers = sorted({i for n in self.tensors if (i := layer_of(n)) is not None})
        self.blocks = {i: self._block(self.tensors, i) for i in layers}
        # A tied last shard holds the embedding matrix as its head; it embeds tokens only with layer 0.
        self.embed = self.tensors.get(_EMBED) if 0 in self.blocks else None
        self.norm = self.tensors.get("model.norm.weight")
        self.lm_head = None
        if self.norm is not None:
            self.lm_head = self.tensors.get("lm_head.weight")
            if self.lm_head is None:
                self.lm_head = self.tensors[_EMBED]  # tied: shard_filter kept the embeddings for the head

    # --- live layer changes (Load) --------------------------------------------------------------------

    live_load = True

    def held_layers(self) -> frozenset[int]:
        return frozenset(self.blocks)

    def held_tensors(self) -> frozenset[str]:
        return frozenset(self.tensors)

    def read_layers(self, start: int, end: int, held: frozenset[str]) -> dict[str, torch.Tensor]:
        needed = shard_filter(self.shape.num_layers, start, end, tied=self.tied)
        return load_tensors(self.spec.model_dir, lambda n: needed(n) and n not in held, self.dtype)

    def staged_names(self, staged: object) -> tuple[str, ...]:
        return tuple(self._staged(staged))

    @staticmethod
    def _staged(staged: object) -> dict[str, torch.Tensor]:
        if not isinstance(staged, dict):
            raise TypeError(f"expected tensors by name, got {type(staged).__name__}")
        return staged

    def install(self, staged: object, start: int, end: int) -> None:
        self.tensors.update(self._staged(staged))
        self._rebuild()
        self.spec = replace(self.spec, start=start, end=end)
        self.kv.capacity_tokens = self._kv_capacity(self.spec)

    def keep_only(self, spans: list[tuple[int, int]]) -> int:
        filters = [shard_filter(self.shape.num_layers, a, b, tied=self.tied) for a, b in spans]
        before = len(self.blocks)
        self.tensors = {n: t for n, t in self.tensors.items() if any(f(n) for f in filters)}
        self._rebuild()
        if not spans:
            self.spec = replace(self.spec, start=0, end=0)
            self.kv.capacity_tokens = 0
        return before - len(self.blocks)

    @staticmethod
    def _block(t: dict[str, torch.Tensor], i: int) -> _Block:
        p = f"model.layers.{i}."
        try:
            return _Block(
                input_norm=t[p + "input_layernorm.weight"],
                q=t[p + "self_attn.q_proj.weight"],
                k=t[p + "self_attn.k_proj.weight"],
                v=t[p + "self_attn.v_proj.weight"],
                o=t[p + "self_attn.o_proj.weight"],
                post_norm=t[p + "post_attention_layernorm.weight"],
                gate=t[p + "mlp.gate_proj.weight"],
                up=t[p + "mlp.up_proj.weight"],
                down=t[p + "mlp.down_proj.weight"],
            )
        except KeyError as exc:
            raise InvalidInput(f"checkpoint lacks {exc.args[0]}", field="model") from exc

    # --- Backend interface ---------------------------------------------------------------------------

    @property
    def kv_capacity_tokens(self) -> int:
        return self.kv.capacity_tokens

    def kv_used_tokens(self) -> int:
        return self.kv.used_tokens()

    def free(self, request_id: str) -> bool:
        return self.kv.free(request_id)

    @torch.inference_mode()
    def step(self, works: list[Work]) -> list[WorkOut]:
        sizes = [w.num_tokens for w in works]
        offsets = [0]
        for n in sizes:
            offsets.append(offsets[-1] + n)
        x = torch.cat([self._input(w) for w in works]) if len(works) > 1 else self._input(works[0])
        positions = torch.cat([torch.arange(w.position, w.position + w.num_tokens) for w in works])
        freqs = positions[:, None].float() * self.inv_freq
        emb = torch.cat((freqs, freqs), dim=-1)
        cos, sin = emb.cos().to(self.dtype)[:, None, :], emb.sin().to(self.dtype)[:, None, :]
        caches = [
            self.kv.reserve(w.request_id, w.start_layer, w.end_layer, w.position + w.num_tokens)
            for w in works
        ]
        first = min(w.start_layer for w in works)
        last = max(w.end_layer for w in works)
        for layer in range(first, last):
            active = [i for i, w in enumerate(works) if w.start_layer <= layer < w.end_layer]
            if len(active) == len(works):
                x = self._layer(layer, x, cos, sin, works, caches, offsets)
            else:  # overlapping chains: only some requests run this layer
                rows = torch.cat([torch.arange(offsets[i], offsets[i + 1]) for i in active])
                sub_offsets = [0]
                for i in active:
                    sub_offsets.append(sub_offsets[-1] + sizes[i])
                x[rows] = self._layer(
                    layer,
                    x[rows],
                    cos[rows],
                    sin[rows],
                    [works[i] for i in active],
                    [caches[i] for i in active],
                    sub_offsets,
                )
        for w, cache in zip(works, caches, strict=True):
            cache.length = w.position + w.num_tokens
        return self._outputs(works, x, offsets)

    # --- the model -----------------------------------------------------------------------------------

    def _input(self, w: Work) -> torch.Tensor:
        if w.token_ids is not None:
            if self.embed is None:
                raise InvalidInput("this shard holds no embeddings", field="start_layer")
            return F.embedding(w.token_ids, self.embed)
        if w.hidden is None:
            raise InvalidInput("segment carries neither token ids nor a hidden state", field="hidden")
        return w.hidden if w.residual is None else w.hidden + w.residual

    def _rms(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        h = x.to(torch.float32)
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return weight * h.to(x.dtype)

    def _layer(
        self,
        layer: int,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        works: list[Work],
        caches: list,
        offsets: list[int],
    ) -> torch.Tensor:
        b = self.blocks[layer]
        s = self.shape
        h = self._rms(x, b.input_norm)
        q = _linear(h, b.q).view(-1, s.num_heads, s.head_dim)
        k = _linear(h, b.k).view(-1, s.num_kv_heads, s.head_dim)
        v = _linear(h, b.v).view(-1, s.num_kv_heads, s.head_dim)
        q = q * cos + _rotate_half(q) * sin
        k = k * cos + _rotate_half(k) * sin
        outs = []
        for i, (w, cache) in enumerate(zip(works, caches, strict=True)):
            lo, hi = offsets[i], offsets[i + 1]
            keys, values = cache.layer(layer, w.num_tokens)
            end = w.position + w.num_tokens
            keys[:, w.position : end] = k[lo:hi].transpose(0, 1)
            values[:, w.position : end] = v[lo:hi].transpose(0, 1)
            outs.append(
                self._attend(
                    q[lo:hi].transpose(0, 1)[None], keys[None, :, :end], values[None, :, :end], w.position
                )
            )
        attn = torch.cat(outs) if len(outs) > 1 else outs[0]
        x = x + _linear(attn, b.o)
        h = self._rms(x, b.post_norm)
        return x + _linear(F.silu(_linear(h, b.gate)) * _linear(h, b.up), b.down)

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, position: int) -> torch.Tensor:
        """q [1, heads, n, d] against this request's k, v [1, kv_heads, position + n, d] -> [n, heads * d]."""
        n = q.shape[2]
        if position == 0 or n == 1:
            # A whole prompt (causal) or one decode token (sees everything): no mask, grouped heads.
            out = F.scaled_dot_product_attention(q, k, v, is_causal=n > 1, scale=self.scale, enable_gqa=True)
        else:  # a later prompt chunk: causal within the chunk, full view of what is cached
            groups = q.shape[1] // k.shape[1]
            k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
            total = k.shape[2]
            mask = torch.arange(total)[None, :] <= torch.arange(position, position + n)[:, None]
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=self.scale)
        return out.transpose(1, 2).reshape(n, -1)

    def _outputs(self, works: list[Work], x: torch.Tensor, offsets: list[int]) -> list[WorkOut]:
        outs = [WorkOut() for _ in works]
        heads = [i for i, w in enumerate(works) if w.want_logits]
        if heads:
            if self.norm is None or self.lm_head is None:
                raise InvalidInput("this shard holds no LM head", field="end_layer")
            last_rows = x[[offsets[i + 1] - 1 for i in heads]]
            logits = _linear(self._rms(last_rows, self.norm), self.lm_head).float()
            for j, i in enumerate(heads):
                outs[i].logits = logits[j]
        for i, w in enumerate(works):
            if w.end_layer < self.shape.num_layers:
                outs[i].hidden = x[offsets[i] : offsets[i + 1]]
        return outs
