"""`dtenant status`: what every tenant has, in one registry read and one D-Bus call.

Running daemons alone are asked for their containers (a stopped daemon is never woken).
Data-root sizes are measured by the reaper, at most every SIZE_EVERY seconds per tenant,
and shown as of then: walking every data-root here would not be fast.
"""

from __future__ import annotations

import json
import os
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from dtenant_session import activity, binaries, dockerapi, files, log, paths, systemd, treewalk
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
    disk: tuple[int | None, int] | None = None  # (used, cap) of its own disk (disk_max)


def _state(unit: systemd.UnitState | None, default: str) -> str:
    if unit is None:
        return default
    return unit.sub if unit.active == "active" else unit.active


class Size(NamedTuple):
    """The data-root's size as the reaper last measured it."""

    bytes: int | None
    note: str = ""  # why it is a lower bound or unknown; empty when exact


def _size_files(allocation: Allocation) -> tuple[Path, Path]:
    """Where the measurement is kept: the state directory, and /run when that is full."""
    return (allocation.tenant.state_dir / SIZE_FILE,
            Path(paths.RUN_TENANTS_DIR) / allocation.user / SIZE_FILE)  # fmt: skip


def _size_record(allocation: Allocation) -> dict[str, Any]:
    """The latest measurement kept (empty: none)."""
    records = []
    for place in _size_files(allocation):
        try:
            record = json.loads(place.read_text())
            records.append((float(record.get("measured", 0)), record))
        except (OSError, ValueError, TypeError, AttributeError):
            continue
    return max(records, key=lambda r: r[0])[1] if records else {}


def data_root_size(allocation: Allocation) -> Size:
    record = _size_record(allocation)
    try:
        size = record.get("bytes")
        return Size(None if size is None else int(size), str(record.get("note", "")))
    except (ValueError, TypeError):
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
    record = json.dumps({"bytes": size.bytes, "note": size.note, "measured": time.time()})
    kept, spare = _size_files(allocation)
    try:
        files.write_if_changed(kept, record, files.PRIVATE)
    except OSError:  # a full disk: the measurement matters most now
        spare.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        files.write_if_changed(spare, record, files.PRIVATE)
    return size


def measured_at(allocation: Allocation) -> float:
    """When the data-root was last measured (0: never)."""
    try:
        return float(_size_record(allocation).get("measured", 0.0))
    except (ValueError, TypeError):
        return 0.0


def size_is_stale(allocation: Allocation) -> bool:
    """Used since last measured, an hour ago or more (at once when the disk is low)."""
    measured = measured_at(allocation)
    if not measured:
        return True
    last_use = activity.last(allocation.user) or 0.0
    old = time.time() - measured > SIZE_EVERY or low_space(room())
    return old and last_use > measured


class Room(NamedTuple):
    free: int  # bytes available to unprivileged writers (containers)
    total: int


LOW_SHARE = 0.05  # below this share free, the disk holding the tenants is "low"


def room(path: str = paths.STATE_DIR) -> Room | None:
    try:
        fs = os.statvfs(path)
    except OSError:
        return None
    return Room(fs.f_bavail * fs.f_frsize, fs.f_blocks * fs.f_frsize)


def low_space(space: Room | None) -> bool:
    return space is not None and space.free < space.total * LOW_SHARE


def space_note(space: Room | None, rows: list[TenantStatus], largest: int = 3) -> str:
    """When the disk holding the tenants is low: how low, and who holds the most (pure)."""
    if not low_space(space) or space is None:
        return ""
    sized = sorted((r for r in rows if r.data_root_bytes), key=lambda r: -(r.data_root_bytes or 0))
    who = ", ".join(f"{r.user} {_bytes(r.data_root_bytes, r.data_root_note)}"
                    for r in sized[:largest]) or "not measured yet (`dtenant reap`)"  # fmt: skip
    state = "full" if space.free == 0 else "low"
    return (f"{paths.STATE_DIR} is {state}: {_bytes(space.free)} free of "
            f"{_bytes(space.total)}; largest data-roots: {who}")  # fmt: skip


def own_disk(allocation: Allocation) -> tuple[int | None, int] | None:
    """(bytes used, cap) of a capped tenant's disk; used is None while it is not mounted."""
    t = allocation.tenant
    try:
        cap = t.disk_image.stat().st_size
    except OSError:
        return None
    if not os.path.ismount(t.data_root):
        return None, cap
    fs = os.statvfs(t.data_root)
    return (fs.f_blocks - fs.f_bfree) * fs.f_frsize, cap


def running_containers(allocation: Allocation) -> int | None:
    """Asked of a running daemon only; None when it does not answer. The reaper's user
    agent: the authorization plugin does not count this as the tenant's activity."""
    try:
        return dockerapi.info_count(allocation.user, "ContainersRunning", timeout=5)
    except OSError as exc:
        log.log(f"cannot count running containers: {exc}", priority=log.WARNING,
                user=allocation.user, step="status")  # fmt: skip
        return None


RESTARTING = "/containers/json?limit=100&filters=" + urllib.parse.quote('{"status":["restarting"]}')


def containers_in_use(allocation: Allocation) -> int | None:
    """For the reaper: the running containers, the paused ones and those waiting out a
    restart policy's back-off between two runs (the summary counts neither as running,
    and the last then has no process at all); None when the daemon does not answer."""
    try:
        running, paused = dockerapi.info_counts(
            allocation.user, ["ContainersRunning", "ContainersPaused"], timeout=5
        )
        restarting = json.loads(dockerapi.get(allocation.user, RESTARTING, timeout=5))
    except (OSError, ValueError) as exc:
        log.log(f"cannot count the containers in use: {exc}", priority=log.WARNING,
                user=allocation.user, step="status")  # fmt: skip
        return None
    if not isinstance(restarting, list):
        log.log("cannot count the containers in use: the daemon's list is no list",
                priority=log.WARNING, user=allocation.user, step="status")  # fmt: skip
        return None
    return running + paused + len(restarting)


def collect(user: str | None = None) -> list[TenantStatus]:
    with Registry(read_only=True) as registry:
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
                disk=own_disk(a),
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


def _size(row: TenantStatus) -> str:
    """The data-root's size, or a capped tenant's use of its disk: USED/CAP."""
    if row.disk is None:
        return _bytes(row.data_root_bytes, row.data_root_note)
    used, cap = row.disk
    return f"{_bytes(used) if used is not None else 'unmounted'}/{_bytes(cap)}"


def table(rows: list[TenantStatus], space: Room | None = None) -> str:
    header = ("USER", "UID", "BRIDGE", "SUBNET", "NETWORKS", "SOCKET", "DAEMON", "RUNNING",
              "IDLE", "MEMORY", "CPU", "SIZE")  # fmt: skip
    lines = [header] + [
        (r.user, str(r.uid), r.bridge, r.subnet, r.networks, r.socket_state, r.daemon_state,
         "-" if r.running_containers is None else str(r.running_containers),
         _duration(r.idle_seconds), _bytes(r.memory_bytes),
         "-" if r.cpu_seconds is None else _duration(r.cpu_seconds),
         _size(r))
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
    return "\n".join([text, *notes, *filter(None, [space_note(space, rows)])])
