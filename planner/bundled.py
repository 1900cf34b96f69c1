"""Short names or paths → parsed objects: the fleets, models, GPU profiles and published layouts shipped
in `planner/data/`. Short names are the stems of the files found there (folders are scanned, so files
dropped in later are picked up); anything else is read as a path."""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

from planner.cluster import Cluster
from planner.errors import InvalidInput, UnknownName
from planner.formats import read_text
from planner.formats.helix_ini import (
    MachineProfile,
    SimulatorClusterFile,
    load_cluster_ini,
    load_machine_profile_ini,
    load_simulator_cluster_ini,
    load_solution_ini,
)
from planner.formats.profiles import SETTINGS_FILE, load_settings, profiles_from_settings
from planner.model import ModelSpec, model_from_hf_config
from planner.placement import Placement
from planner.profile import ProfileSet

DATA_DIR = Path(__file__).resolve().parent / "data"
CLUSTERS_DIR = DATA_DIR / "clusters"
MODELS_DIR = DATA_DIR / "models"
PROFILES_DIR = DATA_DIR / "profiles"
LAYOUTS_DIR = DATA_DIR / "layouts"
MACHINE_PROFILE = DATA_DIR / "machine_profiles" / "google_machine_profiles.ini"

CLUSTER_SUFFIXES = (".yaml", ".yml", ".ini")  # preference order when two files share a stem
LAYOUT_SUFFIX = "_sol.ini"
SIMULATOR_SUFFIX = "_simulator_cluster.ini"


# ------------------------------------------------------------------------------------------ names


def cluster_names() -> tuple[str, ...]:
    if not CLUSTERS_DIR.is_dir():
        return ()
    return tuple(sorted({p.stem for p in CLUSTERS_DIR.iterdir() if p.suffix in CLUSTER_SUFFIXES}))


def model_names() -> tuple[str, ...]:
    if not MODELS_DIR.is_dir():
        return ()
    return tuple(sorted(p.name for p in MODELS_DIR.iterdir() if (p / "config.json").is_file()))


def profile_names() -> tuple[str, ...]:
    """Models that have bundled GPU profiles."""
    if not PROFILES_DIR.is_dir():
        return ()
    return tuple(sorted(p.name for p in PROFILES_DIR.iterdir() if (p / SETTINGS_FILE).is_file()))


def _bundled_cluster_file(name: str) -> Path | None:
    for suffix in CLUSTER_SUFFIXES:
        p = CLUSTERS_DIR / f"{name}{suffix}"
        if p.is_file():
            return p
    return None


def _missing(kind: str, name: str, valid: tuple[str, ...]) -> UnknownName:
    return UnknownName(kind, name, valid, source="bundled name or file path")


# --------------------------------------------------------------------------------------- clusters


def known_gpu_types() -> tuple[str, ...]:
    """GPU types BRL knows something about: the machine profile's sections and every bundled profile's GPUs."""
    types = {t for t in machine_profiles() if t not in ("SourceNode", "SinkNode")}
    for name in profile_names():
        types.update(_settings(name).get("gpus", {}))
    return tuple(sorted(types))


def load_cluster_file(path: str | Path, *, name: str | None = None, check_gpu_types: bool = True) -> Cluster:
    """A cluster file by suffix: `.yaml`/`.yml` (BRL cluster YAML) or `.ini` (Helix cluster). With
    `check_gpu_types`, a YAML naming a GPU type BRL has no profile or machine entry for is rejected."""
    p = Path(path)
    if p.suffix in (".yaml", ".yml"):
        from planner.formats.cluster_yaml import load_cluster_yaml

        known = known_gpu_types() if check_gpu_types else None
        return load_cluster_yaml(p, name=name, known_gpu_types=known)
    if p.suffix == ".ini":
        return load_cluster_ini(p, name=name)
    raise InvalidInput(f"unknown cluster file type {p.suffix!r}; expected .yaml, .yml or .ini", source=str(p))


def cluster(name_or_path: str | Path, *, check_gpu_types: bool = True) -> Cluster:
    """A fleet by bundled name ("cluster24", "3cluster24", "cluster10", "local-cpu", …) or by path to a
    .yaml/.yml/.ini file. `check_gpu_types=False` accepts GPU types BRL knows nothing about (to show or
    convert a fleet); planning needs profiles, so the default rejects them."""
    text = str(name_or_path)
    bundled = _bundled_cluster_file(text) if "/" not in text and "\\" not in text else None
    if bundled is not None:
        return load_cluster_file(bundled, name=text, check_gpu_types=check_gpu_types)
    p = Path(text)
    if p.is_file():
        return load_cluster_file(p, check_gpu_types=check_gpu_types)
    if p.suffix in CLUSTER_SUFFIXES or "/" in text:
        raise InvalidInput("file not found", source=text)
    raise _missing("cluster", text, cluster_names())


# ----------------------------------------------------------------------------------------- models


def model(name_or_path: str | Path) -> ModelSpec:
    """A model by bundled name ("llama2-70b", "llama1-30b", "smollm2-135m") or by path to a HF config.json
    (or a folder holding one).
    Bundled models with profiles take the paper's layer and activation sizes from their settings."""
    text = str(name_or_path)
    if "/" not in text and (MODELS_DIR / text / "config.json").is_file():
        config_path = MODELS_DIR / text / "config.json"
        name = text
    else:
        p = Path(text)
        if p.is_dir():
            config_path = p / "config.json"
            name = p.resolve().name
        elif p.is_file():
            config_path = p
            name = p.resolve().parent.name
        elif "/" in text or p.suffix == ".json":
            raise InvalidInput("file not found", source=text)
        else:
            raise _missing("model", text, model_names())
    source = str(config_path)
    raw_text = read_text(config_path)
    try:
        config = json.loads(raw_text)
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"not valid JSON: {exc.msg}", source=source, field=f"line {exc.lineno}") from None
    if not isinstance(config, dict):
        raise InvalidInput("expected a JSON object", source=source)
    layer_bytes: int | None = None
    activation: int | None = None
    token_bytes = 2
    if name in profile_names() and config_path.parent.parent == MODELS_DIR:
        settings = _settings(name)
        if settings.get("param_bytes_per_layer"):
            layer_bytes = int(settings["param_bytes_per_layer"])
        if settings.get("activation_size_bytes_per_token"):
            activation = int(settings["activation_size_bytes_per_token"])
        token_bytes = int(settings.get("token_size_bytes", 2))
    spec = model_from_hf_config(
        config,
        name=name,
        source=source,
        layer_bytes_override=layer_bytes,
        activation_bytes_override=activation,
    )
    if token_bytes != spec.token_bytes:
        from dataclasses import replace

        spec = replace(spec, token_bytes=token_bytes)
    return spec


# --------------------------------------------------------------------------------------- profiles


@lru_cache(maxsize=1)
def _machine_profiles() -> dict[str, MachineProfile]:
    return load_machine_profile_ini(MACHINE_PROFILE)


def machine_profiles() -> Mapping[str, MachineProfile]:
    """The paper's machine profile (NIC, disk, VRAM per GPU type), bundled."""
    return dict(_machine_profiles())


@cache
def _settings(name: str) -> dict[str, Any]:
    return load_settings(PROFILES_DIR / name / SETTINGS_FILE)


def _model_name(m: ModelSpec | str) -> str:
    return m.name if isinstance(m, ModelSpec) else str(m)


def helix_settings(m: ModelSpec | str) -> Mapping[str, Any]:
    """The model-level settings of the paper's throughput model (num_layers, token/activation sizes,
    typical_layers tables, normalized_perf_initial, and the per-GPU entries under "gpus"). A copy."""
    name = _model_name(m)
    if name not in profile_names():
        raise _missing("model with bundled profiles", name, profile_names())
    return copy.deepcopy(_settings(name))


@cache
def _profiles(name: str) -> ProfileSet:
    folder = PROFILES_DIR / name
    return profiles_from_settings(
        _settings(name),
        folder,
        model_name=name,
        machine_profiles=_machine_profiles(),
        source=str(folder / SETTINGS_FILE),
    )


def profiles(m: ModelSpec | str) -> ProfileSet:
    """GPU profiles of a model from `planner/data/profiles/<model>/`; UnknownName if none are bundled."""
    name = _model_name(m)
    if name not in profile_names():
        raise _missing("model with bundled profiles", name, profile_names())
    result = _profiles(name)
    if isinstance(m, ModelSpec):
        layers = _settings(name).get("num_layers")
        if layers is not None and layers != m.num_layers:
            raise InvalidInput(
                f"profiles are for a {layers}-layer model but {m.name!r} has {m.num_layers} layers",
                source=str(PROFILES_DIR / name / SETTINGS_FILE),
                field="num_layers",
            )
    return result


# ---------------------------------------------------------------------------------------- layouts


def layouts() -> tuple[tuple[str, str, str], ...]:
    """Every bundled published layout as (model, cluster, layout name)."""
    out: list[tuple[str, str, str]] = []
    if not LAYOUTS_DIR.is_dir():
        return ()
    for mdir in sorted(LAYOUTS_DIR.iterdir()):
        for cdir in sorted(p for p in mdir.iterdir() if p.is_dir()):
            for f in sorted(cdir.glob(f"*{LAYOUT_SUFFIX}")):
                out.append((mdir.name, cdir.name, f.name[: -len(LAYOUT_SUFFIX)]))
    return tuple(out)


def _name_of(obj: Cluster | ModelSpec | str) -> str:
    return obj.name if isinstance(obj, Cluster | ModelSpec) else str(obj)


def layout_names(cluster_name: Cluster | str, model_name: ModelSpec | str) -> tuple[str, ...]:
    """The published layouts bundled for one (cluster, model) pair, e.g. ilp, petals, swarm."""
    c_name, m_name = _name_of(cluster_name), _name_of(model_name)
    return tuple(n for m, c, n in layouts() if (m, c) == (m_name, c_name))


def layout_path(name: str, cluster_name: Cluster | str, model_name: ModelSpec | str) -> Path:
    """The `*_sol.ini` file of a published layout; UnknownName lists the layouts of that cluster and model
    (or, when it has none, every bundled layout with its model and cluster)."""
    c_name, m_name = _name_of(cluster_name), _name_of(model_name)
    path = LAYOUTS_DIR / m_name / c_name / f"{name}{LAYOUT_SUFFIX}"
    names = (name, c_name, m_name)
    if any("/" in n or "\\" in n or n.startswith(".") for n in names) or not path.is_file():
        here = layout_names(c_name, m_name)
        if here:
            raise UnknownName("layout", name, here, source=f"{c_name}, {m_name}", field="layout")
        valid = [f"{n} ({m}, {c})" for m, c, n in layouts()]
        raise UnknownName("layout", f"{name} ({m_name}, {c_name})", valid, field="layout")
    return path


def layout(name: str, cluster_name: Cluster | str, model_name: ModelSpec | str) -> Placement:
    """A published placement, e.g. layout("ilp", "cluster24", "llama2-70b") (max-flow 1289.56 in the paper).
    Names: ilp, petals, swarm, homogeneous, ilp-single (single-cluster experiment), separate (per GPU type
    sub-fleets cluster24-a100/-l4/-t4)."""
    path = layout_path(name, cluster_name, model_name)
    fleet = cluster_name if isinstance(cluster_name, Cluster) else cluster(str(cluster_name))
    spec = model_name if isinstance(model_name, ModelSpec) else model(str(model_name))
    return load_solution_ini(path, fleet, spec.num_layers)


def layout_simulator_cluster(name: str, cluster_name: str, model_name: str) -> SimulatorClusterFile:
    """The paper's `simulator_cluster.ini` stored beside a layout (its directed links and KV capacities)."""
    path = LAYOUTS_DIR / model_name / cluster_name / f"{name}{SIMULATOR_SUFFIX}"
    if not path.is_file():
        have = sorted(p.name[: -len(SIMULATOR_SUFFIX)] for p in LAYOUTS_DIR.glob(f"*/*/*{SIMULATOR_SUFFIX}"))
        raise UnknownName("simulator cluster file", f"{name} ({model_name}, {cluster_name})", have)
    return load_simulator_cluster_ini(path, name=cluster_name)
