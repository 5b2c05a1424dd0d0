"""A tenant daemon's own outgoing traffic: the cgroups dtenant's firewall matches, and the
check before each daemon start that the filter holds for that daemon.

A tenant's daemon is root in the host's network namespace: unfiltered, it fetches for the
tenant (`fromSrc`, remote build contexts over HTTP and git, `ADD http://`, BuildKit) from
the host's loopback, from link-local metadata services and from other tenants'
containers. dtenant's table (render.nft_daemon_egress) filters the sockets of every
process below dtenant.slice (nftables `socket cgroupv2`): daemon, containerd, git,
docker-proxy. nft turns a cgroup's path into the kernel's id for it when the rules are
loaded; a slice stopped and created again is a new cgroup that stale rules let through.
So before every start the check probes the filter from the daemon's own cgroup, loads
the table again when the probe gets through, and refuses the start when it still does.

Standard library only: check-tenant runs this before every daemon start.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import sqlite3
from collections.abc import Callable, Iterable

from dtenant_session import command, dbread, mountinfo, paths

SYSFS_CGROUP = "/sys/fs/cgroup"  # nft looks cgroupv2 paths up below this directory
TOP_SLICE = "dtenant.slice"
# Never open to a daemon: the filter refuses it at once ("no route to host").
PROBE = ("127.0.0.1", 9)


class EgressError(Exception):
    pass


def cgroup2_prefix(entries: list[mountinfo.MountEntry]) -> str | None:
    """Where the cgroup2 hierarchy is below /sys/fs/cgroup, as a path prefix for nft: ""
    (unified), "unified/" (systemd's hybrid mode); None without one there."""
    for mount in mountinfo.cgroup_mounts(entries):
        if mount.fstype == "cgroup2":
            relative = mount.mount_point.removeprefix(SYSFS_CGROUP).strip("/")
            return f"{relative}/" if relative else ""
    return None


def slice_of(proc_cgroup: str) -> str | None:
    """The tenant slice ("dtenant.slice/dtenant-alice.slice") a /proc/PID/cgroup text
    places its process in; None when it is not below dtenant.slice."""
    for line in proc_cgroup.splitlines():
        if not line.startswith("0::/"):
            continue
        parts = line.removeprefix("0::/").split("/")
        tenant = parts[1] if len(parts) > 1 else ""
        if parts[0] == TOP_SLICE and tenant.startswith("dtenant-") and tenant.endswith(".slice"):
            return f"{TOP_SLICE}/{tenant}"
    return None


def own_elements(cgroup: str, ranges: Iterable[str]) -> str:
    """daemon_own elements: the tenant slice's cgroup (a path for nft) with each of the
    tenant's own ranges, which its daemon's docker-proxy must reach."""
    if '"' in cgroup or "\n" in cgroup:
        raise EgressError(f"cgroup path {cgroup!r} cannot be handed to nft")
    return ", ".join(f'"{cgroup}" . {ipaddress.IPv4Network(r)}' for r in ranges)


def existing(cgroup: str) -> bool:
    return os.path.isdir(f"{SYSFS_CGROUP}/{cgroup}")


def refused_from_here() -> bool:
    """Whether the filter refuses this process a connection to the host's loopback now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(2)
        try:
            probe.connect(PROBE)
        except OSError as exc:
            return exc.errno == errno.EHOSTUNREACH
        return False


def tenant_ranges(user: str) -> tuple[str, str]:
    """The tenant's bridge subnet and network pool, from the registry (read-only)."""
    try:
        db = dbread.connect(paths.REGISTRY)  # a full disk too
        try:
            row = db.execute(
                "SELECT bridge_subnet, networks_pool FROM tenants WHERE user = ?", (user,)
            ).fetchone()
        finally:
            db.close()
    except sqlite3.Error as exc:
        raise EgressError(f"cannot read the registry {paths.REGISTRY}: {exc}") from None
    if row is None:
        raise EgressError("not in the registry")
    return str(row[0]), str(row[1])


NOT_IN_SLICE = "its outgoing traffic cannot be filtered: not started in dtenant.slice"


def before_start(user: str, sync: Callable[[], None]) -> str | None:
    """Why the daemon of `user` must not start, or None: the filter holds for the cgroup
    this check runs in (the daemon's), loaded again with `sync` if it did not, and the
    tenant's own ranges are open to it (its docker-proxy reaches its containers)."""
    with open("/proc/self/cgroup") as stream:
        proc_cgroup = stream.read()
    if slice_of(proc_cgroup) is None:
        return NOT_IN_SLICE
    if not refused_from_here():
        try:
            sync()
        except Exception as exc:  # noqa: BLE001 - any failure here refuses the start
            return f"its outgoing traffic is not filtered, and loading the table failed: {exc}"
        if not refused_from_here():
            return ("its outgoing traffic is not filtered (chain daemon_out of nftables "
                    "table inet dtenant does not match its cgroup)")  # fmt: skip
    return open_own_ranges(user, proc_cgroup)


def run_nft(script: str) -> str | None:
    """nft -f - in a process of its own; what it said, when it failed."""
    done = command.run([command.which("nft"), "-f", "-"], input=script, check=False, timeout=30)
    return None if done.returncode == 0 else done.stderr.strip()


def open_own_ranges(user: str, proc_cgroup: str, nft: Callable[[str], str | None] = run_nft
                    ) -> str | None:  # fmt: skip
    """Open the tenant's own ranges to the tenant slice a /proc/PID/cgroup text places
    the daemon's process in, whose filter has been probed, with `nft` (a script in, what
    nft said when it failed out); why not, or None."""
    tenant_slice = slice_of(proc_cgroup)
    prefix = cgroup2_prefix(mountinfo.read())
    if tenant_slice is None or prefix is None:
        return NOT_IN_SLICE
    own = f"{TOP_SLICE}/dtenant-{paths.unit_word(user)}.slice"
    if tenant_slice != own:  # its ranges would open to another tenant's processes
        return f"its outgoing traffic cannot be filtered: started in {tenant_slice}, not {own}"
    try:
        elements = own_elements(f"{prefix}{tenant_slice}", tenant_ranges(user))
    except (EgressError, ValueError) as exc:
        return f"cannot open its own ranges to it: {exc}"
    failed = nft(f"add element inet dtenant daemon_own {{ {elements} }}\n")
    return None if failed is None else f"cannot open its own ranges to it: nft: {failed}"
