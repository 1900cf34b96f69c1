from simulator.plots import save_all
from simulator.run import SimConfig, simulate
from tests.simulator.fleets import diamond, profiles, toy_model


def test_plots_are_written_as_png(tmp_path) -> None:
    cluster, plan = diamond()
    result = simulate(cluster, toy_model(), profiles(), plan, SimConfig(duration_s=20, warmup_s=5))
    paths = save_all(result, tmp_path / "plots")
    assert [p.name for p in paths] == ["throughput.png", "latency_cdf.png", "placement.png"]
    for p in paths:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 1000


def test_render_pngs_in_memory() -> None:
    from simulator.plots import render_pngs

    cluster, plan = diamond()
    result = simulate(cluster, toy_model(), profiles(), plan, SimConfig(duration_s=20, warmup_s=5))
    pngs = render_pngs(result)
    assert set(pngs) == {"throughput.png", "latency_cdf.png", "placement.png"}
    assert all(v.startswith(b"\x89PNG") for v in pngs.values())
