"""`dtenant status`: what every tenant has, in one registry read and one D-Bus call."""

from __future__ import annotations

from dataclasses import dataclass

from dtenant_session import systemd
from dtenant_session.registry import Registry


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


def collect(user: str | None = None) -> list[TenantStatus]:
    with Registry() as registry:
        allocations = [registry.get(user)] if user else registry.all()
    present = [a for a in allocations if a is not None]
    try:
        units = systemd.run(lambda bus: bus.units(["docker@*.socket", "docker@*.service"]))
    except systemd.BusError:
        units = {}
    rows = []
    for a in present:
        t = a.tenant
        sock, service = units.get(t.socket_unit), units.get(t.service_unit)
        rows.append(
            TenantStatus(
                user=a.user,
                uid=a.uid,
                slot=a.slot,
                bridge=t.bridge,
                subnet=a.bridge_subnet,
                networks=a.networks_pool,
                socket=str(t.socket),
                socket_state=sock.sub if sock else "inactive",
                daemon_state=service.sub if service else "stopped",
            )
        )
    return rows


def table(rows: list[TenantStatus]) -> str:
    header = ("USER", "UID", "BRIDGE", "SUBNET", "NETWORKS", "SOCKET", "DAEMON")
    lines = [header] + [
        (r.user, str(r.uid), r.bridge, r.subnet, r.networks, r.socket_state, r.daemon_state)
        for r in rows
    ]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )
