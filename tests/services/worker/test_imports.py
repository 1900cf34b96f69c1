"""Importing the worker (torch backend, server, CLI) must not pull in vLLM: it is an optional extra."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def test_worker_imports_do_not_load_vllm() -> None:
    code = (
        "import sys; import services.worker.main, services.cli.worker, services.worker.backends.torch_backend; "
        "from services.worker.backends import backend_names; assert backend_names() == ('torch', 'vllm'); "
        "print(sorted(m for m in sys.modules if m == 'vllm' or m.startswith('vllm.')))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
