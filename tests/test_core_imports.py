"""Importing the pure core pulls in no heavy or networked dependency (checked in a fresh interpreter)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = ("torch", "grpc", "fastapi", "vllm", "kubernetes", "matplotlib", "uvicorn", "transformers")

CHECK = """
import importlib, json, pkgutil, sys
mods = []
for pkg in ("planner", "simulator"):
    try:
        root = importlib.import_module(pkg)
    except ModuleNotFoundError:
        continue
    for info in pkgutil.walk_packages(root.__path__, pkg + "."):
        mods.append(info.name)
        importlib.import_module(info.name)
print(json.dumps({"loaded": sorted(m.split(".")[0] for m in sys.modules), "imported": mods}))
"""


def test_core_imports_stay_light() -> None:
    out = subprocess.run([sys.executable, "-c", CHECK], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert "planner.bundled" in result["imported"] and "planner.formats.cluster_yaml" in result["imported"]
    heavy = sorted(set(result["loaded"]) & set(FORBIDDEN))
    assert heavy == [], f"importing planner/simulator pulled in {heavy}"
