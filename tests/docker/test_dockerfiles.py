"""docker/*.Dockerfile and .dockerignore, checked statically: no Docker engine can run on these machines,
so the images' invariants are read off the files (pinned bases, non-root user, `brl` entrypoints whose
commands exist, protos generated in the build, the torch pin)."""

from __future__ import annotations

import argparse
import fnmatch
import json
import re
import shlex
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from services.cli.main import build_parser

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILES = sorted((ROOT / "docker").glob("*.Dockerfile"))


@dataclass
class Stage:
    image: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)


def _logical_lines(text: str) -> list[str]:
    """Join `\\` continuations and drop comment lines, as Docker's parser does."""
    lines: list[str] = []
    current = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if stripped.startswith("#") or not stripped:
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        lines.append(current + stripped)
        current = ""
    if current:
        lines.append(current)
    return lines


def parse(path: Path) -> list[Stage]:
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in _logical_lines(path.read_text()):
        op, _, rest = line.partition(" ")
        op = op.upper()
        if op == "ARG" and not stages:
            key, _, default = rest.partition("=")
            args[key.strip()] = default.strip()
        elif op == "FROM":
            words = rest.split()
            image = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args.get(m[1] or m[2], m[0]), words[0])
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            stages.append(Stage(image=image, name=name))
        elif stages:
            stages[-1].instructions.append((op, rest))
    return stages


def _exec_form(value: str) -> list[str]:
    parsed = json.loads(value)
    assert isinstance(parsed, list) and all(isinstance(x, str) for x in parsed), value
    return parsed


def test_both_images_exist() -> None:
    assert {p.name for p in DOCKERFILES} == {"control-plane.Dockerfile", "worker.Dockerfile"}


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_every_base_image_is_pinned(path: Path) -> None:
    stages = parse(path)
    names = {s.name for s in stages if s.name}
    for stage in stages:
        if stage.image in names:
            continue
        assert "$" not in stage.image, f"{stage.image}: unresolved build arg"
        if "@sha256:" in stage.image:
            continue
        repo, _, tag = stage.image.rpartition(":")
        assert repo and "/" not in tag, f"{stage.image}: no tag"
        assert tag != "latest" and re.search(r"\d+\.\d+\.\d+", tag), f"{stage.image}: not an exact version"


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_final_stage_runs_as_non_root(path: Path) -> None:
    final = parse(path)[-1]
    users = [rest for op, rest in final.instructions if op == "USER"]
    assert users, "the final stage never sets USER"
    user = users[-1].split(":")[0]
    assert user not in {"root", "0"}
    # The uid the chart's podSecurityContext (runAsUser: 1000) expects.
    assert user in {"1000", "brl"}
    assert any(op == "RUN" and "useradd" in rest and "1000" in rest for op, rest in final.instructions)


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_entrypoint_is_brl_and_its_command_exists(path: Path) -> None:
    final = parse(path)[-1]
    entrypoint = [_exec_form(rest) for op, rest in final.instructions if op == "ENTRYPOINT"][-1]
    cmd = [_exec_form(rest) for op, rest in final.instructions if op == "CMD"][-1]
    assert entrypoint == ["brl"]
    # The default command must be one `brl --help` lists (parse it as the CLI would).
    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    commands = sub.choices
    assert cmd[0] in commands
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args([cmd[0], "--help"])
    assert exit_info.value.code == 0


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_protos_are_generated_before_the_package_is_installed(path: Path) -> None:
    runs = [rest for stage in parse(path) for op, rest in stage.instructions if op == "RUN"]
    step = next(r for r in runs if "services.protogen" in r)
    assert step.index("services.protogen") < step.index("--no-deps .")
    copies = [
        rest.split()[0]
        for stage in parse(path)
        for op, rest in stage.instructions
        if op == "COPY" and not rest.startswith("--from")
    ]
    assert "protos" in copies and "services" in copies and "pyproject.toml" in copies


def test_control_plane_torch_is_the_pinned_cpu_build() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    pin = next(d for d in pyproject["project"]["dependencies"] if d.replace(" ", "").startswith("torch=="))
    runs = [
        rest
        for stage in parse(ROOT / "docker" / "control-plane.Dockerfile")
        for op, rest in stage.instructions
        if op == "RUN"
    ]
    torch_step = next(r for r in runs if "torch==" in r)
    words = shlex.split(torch_step)
    assert pin.replace(" ", "") in words
    assert words[words.index("--index-url") + 1].endswith("/whl/cpu")
    assert parse(ROOT / "docker" / "control-plane.Dockerfile")[0].image.startswith("python:3.11")


def test_worker_base_matches_the_vllm_extra() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    (vllm_pin,) = pyproject["project"]["optional-dependencies"]["vllm"]
    version = vllm_pin.split("==")[1]
    image = parse(ROOT / "docker" / "worker.Dockerfile")[0].image
    assert image == f"vllm/vllm-openai:v{version}"
    # The image's own CUDA torch must survive: the requirements step filters pyproject's CPU pin out.
    runs = [rest for op, rest in parse(ROOT / "docker" / "worker.Dockerfile")[0].instructions if op == "RUN"]
    assert any("startswith('torch=')" in r for r in runs)


def _ignored(patterns: list[str], path: str) -> bool:
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pat = pattern.lstrip("!").rstrip("/")
        hit = (
            fnmatch.fnmatch(path, pat)
            or fnmatch.fnmatch(path, pat.removeprefix("**/"))
            or path.startswith(pat + "/")
        )
        if hit:
            ignored = not negate
    return ignored


def test_dockerignore_keeps_what_the_builds_copy_and_drops_the_rest() -> None:
    patterns = [
        ln.strip()
        for ln in (ROOT / ".dockerignore").read_text().splitlines()
        if ln.strip() and not ln.startswith("#")
    ]
    for path in DOCKERFILES:
        for stage in parse(path):
            for op, rest in stage.instructions:
                if op == "COPY" and not rest.startswith("--from"):
                    for src in rest.split()[:-1]:
                        assert not _ignored(patterns, src), (
                            f"{path.name} copies {src}, which .dockerignore drops"
                        )
    for heavy in (".venv", ".git", "protos/worker_pb2.py", "tests", "shared"):
        assert _ignored(patterns, heavy), heavy
