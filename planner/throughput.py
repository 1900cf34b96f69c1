"""Typical token throughput tp(gpu type, k): tokens/s a node sustains while holding k layers.

This is the Helix paper's "model manager" model. A node holding k of L layers serves a stream of typical
requests (I = 750 prompt tokens, O = 240 output tokens). How many of them it can batch is limited by the KV
cache it is allowed to fill (30% of its capacity for k layers) and by the share of a request's round trip it
spends computing, which depends on the rest of the fleet:

1. Typical layer counts tau_t per GPU type (a larger table when the fleet could not otherwise hold 1.2
   copies of the model) and a normalised performance pi_t per type, refined by ten rounds of
   pi_t <- tp_t(tau_t) * tau_t (the paper stops after ten rounds; the iteration oscillates with period two,
   so the round count matters and is kept).
2. Workload ratio w_t(k) = (k/pi_t) / ((L-k)*abar + k/pi_t), abar = sum n_t tau_t / pi_t / sum n_t tau_t:
   the fraction of a round trip spent on this node.
3. A = floor(0.3 * kv_capacity(k) / k) KV entries per layer; R = A/(I+O) * w/O typical prompts per batch,
   P = round(R*I) prompt tokens, D = round(A/(I+O) * w) decode sequences; R > 1 is clipped to one full prompt.
4. tp = r*(P+D) / (k * (T_p(floor(P*r)) + r*T_d(D))) with r = 1/R (one prompt every r batches), using the
   per-layer prompt/decode latency profiles T_p, T_d. It counts prompt and decode tokens alike.

tp therefore depends on the fleet's GPU type counts, not only on the node: compute one table per fleet.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from planner.cluster import Cluster
from planner.errors import InvalidInput, UnknownName
from planner.model import ModelSpec
from planner.profile import GpuProfile, LatencyTable, ProfileSet

TYPICAL_INPUT_TOKENS = 750
TYPICAL_OUTPUT_TOKENS = 240
# Share of a node's KV capacity the typical batch may fill (the paper's KV_HWM for this model).
TYPICAL_KV_SHARE = 0.3
FIXED_POINT_ROUNDS = 10
# When the fleet's typical layer counts hold less than this many copies of the model, use the larger table.
MIN_TYPICAL_COPIES = 1.2
# The model-level entries of a profile settings file this model reads (ProfileSet.throughput_settings).
THROUGHPUT_SETTING_KEYS = (
    "typical_layers_default",
    "typical_layers_if_capacity_below_1.2x_model",
    "normalized_perf_initial",
)


@dataclass(frozen=True)
class ThroughputTable:
    """tp[gpu_type][k-1] in tokens/s for k = 1..max_layers, plus the converged model state that made it."""

    model_name: str
    num_layers: int
    tp_by_type: Mapping[str, tuple[float, ...]]
    normalized_perf: Mapping[str, float] = field(default_factory=dict)
    typical_layers: Mapping[str, int] = field(default_factory=dict)
    # Node capacity is min(tp, NIC / activation bytes); the NIC term never binds for the paper's fleets.
    nic_tok_per_s: Mapping[str, float] = field(default_factory=dict)

    def types(self) -> tuple[str, ...]:
        return tuple(self.tp_by_type)

    def max_layers(self, gpu_type: str) -> int:
        return len(self._row(gpu_type))

    def tp(self, gpu_type: str, k: int) -> float:
        row = self._row(gpu_type)
        if not 1 <= k <= len(row):
            raise InvalidInput(f"{gpu_type} holds 1..{len(row)} layers of {self.model_name}, asked {k}")
        return row[k - 1]

    def capacity(self, gpu_type: str, k: int) -> float:
        """The planner's node capacity cap(k) = min(tp(k), NIC tokens/s)."""
        return min(self.tp(gpu_type, k), self.nic_tok_per_s.get(gpu_type, math.inf))

    def best_layer_tok_per_s(self, gpu_type: str) -> float:
        """max_k k * cap(k): layer-tokens/s the node can contribute at best (k=1 usually wins)."""
        return max(k * self.capacity(gpu_type, k) for k in range(1, self.max_layers(gpu_type) + 1))

    def _row(self, gpu_type: str) -> tuple[float, ...]:
        try:
            return self.tp_by_type[gpu_type]
        except KeyError:
            raise UnknownName("GPU type", gpu_type, list(self.tp_by_type)) from None

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model_name,
            "num_layers": self.num_layers,
            "normalized_perf": dict(self.normalized_perf),
            "typical_layers": dict(self.typical_layers),
            "tp_tok_per_s": {t: list(row) for t, row in self.tp_by_type.items()},
        }


def _typical_tables(
    settings: Mapping[str, Any], counts: Mapping[str, int], profiles: ProfileSet, num_layers: int
) -> dict[str, int]:
    default = dict(settings.get("typical_layers_default") or {})
    large = dict(settings.get("typical_layers_if_capacity_below_1.2x_model") or {})
    for t in counts:
        k_max = profiles.get(t).max_layers
        # Types the paper never profiled: half of what fits, or all of it when capacity is short.
        default.setdefault(t, max(1, k_max // 2))
        large.setdefault(t, k_max)
    chosen = default
    if sum(n * default[t] for t, n in counts.items()) < MIN_TYPICAL_COPIES * num_layers:
        chosen = large
    return {t: min(int(chosen[t]), profiles.get(t).max_layers) for t in counts}


def _initial_perf(
    settings: Mapping[str, Any], counts: Mapping[str, int], profiles: ProfileSet
) -> dict[str, float]:
    given = dict(settings.get("normalized_perf_initial") or {})
    perf: dict[str, float] = {}
    for t in counts:
        if t in given:
            perf[t] = float(given[t])
        else:
            # Unprofiled type: start from its single-layer decode speed; the fixed point refines it.
            ms = profiles.get(t).decode.ms(16) or 1.0
            perf[t] = 16.0 / ms
    return perf


def node_tp(
    profile: GpuProfile,
    k: int,
    *,
    perf: float,
    abar: float,
    num_layers: int,
    input_tokens: int = TYPICAL_INPUT_TOKENS,
    output_tokens: int = TYPICAL_OUTPUT_TOKENS,
    kv_share: float = TYPICAL_KV_SHARE,
) -> float:
    """tp for one node type holding k layers given the fleet's normalised perf state (steps 2-4)."""
    own = k / perf
    ratio = own / ((num_layers - k) * abar + own)
    entries = math.floor(kv_share * profile.kv_capacity_for(k) / k)
    per_request = input_tokens + output_tokens
    prompts = entries / per_request * ratio / output_tokens
    prompt_tokens = round(prompts * input_tokens)
    decode_seqs = round(entries / per_request * ratio)
    if prompts > 1:
        prompts, prompt_tokens, decode_seqs = 1.0, input_tokens, output_tokens
    if prompts <= 0:
        return 0.0
    if prompts >= 1:
        seconds = k * (profile.prompt_s_per_layer(prompt_tokens) + profile.decode_s_per_layer(decode_seqs))
        return (prompt_tokens + decode_seqs) / seconds
    every = 1.0 / prompts
    seconds = k * (
        profile.prompt_s_per_layer(math.floor(prompt_tokens * every))
        + every * profile.decode_s_per_layer(decode_seqs)
    )
    return every * (prompt_tokens + decode_seqs) / seconds


def typical_throughput(
    cluster: Cluster,
    model: ModelSpec,
    profiles: ProfileSet,
    settings: Mapping[str, Any] | None = None,
    *,
    rounds: int = FIXED_POINT_ROUNDS,
    gpu_counts: Mapping[str, int] | None = None,
) -> ThroughputTable:
    """The fleet's tp table. `settings` is the model-level part of the paper's model_on_machine_settings
    (typical layer tables, initial normalised perf); None takes the entries the profile set was loaded
    with, and missing entries fall back to profile-derived values. `gpu_counts` overrides the fleet's type
    counts (the paper's sub-fleet runs use their own counts)."""
    counts = dict(gpu_counts) if gpu_counts is not None else cluster.gpu_counts()
    if not counts:
        raise InvalidInput("the cluster has no compute nodes", source=cluster.name)
    # Defaulting to the profiles' own entries: a caller that passes no settings (a plan made by hand from a
    # placement, a live re-plan) must get the table `brl plan` and `brl simulate` use, or one layout gets
    # two max-flows and two routings.
    settings = profiles.throughput_settings if settings is None else settings
    num_layers = model.num_layers
    tau = _typical_tables(settings, counts, profiles, num_layers)
    perf = _initial_perf(settings, counts, profiles)

    def abar_of(p: Mapping[str, float]) -> float:
        return sum(n * tau[t] / p[t] for t, n in counts.items()) / sum(n * tau[t] for t, n in counts.items())

    for _ in range(rounds):
        abar = abar_of(perf)
        perf = {
            t: node_tp(profiles.get(t), tau[t], perf=perf[t], abar=abar, num_layers=num_layers) * tau[t]
            for t in counts
        }
    abar = abar_of(perf)
    table: dict[str, tuple[float, ...]] = {}
    nic: dict[str, float] = {}
    for t in counts:
        prof = profiles.get(t)
        table[t] = tuple(
            node_tp(prof, k, perf=perf[t], abar=abar, num_layers=num_layers)
            for k in range(1, prof.max_layers + 1)
        )
        nic[t] = min(prof.nic_in_bytes_per_s, prof.nic_out_bytes_per_s) / model.activation_bytes_per_token
    return ThroughputTable(
        model_name=model.name,
        num_layers=num_layers,
        tp_by_type=table,
        normalized_perf=perf,
        typical_layers=tau,
        nic_tok_per_s=nic,
    )


def _peak_rate(table: LatencyTable, lo: float, hi: float) -> float:
    """max of batch / seconds(batch) over batch in [lo, hi]. The table is linear between its rows, where
    batch / (a + b*batch) is monotone, so the max sits at a row or at an end."""
    best = 0.0
    for x in (lo, *(x for x, _ in table.points if lo < x < hi), hi):
        s = table.seconds(x)
        if s <= 0:
            return math.inf
        best = max(best, x / s)
    return best


def peak_tok_per_s(profile: GpuProfile, k: int, *, decode_only: bool = False) -> float:
    """The most tokens/s a node of this profile running k layers per step can process in ANY batch the
    workers (and the simulator) form: decode batches of 1..decode_max_for(k) sequences, prompt batches up
    to the batch limit or the longest prompt the profile measured, whichever is more (a prompt over the
    limit runs alone; past the measured rows the table only extrapolates, and every bundled workload's
    prompts are shorter than them). A mixed step of P prompt and D decode tokens takes
    k * (T_p(P) + T_d(D)), so its rate is at most the better pure rate; LM head, CPU and per-step overheads
    only add time. Unlike tp() this is a true ceiling: prompt tokens cost a fraction of a decode token each,
    so prompt-heavy stretches run far above the typical-batch tp. `decode_only`: the ceiling on decode
    tokens/s alone (prompt work in a step only takes time from decodes), much tighter."""
    profile.check_k(k)
    lone_s = profile.decode.seconds(profile.lone_decode_batch)  # what one decode alone is priced at
    decode = 1.0 / lone_s if lone_s > 0 else math.inf
    dmax = profile.decode_max_for(k)
    if dmax >= 2:
        decode = max(decode, _peak_rate(profile.decode, 2.0, float(dmax)))
    if decode_only:
        return decode / k
    longest = max(float(profile.prompt_max_tokens), profile.prompt.points[-1][0])
    prompt = _peak_rate(profile.prompt, 1.0, longest)
    return max(decode, prompt) / k
