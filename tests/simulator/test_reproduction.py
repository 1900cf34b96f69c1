"""The paper's published simulation numbers, reproduced on the bundled data (about 20 s in all)."""

import pytest

from simulator import paper


def test_readme_example_ilp_maxflow_offline() -> None:
    (result,) = paper.run_all(paper.setup("helix"))
    ref = paper.EXAMPLE
    assert result.max_flow_tok_per_s == pytest.approx(ref["max_flow_tok_per_s"], abs=0.01)
    assert result.decode_tok_per_s == pytest.approx(ref["decode_tok_per_s"], rel=0.05)
    assert result.all_tok_per_s == pytest.approx(ref["all_tok_per_s"], rel=0.05)
    assert result.prompt_latency_s.mean == pytest.approx(ref["prompt_latency_mean_s"], rel=0.10)
    assert result.decode_latency_s.mean == pytest.approx(ref["decode_latency_mean_s"], rel=0.10)
    # Steady state as the paper's watch output shows: ~330-410 queries in flight, KV gate at 0.8.
    assert 300 <= max(w.active for w in result.watch) <= 450
    assert max(w.expected_bottleneck for w in result.watch) == pytest.approx(0.8, abs=0.03)


def test_swarm_baseline() -> None:
    (result,) = paper.run_all(paper.setup("swarm"))
    assert result.decode_tok_per_s == pytest.approx(paper.AE_OFFLINE_70B["swarm"], rel=0.10)


def test_separate_pipelines_summed() -> None:
    results = paper.run_all(paper.setup("separate"))
    assert len(results) == 3
    total = sum(r.decode_tok_per_s for r in results)
    assert total == pytest.approx(paper.AE_OFFLINE_70B["separate"], rel=0.10)
