"""The coordinators a worker registers with (`--coordinator`): one HOST:PORT, a comma-separated list (one
per coordinator replica), or `dns:NAME:PORT`, every address NAME resolves to (a Kubernetes headless
Service listing the replica pods)."""

from __future__ import annotations

import asyncio
import logging
import socket

log = logging.getLogger("brl.worker.registration")
DNS_PREFIX = "dns:"


def parse_coordinators(text: str) -> tuple[list[str], str | None]:
    """`a:1,b:2` -> (["a:1", "b:2"], None); `dns:name:port` -> ([], "name:port") (resolved later)."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts:
        raise ValueError("no coordinator address given")
    dns = [p for p in parts if p.startswith(DNS_PREFIX)]
    if dns and len(parts) > 1:
        raise ValueError(f"give one dns:NAME:PORT or a list of HOST:PORT, not both: {text!r}")
    for p in parts:
        host, _, port = p.removeprefix(DNS_PREFIX).rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"coordinator address must be HOST:PORT (or dns:NAME:PORT), got {p!r}")
    if dns:
        return [], dns[0].removeprefix(DNS_PREFIX)
    return list(dict.fromkeys(parts)), None


async def resolve_all(name_port: str) -> list[str]:
    """Every address NAME resolves to, as HOST:PORT (a headless Service: one per ready replica pod)."""
    host, _, port = name_port.rpartition(":")
    try:
        found = await asyncio.get_running_loop().getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
    except OSError as exc:
        log.warning("cannot resolve coordinators %s: %s", name_port, exc)
        return []
    hosts = {str(a[4][0]) for a in found}
    return sorted(f"[{h}]:{port}" if ":" in h else f"{h}:{port}" for h in hosts)
