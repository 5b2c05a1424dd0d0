"""`dtenant status`: what every tenant has, in one registry read and one D-Bus call.

Running daemons alone are asked for their containers (a stopped daemon is never woken).
Data-root sizes are measured by the reaper, at most every SIZE_EVERY seconds per tenant,
and shown as of then: walking every data-root here would not be fast.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass

from dtenant_session import activity, files, log, systemd
from dtenant_session.authz import REAPER_AGENT
from dtenant_session.registry import Allocation, Registry

SIZE_EVERY = 3600.0
SIZE_FILE = "size.json"


@dataclass(frozen=True)
class TenantStatus:
    user: str
    uid: int
    slot: int
    bridge: str
    subnet: str
    networks: str
    socket: str
    socket_state: str
    daemon_state: str
    running_containers: int | None
    idle_seconds: float | None
    data_root_bytes: int | None


def _state(unit: systemd.UnitState | None, default: str) -> str:
    if unit is None:
        return default
    return unit.sub if unit.active == "active" else unit.active


def data_root_size(allocation: Allocation) -> int | None:
    """As the reaper last measured it."""
    try:
        return int(json.loads((allocation.tenant.state_dir / SIZE_FILE).read_text())["bytes"])
    except (OSError, ValueError, KeyError):
        return None


def measure_size(allocation: Allocation) -> int:
    """Disk used by the data-root (blocks, this filesystem only), remembered for status."""
    root = allocation.tenant.data_root
    device = root.stat().st_dev
    total = 0
    for directory, subdirs, names in os.walk(root):
        for name in names + subdirs:
            try:
                st = os.lstat(os.path.join(directory, name))
            except OSError:
                continue
            if st.st_dev == device:
                total += st.st_blocks * 512
    record = allocation.tenant.state_dir / SIZE_FILE
    files.write_if_changed(
        record, json.dumps({"bytes": total, "measured": time.time()}), files.PRIVATE
    )
    return total


def size_is_stale(allocation: Allocation) -> bool:
    try:
        record = json.loads((allocation.tenant.state_dir / SIZE_FILE).read_text())
        measured = float(record["measured"])
    except (OSError, ValueError, KeyError, TypeError):
        return True
    last_use = activity.last(allocation.user) or 0.0
    return time.time() - measured > SIZE_EVERY and last_use > measured


def running_containers(allocation: Allocation) -> int | None:
    """Asked of a running daemon only; None when it does not answer. The reaper's user
    agent: the authorization plugin does not count this as the tenant's activity."""
    import docker

    try:
        client = docker.DockerClient(base_url=f"unix://{allocation.tenant.socket}", timeout=5,
                                     user_agent=REAPER_AGENT)  # fmt: skip
        try:
            return len(client.containers.list())
        finally:
            client.close()
    except Exception as exc:  # noqa: BLE001 - unknown, and said so
        log.log(f"cannot list containers: {exc}", priority=log.WARNING, user=allocation.user,
                step="status")  # fmt: skip
        return None


def collect(user: str | None = None) -> list[TenantStatus]:
    with Registry() as registry:
        allocations = [registry.get(user)] if user else registry.all()
    present = [a for a in allocations if a is not None]
    try:
        units = systemd.run(lambda bus: bus.units(["docker@*.socket", "docker@*.service"]))
    except systemd.BusError:
        units = {}
    now = time.time()
    rows = []
    for a in present:
        t = a.tenant
        daemon = units.get(t.service_unit)
        running = daemon is not None and daemon.active == "active"
        last = activity.last(a.user)
        rows.append(
            TenantStatus(
                user=a.user,
                uid=a.uid,
                slot=a.slot,
                bridge=t.bridge,
                subnet=a.bridge_subnet,
                networks=a.networks_pool,
                socket=str(t.socket),
                socket_state=_state(units.get(t.socket_unit), "inactive"),
                daemon_state=_state(daemon, "stopped"),
                running_containers=running_containers(a) if running else 0,
                idle_seconds=round(now - last) if last else None,
                data_root_bytes=data_root_size(a),
            )
        )
    return rows


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"


def _bytes(size: int | None) -> str:
    if size is None:
        return "-"
    for unit, scale in (("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if size >= scale:
            return f"{size / scale:.1f}{unit}"
    return f"{size}B"


def table(rows: list[TenantStatus]) -> str:
    header = ("USER", "UID", "BRIDGE", "SUBNET", "NETWORKS", "SOCKET", "DAEMON", "RUNNING",
              "IDLE", "SIZE")  # fmt: skip
    lines = [header] + [
        (r.user, str(r.uid), r.bridge, r.subnet, r.networks, r.socket_state, r.daemon_state,
         "-" if r.running_containers is None else str(r.running_containers),
         _duration(r.idle_seconds), _bytes(r.data_root_bytes))
        for r in rows
    ]  # fmt: skip
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )
