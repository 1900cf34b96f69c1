import subprocess
import sys


def test_simulator_and_routing_import_no_heavy_or_io_dependencies() -> None:
    code = (
        "import sys; import simulator.run, simulator.score, simulator.paper, planner.routing; "
        "bad = [m for m in ('grpc', 'fastapi', 'torch', 'vllm', 'kubernetes', 'matplotlib') if m in sys.modules]; "
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
