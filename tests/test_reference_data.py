"""The Helix artifact's files that this repository carries are byte-identical to the artifact.

tests/data/reference/artifact-sha256.txt records, for each copied file, the SHA-256 taken from the
artifact itself (Thesys-lab/Helix-ASPLOS25 at commit 148b733) and where the copy lives here. Checking
the copies against those sums is what lets the tests that compare with the paper's tables (throughput,
profiles, layouts) run from a clone alone, with no artifact checkout next to it."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "tests" / "data" / "reference"
MANIFEST = REFERENCE / "artifact-sha256.txt"


def _entries() -> list[tuple[str, str, str]]:
    rows = []
    for line in MANIFEST.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            digest, artifact_path, repo_path = line.split()
            rows.append((digest, artifact_path, repo_path))
    return rows


def test_manifest_covers_every_reference_file() -> None:
    rows = _entries()
    listed = {repo for _, _, repo in rows}
    assert len(listed) == len(rows), "a repository file is listed twice"
    # every file in tests/data/reference other than the manifest is an artifact copy
    assert {str(p.relative_to(ROOT)) for p in REFERENCE.iterdir() if p != MANIFEST} <= listed
    # the layout the README and the paper's headline number use
    assert "planner/data/layouts/llama2-70b/cluster24/ilp_sol.ini" in listed
    assert len(rows) >= 70


@pytest.mark.parametrize(
    ("digest", "artifact_path", "repo_path"), _entries(), ids=[repo for _, _, repo in _entries()]
)
def test_copy_is_byte_identical_to_the_artifact(digest: str, artifact_path: str, repo_path: str) -> None:
    data = (ROOT / repo_path).read_bytes()
    assert hashlib.sha256(data).hexdigest() == digest, (
        f"{repo_path} differs from the artifact's {artifact_path}"
    )
