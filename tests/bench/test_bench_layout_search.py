"""bench/layout_search.py: its moves keep layouts whole, its climb never keeps a worse layout, and the quick
run (80-s runs, 20 moves from one dense chain) prints its JSON."""

from __future__ import annotations

import json
import random

from bench import layout_search

MAX = {"a": 4, "b": 4, "c": 6}


def test_covers_wants_every_layer_held_within_each_nodes_limit() -> None:
    assert layout_search.covers({"a": (0, 4), "b": (4, 4), "c": (8, 2)}, 10, MAX)
    assert not layout_search.covers({"a": (0, 4), "b": (5, 4), "c": (9, 1)}, 10, MAX)  # layer 4 unheld
    assert not layout_search.covers({"a": (0, 5), "b": (5, 4), "c": (9, 1)}, 10, MAX)  # a holds 5 > 4
    assert not layout_search.covers({"a": (0, 4), "b": (4, 4), "c": (8, 3)}, 10, MAX)  # past the last layer


def test_every_move_is_a_new_whole_layout_or_none() -> None:
    rng = random.Random(0)
    start = {"a": (0, 4), "b": (3, 4), "c": (6, 4)}
    made = 0
    for _ in range(500):
        new = layout_search.move(start, rng, 10, MAX)
        if new is not None:
            made += 1
            assert new != start and layout_search.covers(new, 10, MAX), new
    assert made > 20


def test_climb_keeps_only_layouts_that_score_no_worse() -> None:
    def judge(lay: dict[str, tuple[int, int]]) -> float:
        return float(sum(k for _, k in lay.values()))  # more slots held scores more

    start = {"a": (0, 4), "b": (4, 3), "c": (7, 3)}
    best, score = layout_search.climb(start, judge, 300, random.Random(1), 10, MAX)
    assert score == judge(best) >= judge(start)
    assert score > judge(start)  # room to grow: a and c are below their limits


def test_quick_run_prints_json(capsys) -> None:
    assert layout_search.main(["--quick"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["bench"] == "layout-search" and out["layouts_run"] >= 1
    (start,) = out["starts"]
    assert start["score"] >= start["start_score"] > 0
    assert out["holdout"]["found"] > 0 and out["holdout"]["start"] > 0


def test_type_orders_are_every_distinct_order() -> None:
    orders = list(layout_search.type_orders(["T4", "L4", "T4"]))
    assert sorted(orders) == [("L4", "T4", "T4"), ("T4", "L4", "T4"), ("T4", "T4", "L4")]
    assert len(list(layout_search.type_orders(["T4"] * 6 + ["L4"] * 4))) == 210  # 10! / (6! 4!)


def test_top_level_chains_cover_the_model_once_with_counts_at_or_one_below_the_level() -> None:
    names, types, counts = ["a", "b", "c"], ["T4", "L4", "T4"], [4, 5, 3]
    chains = list(layout_search.top_level_chains(names, types, counts, 10))
    assert chains and len({tuple(sorted(c.items())) for c in chains}) == len(chains)
    level = dict(zip(names, counts, strict=True))
    for chain in chains:
        spans = sorted(chain.values())
        assert spans[0][0] == 0 and sum(k for _, k in spans) == 10
        assert all(a + k == b for (a, k), (b, _) in zip(spans, spans[1:], strict=False))  # contiguous
        assert all(level[n] - 1 <= k <= level[n] for n, (_, k) in chain.items())
    # Each of the 3 type orders takes every choice of sizes summing to 10.
    per_order = sum(1 for x in (3, 4) for y in (4, 5) for z in (2, 3) if x + y + z == 10)
    assert len(chains) == 3 * per_order


def test_quick_chain_sweep_prints_json(capsys) -> None:
    assert layout_search.main(["--chains", "--quick"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["bench"] == "layout-search-chains" and out["chains"] == 30
    assert out["best_first_seed"] >= out["median_first_seed"] >= out["worst_first_seed"] > 0
    assert out["kv_level"] == 47088.0  # cluster10's best chain level (bench.planner_cluster10)
    assert len(out["held"]) == layout_search.TOP_HELD
    assert out["swarm_holdout"] > 0 and all(h["holdout"] > 0 for h in out["held"])
    seeds = [h["seeds"] for h in out["held"]]
    assert seeds == sorted(seeds, reverse=True)
