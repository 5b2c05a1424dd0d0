"""`dtenant status`: what every tenant has, in one registry read and one D-Bus call.

Running daemons alone are asked for their containers (a stopped daemon is never woken).
Data-root sizes are measured by the reaper, at most every SIZE_EVERY seconds per tenant,
and shown as of then: walking every data-root here would not be fast.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import NamedTuple

from dtenant_session import activity, binaries, dockerapi, files, log, systemd, treewalk
from dtenant_session.errors import DtenantError
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
    memory_bytes: int | None  # the tenant's slice: daemon, containerd, shims, plugin, containers
    cpu_seconds: float | None  # CPU time of the slice since it started
    data_root_note: str  # the size is a lower bound or unknown, and why
    # Binaries its daemon's processes run old copies of (a docker.io or containerd update
    # since it started): `dtenant restart --outdated` moves it to the new ones.
    outdated: list[str] = field(default_factory=list)


def _state(unit: systemd.UnitState | None, default: str) -> str:
    if unit is None:
        return default
    return unit.sub if unit.active == "active" else unit.active


class Size(NamedTuple):
    """The data-root's size as the reaper last measured it."""

    bytes: int | None
    note: str = ""  # why it is a lower bound or unknown; empty when exact


def data_root_size(allocation: Allocation) -> Size:
    try:
        record = json.loads((allocation.tenant.state_dir / SIZE_FILE).read_text())
        size = record.get("bytes")
        return Size(None if size is None else int(size), str(record.get("note", "")))
    except (OSError, ValueError, TypeError, AttributeError):
        return Size(None)


def measure_size(allocation: Allocation, limits: treewalk.Limits = treewalk.DEFAULT) -> Size:
    """Disk used by the data-root (blocks, this filesystem only, hard links once),
    remembered for status. Whatever the tenant stored, this ends within the limits; a
    walk cut short is a lower bound and says why, one that could not start says that."""
    try:
        result = treewalk.disk_usage(str(allocation.tenant.data_root), limits)
        size = Size(result.bytes, result.summary())
    except OSError as exc:
        size = Size(None, f"cannot measure {allocation.tenant.data_root}: {exc.strerror}")
    record = {"bytes": size.bytes, "note": size.note, "measured": time.time()}
    files.write_if_changed(
        allocation.tenant.state_dir / SIZE_FILE, json.dumps(record), files.PRIVATE
    )
    return size


def measured_at(allocation: Allocation) -> float:
    """When the data-root was last measured (0: never)."""
    try:
        record = json.loads((allocation.tenant.state_dir / SIZE_FILE).read_text())
        return float(record["measured"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0.0


def size_is_stale(allocation: Allocation) -> bool:
    measured = measured_at(allocation)
    if not measured:
        return True
    last_use = activity.last(allocation.user) or 0.0
    return time.time() - measured > SIZE_EVERY and last_use > measured


def running_containers(allocation: Allocation) -> int | None:
    """Asked of a running daemon only; None when it does not answer. The reaper's user
    agent: the authorization plugin does not count this as the tenant's activity."""
    try:
        return dockerapi.info_count(allocation.user, "ContainersRunning", timeout=5)
    except OSError as exc:
        log.log(f"cannot count running containers: {exc}", priority=log.WARNING,
                user=allocation.user, step="status")  # fmt: skip
        return None


def collect(user: str | None = None) -> list[TenantStatus]:
    with Registry() as registry:
        allocations = [registry.get(user)] if user else registry.all()
    present = [a for a in allocations if a is not None]
    if user and not present:
        raise DtenantError(f"{user!r} is not a registered tenant (`dtenant status` lists them)")

    async def look(bus: systemd.Bus) -> tuple[dict[str, systemd.UnitState], Usage, Groups]:
        units = await bus.units(["docker@*.socket", "docker@*.service"])
        usage = await bus.slice_usage("dtenant-*.slice")
        return units, usage, await bus.control_groups(["docker@*.service"])

    try:
        units, usage, groups = systemd.run(look)
    except systemd.BusError:
        units, usage, groups = {}, {}, {}
    now = time.time()
    rows = []
    for a in present:
        t = a.tenant
        daemon = units.get(t.service_unit)
        running = daemon is not None and daemon.active == "active"
        last = activity.last(a.user)
        size = data_root_size(a)
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
                data_root_bytes=size.bytes,
                data_root_note=size.note,
                memory_bytes=usage.get(t.slice, (None, None))[0],
                cpu_seconds=_seconds(usage.get(t.slice, (None, None))[1]),
                outdated=binaries.outdated(groups[t.service_unit])
                if groups.get(t.service_unit)
                else [],
            )
        )
    return rows


Usage = dict[str, tuple[int | None, int | None]]
Groups = dict[str, str]


def _seconds(nanoseconds: int | None) -> float | None:
    return None if nanoseconds is None else round(nanoseconds / 1e9, 1)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"


def _bytes(size: int | None, note: str = "") -> str:
    """'?' when unknown for a reason, '>' before a lower bound."""
    if size is None:
        return "?" if note else "-"
    more = ">" if note else ""
    for unit, scale in (("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if size >= scale:
            return f"{more}{size / scale:.1f}{unit}"
    return f"{more}{size}B"


def table(rows: list[TenantStatus]) -> str:
    header = ("USER", "UID", "BRIDGE", "SUBNET", "NETWORKS", "SOCKET", "DAEMON", "RUNNING",
              "IDLE", "MEMORY", "CPU", "SIZE")  # fmt: skip
    lines = [header] + [
        (r.user, str(r.uid), r.bridge, r.subnet, r.networks, r.socket_state, r.daemon_state,
         "-" if r.running_containers is None else str(r.running_containers),
         _duration(r.idle_seconds), _bytes(r.memory_bytes),
         "-" if r.cpu_seconds is None else _duration(r.cpu_seconds),
         _bytes(r.data_root_bytes, r.data_root_note))
        for r in rows
    ]  # fmt: skip
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )
    notes = [f"{r.user}: data-root size: {r.data_root_note}" for r in rows if r.data_root_note]
    notes += [f"{r.user}: the daemon runs an outdated {', '.join(r.outdated)} (updated since "
              f"it started): `dtenant restart --outdated`" for r in rows if r.outdated]  # fmt: skip
    return "\n".join([text, *notes])
