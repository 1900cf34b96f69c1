"""Nothing in the repository points outside it: users get only the repository, so no tracked file may cite
the team's workbench folder or its private notes; method notes live in docs/ and are cited by section."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Assembled from parts so that this file does not match itself.
OUTSIDE = re.compile("|".join([re.escape("../" + "shared"), "notes" + " §"]))
SECTION_CITE = re.compile(r"docs/([\w-]+\.md) §(\d+(?:\.\d+)?)")


SKIP_DIRS = {".git", ".venv", "__pycache__", ".mypy_cache", ".ruff_cache", ".pytest_cache", "build", "dist"}


def _repository_files() -> list[Path]:
    """Tracked and new (not ignored) files; without git (an unpacked archive), every file outside build dirs."""
    try:
        out = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT,
            capture_output=True,
            check=True,
            timeout=60,
        ).stdout
        return [ROOT / name for name in out.decode().split("\0") if name]
    except (OSError, subprocess.CalledProcessError):
        return [
            p
            for p in ROOT.rglob("*")
            if not SKIP_DIRS.intersection(p.relative_to(ROOT).parts)
            and not any(part.endswith(".egg-info") for part in p.parts)
        ]


def _tracked_text_files() -> list[Path]:
    files = []
    for path in _repository_files():
        if path.is_file():
            data = path.read_bytes()
            if b"\0" not in data[:8192]:
                files.append(path)
    return files


def test_no_file_points_outside_the_repository() -> None:
    files = _tracked_text_files()
    assert any(f.name == "README.md" for f in files)
    hits = [
        f"{f.relative_to(ROOT)}:{n}: {line.strip()}"
        for f in files
        for n, line in enumerate(f.read_text(errors="replace").splitlines(), 1)
        if OUTSIDE.search(line)
    ]
    assert hits == []


def test_section_citations_name_a_section_that_exists() -> None:
    cited = 0
    for f in _tracked_text_files():
        for doc, section in SECTION_CITE.findall(f.read_text(errors="replace")):
            target = ROOT / "docs" / doc
            assert target.is_file(), f"{f.relative_to(ROOT)} cites missing docs/{doc}"
            heading = re.compile(rf"^#+ {re.escape(section)}\.? ", re.M)
            top, _, item = section.partition(".")
            # "§8.7" is either a "### 8.7" heading or item 7 of the numbered list under "## 8."
            found = bool(heading.search(target.read_text()))
            if not found and item:
                body = target.read_text().split(f"\n## {top}. ", 1)
                found = len(body) == 2 and bool(re.search(rf"^{item}\. ", body[1].split("\n## ", 1)[0], re.M))
            assert found, f"{f.relative_to(ROOT)} cites docs/{doc} §{section}, which has no such section"
            cited += 1
    assert cited >= 7
