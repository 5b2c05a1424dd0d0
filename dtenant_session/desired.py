"""What one tenant consists of on the host, written once (pure).

`state()` gives a tenant's complete desired state from its registry entry, the
configuration and two facts about its account: provisioning applies it
(provision.py), `dtenant verify` compares the host with it (verify.py), registry
recovery reads a tenant back from the files it names (`recovered`, recover.py), and
removal deletes exactly what it lists (lifecycle.py). Adding something to a tenant is a
change here; tests/unit/test_desired.py keeps the four in agreement.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from dtenant_session import files, ownerstamp, paths, render, subid
from dtenant_session.config import DISK_MIN, Config, Limits, disk_bytes
from dtenant_session.registry import Allocation
from dtenant_session.tenant import Tenant

REMOVED_MARK = "REMOVED"  # in a kept data directory: removed on purpose, not lost


@dataclass(frozen=True)
class File:
    path: Path
    content: str
    mode: int
    units: bool = False  # a unit drop-in: systemd reloads when it changes


@dataclass(frozen=True)
class Directory:
    path: Path
    uid: int
    gid: int
    mode: int


@dataclass(frozen=True)
class Account:
    """What the state needs of the user's account besides the registry: the primary group
    (the daemon's map keeps it) and the bind roots resolved (the daemon may write there)."""

    gid: int
    bind_roots: tuple[str, ...]


@dataclass(frozen=True)
class TenantState:
    allocation: Allocation
    directories: tuple[Directory, ...]  # made in this order, parents first
    files: tuple[File, ...]
    enabled: tuple[str, ...]  # units enabled and started (the socket)
    units: tuple[str, ...]  # every unit of the tenant: stopped at removal
    bridge: str
    bridge_address: str
    firewall: Mapping[str, tuple[str, ...]]  # nftables set -> the tenant's elements
    id_reservation: str  # the line /etc/subuid and /etc/subgid hold for it
    owner: Mapping[str, object]  # the owner stamp's identity fields
    disk_size: int = 0  # bytes of the data-root's own filesystem (limits.disk_max); 0: none
    mounts: tuple[str, ...] = ()  # mount units: stopped at removal after `units`

    @property
    def host_files(self) -> tuple[Path, ...]:
        """Its files outside its data directory: removal deletes them; the ones inside go
        with the data (kept unless purged, so that the tenant can be provisioned again)."""
        state_dir = self.allocation.tenant.state_dir
        return tuple(f.path for f in self.files if state_dir not in f.path.parents)


def state(allocation: Allocation, config: Config, account: Account) -> TenantState:
    t = allocation.tenant
    root = t.id_base
    disk_size = disk_bytes(config.limits.disk_max)
    disk = (File(Path(paths.SYSTEMD_DIR) / t.disk_unit, render.disk_mount(allocation), 0o644,
                 units=True),) if disk_size else ()  # fmt: skip
    return TenantState(
        allocation=allocation,
        directories=(
            Directory(t.state_dir, 0, root, 0o710),
            Directory(t.data_root, 0, root, 0o710),
            Directory(t.run_dir, 0, root, 0o710),
            # Made as dockerd would make it: its parent is read-only to the daemon.
            Directory(t.bundle_dir, root, root, 0o700),
        ),
        files=(
            File(t.daemon_json, render.daemon_json(allocation, config), files.PRIVATE),
            File(t.subid_files[subid.SUBUID], subid.private_text(root, t.uid), files.PRIVATE),
            File(t.subid_files[subid.SUBGID], subid.private_text(root, account.gid), files.PRIVATE),
            File(
                t.service_dropin,
                render.service_dropin(allocation, account.bind_roots, bool(disk_size)),
                0o644,
                units=True,
            ),
            File(t.socket_dropin, render.socket_dropin(allocation), 0o644, units=True),
            File(t.netdev_file, render.netdev(allocation), 0o644),
            File(t.network_file, render.network(allocation), 0o644),
            *disk,
        ),
        enabled=(t.socket_unit,),
        units=(
            t.service_unit,
            t.socket_unit,
            f"dtenant-authz@{t.instance}.service",
            f"dtenant-authz@{t.instance}.socket",
            f"dtenant-daemon-failed@{t.instance}.service",
        ),
        bridge=t.bridge,
        bridge_address=allocation.bridge_address,
        firewall=render.firewall_elements(allocation),
        id_reservation=subid.reservation(root)[0].line(),
        owner={"user": t.user, "uid": t.uid},
        disk_size=disk_size,
        mounts=(t.disk_unit,) if disk_size else (),
    )


UNKNOWN_ACCOUNT = Account(gid=-1, bind_roots=())


def layout(allocation: Allocation) -> TenantState:
    """The tenant's state where only names matter (paths, units, bridge, firewall
    elements), for taking it away: its account may be gone, and no content is compared.
    Its disk's mount is listed whether or not limits.disk_max caps it now."""
    capped = Config(limits=Limits(disk_max=f"{DISK_MIN >> 30}G"))
    return state(allocation, capped, UNKNOWN_ACCOUNT)


class Unrecoverable(ValueError):
    pass


def recovered(user: str, read: Callable[[Path], str], created: float, home: str) -> Allocation:
    """A tenant's registry entry read back from the files its state names (the inverse of
    `state` for what the registry holds). Unrecoverable names what is missing or wrong."""
    t = Tenant(user, 0, 0)  # the paths that depend on the name alone
    try:
        daemon = json.loads(read(t.daemon_json))
        bridge = daemon["bridge"]
        pool = daemon["default-address-pools"][0]["base"]
        slot = int(bridge.removeprefix("dtenant"))
        network = Tenant(user, 0, slot).network_file
        address = next(
            line.split("=", 1)[1]
            for line in read(network).splitlines()
            if line.startswith("Address=")
        )
        uid = int(json.loads(read(Path(ownerstamp.path(user))))["uid"])
        subnet = str(ipaddress.IPv4Interface(address.strip()).network)
    except (OSError, ValueError, KeyError, IndexError, TypeError, StopIteration) as exc:
        raise Unrecoverable(
            f"{user}: cannot recover the allocation from {t.state_dir}: {exc}"
        ) from None
    remap = str(daemon.get("userns-remap", "")).split(":", 1)[0]
    return Allocation(user, uid, slot, subnet, pool, created, home, id_base_of(remap))


def id_base_of(account: str) -> int:
    """The tenant's block from the account its daemon.json names (0 for 0.1's daemon.json,
    which named the user: that tenant is moved at the next setup)."""
    number = account.removeprefix("_dtenant")
    if number == account or not number.isdigit():
        return 0
    return int(number) * subid.ID_BLOCK


def removed_mark(state_dir: Path) -> Path:
    """Marks a tenant's data kept by `dtenant remove`: not a lost tenant."""
    return state_dir / REMOVED_MARK


@dataclass(frozen=True)
class Observed:
    """What the host has of one tenant's state, as verify.py looked."""

    files: Mapping[Path, tuple[str, int] | None]  # content and mode; None: missing
    directories: Mapping[Path, tuple[int, int, int] | None]  # uid, gid, mode
    enabled: frozenset[str]
    bridge_addresses: frozenset[str] | None  # None: no such link
    firewall: Mapping[str, frozenset[str]] | None  # set -> elements found; None: not looked


Difference = tuple[str, str, str]  # (check, problem, path)


def differences(wanted: TenantState, seen: Observed) -> list[Difference]:
    """Every way the host differs from the tenant's state."""
    return [
        *_file_differences(wanted, seen),
        *_directory_differences(wanted, seen),
        *(("units", f"{unit} is not enabled", unit)
          for unit in wanted.enabled if unit not in seen.enabled),
        *_network_differences(wanted, seen),
    ]  # fmt: skip


def _file_differences(wanted: TenantState, seen: Observed) -> list[Difference]:
    found = []
    for file in wanted.files:
        actual = seen.files.get(file.path)
        if actual is None:
            problem = "is missing"
        elif actual[0] != file.content:
            problem = "differs from the registry and config"
        elif actual[1] != file.mode:
            problem = f"has mode {actual[1]:o}, not {file.mode:o}"
        else:
            continue
        found.append(("files", f"{file.path} {problem}", str(file.path)))
    return found


def _directory_differences(wanted: TenantState, seen: Observed) -> list[Difference]:
    found = []
    for directory in wanted.directories:
        owned = seen.directories.get(directory.path)
        want = (directory.uid, directory.gid, directory.mode)
        if owned == want:
            continue
        problem = "is missing" if owned is None else "is {}:{} {:o}, not {}:{} {:o}".format(
            *owned, *want)  # fmt: skip
        found.append(("directories", f"{directory.path} {problem}", str(directory.path)))
    return found


def _network_differences(wanted: TenantState, seen: Observed) -> list[Difference]:
    found = []
    if seen.bridge_addresses is None or wanted.bridge_address not in seen.bridge_addresses:
        state = "is missing" if seen.bridge_addresses is None else "lacks its address"
        found.append(("network", f"bridge {wanted.bridge} {state} ({wanted.bridge_address})",
                      wanted.bridge))  # fmt: skip
    if seen.firewall is not None:
        found += [("firewall", f"{element} is not in dtenant's set {name}", name)
                  for name, elements in wanted.firewall.items() for element in elements
                  if element not in seen.firewall.get(name, frozenset())]  # fmt: skip
    return found
