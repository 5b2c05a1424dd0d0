"""The host side of tenant networking: networkd files, dtenant's nftables table, routes.

Tenant daemons run with iptables off; forwarding, NAT and isolation between tenants
live in one nftables table that only dtenant writes (`inet dtenant`), replaced
atomically from the registry, so no dockerd start can change another tenant's traffic.
"""

from __future__ import annotations

import ipaddress
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path

from dtenant_session import command, egress, mountinfo, paths, render
from dtenant_session.config import Config
from dtenant_session.errors import DtenantError
from dtenant_session.registry import Allocation

IP_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")


class NetworkError(DtenantError):
    pass


def routed_subnets() -> list[ipaddress.IPv4Network]:
    """Every IPv4 destination routed on this host, in any table."""
    result = command.run(
        [command.which("ip"), "-j", "-4", "route", "show", "table", "all"], timeout=10
    )
    found = []
    for route in json.loads(result.stdout or "[]"):
        destination = route.get("dst", "")
        if destination in ("default", ""):
            continue
        try:
            found.append(ipaddress.IPv4Network(destination, strict=False))
        except ValueError:
            continue
    return found


def bridge_slots_in_use() -> set[int]:
    """Slots whose bridge (dtenantN) exists as a link on the host, registered or not."""
    slots = set()
    for name in os.listdir("/sys/class/net"):
        number = name.removeprefix("dtenant")
        if number != name and number.isdigit():
            slots.add(int(number))
    return slots


def bridge_address(bridge: str) -> str | None:
    result = command.run(
        [command.which("ip"), "-j", "-4", "addr", "show", "dev", bridge], check=False, timeout=5
    )
    if result.returncode != 0:
        return None
    for link in json.loads(result.stdout or "[]"):
        for address in link.get("addr_info", []):
            return f"{address['local']}/{address['prefixlen']}"
    return None


def ensure_bridge(allocation: Allocation) -> str:
    """The bridge exists, up, with its address (dockerd reads it when it starts).

    Created here directly, not by reloading networkd: a reload re-reads every tenant's
    files (0.4 s at 1,000 tenants, and fifty first logins would queue fifty of them), and
    networkd may be stopped or failing. networkd creates the bridge from its files at
    boot, and the pre-start check reloads it should a bridge be missing. Returns what was
    done."""
    bridge, address = allocation.tenant.bridge, allocation.bridge_address
    found = bridge_address(bridge)
    if found == address:
        return "present"
    if found is not None:
        raise NetworkError(
            f"bridge {bridge} exists with {found}, not {address} ({allocation.user}'s): a "
            "tenant the registry no longer knows? See `dtenant verify`"
        )
    ip = command.which("ip")
    # "File exists" is fine: networkd may be creating it at the same moment.
    command.run([ip, "link", "add", bridge, "type", "bridge"], check=False, timeout=10)
    command.run([ip, "addr", "replace", address, "dev", bridge], timeout=10)
    command.run([ip, "link", "set", bridge, "up"], timeout=10)
    found = bridge_address(bridge)
    if found != address:
        state = f"has {found}" if found else "is missing or has no address"
        raise NetworkError(f"bridge {bridge} of {allocation.user} {state}, expected {address}")
    return "created"


def unconfigured_bridges(allocations: Sequence[Allocation]) -> list[Allocation]:
    """The tenants whose bridge is missing or lacks its address (one netlink dump)."""
    present = link_addresses()
    return [a for a in allocations
            if a.bridge_address not in present.get(a.tenant.bridge, set())]  # fmt: skip


def ensure_bridges(allocations: Sequence[Allocation], *, networkd_grace: float = 5.0,
                   poll: float = 0.2) -> list[tuple[str, str]]:  # fmt: skip
    """At boot: every tenant's bridge up with its address, whoever else fails to make it.

    networkd makes them from the tenants' files, and may still be at it when this runs;
    it gets `networkd_grace` seconds after each look that found it further on. What is
    left then (networkd masked or stopped, a link it left unconfigured) is made here, as
    a login would make it: a daemon started by its socket alone never finds its bridge
    without an address.
    Returns (user, what was done) for each tenant put right."""
    missing = unconfigured_bridges(allocations)
    deadline = time.monotonic() + networkd_grace
    while missing and time.monotonic() < deadline and _networkd_running():
        time.sleep(poll)
        left = unconfigured_bridges(missing)
        if len(left) < len(missing):  # still at it: thousands of bridges take a while
            deadline = time.monotonic() + networkd_grace
        missing = left
    steps = []
    for allocation in missing:
        try:
            done = ensure_bridge(allocation)
        except DtenantError as exc:  # one tenant's bridge must not keep the others down
            steps.append((allocation.user, f"bridge not made: {exc}"))
            continue
        steps.append((allocation.user, f"bridge {allocation.tenant.bridge} {done} with "
                      f"{allocation.bridge_address}: networkd had not made it"))  # fmt: skip
    return steps


def _networkd_running() -> bool:
    state = command.run([command.which("systemctl"), "is-active", "systemd-networkd.service"],
                        check=False, timeout=10)  # fmt: skip
    return state.stdout.strip() in ("active", "activating", "reloading")


def link_addresses() -> dict[str, set[str]]:
    """Every link of the host and its IPv4 addresses (ADDRESS/PREFIX), in one netlink dump;
    for checks over all tenants, not for the login path (pyroute2 takes ~0.3 s to import)."""
    from pyroute2 import IPRoute

    with IPRoute() as netlink:
        names = {link["index"]: link.get_attr("IFLA_IFNAME") for link in netlink.get_links()}
        found: dict[str, set[str]] = {name: set() for name in names.values()}
        for address in netlink.get_addr(family=2):
            name = names.get(address["index"])
            if name is not None:
                found[name].add(f"{address.get_attr('IFA_ADDRESS')}/{address['prefixlen']}")
    return found


def sync_firewall(allocations: Sequence[Allocation], config: Config) -> None:
    """Replace dtenant's nftables table in one transaction; let tenant traffic forward.

    Without the filter of tenant daemons' own traffic (no cgroup2 hierarchy, no
    dtenant.slice) the rest is loaded all the same and this fails after: no daemon
    starts then (egress.before_start), every other tenant's traffic still flows."""
    prefix, daemon_egress = _daemon_egress(allocations, config)
    ruleset = render.nft_ruleset(allocations, config.network.isolation, daemon_egress)
    command.run([command.which("nft"), "-f", "-"], input=ruleset, timeout=30)
    _let_tenant_traffic_through(config)
    if not daemon_egress:
        where = f"{egress.SYSFS_CGROUP}/{prefix}{egress.TOP_SLICE}" if prefix is not None else (
            f"a cgroup2 hierarchy below {egress.SYSFS_CGROUP}")  # fmt: skip
        raise NetworkError(f"no {where}: tenant daemons' own traffic cannot be filtered, "
                           "so none of them will start")  # fmt: skip


def _daemon_egress(allocations: Sequence[Allocation], config: Config) -> tuple[str | None, str]:
    """(cgroup2 prefix, the chains filtering daemons' own traffic, "" when impossible)."""
    prefix = egress.cgroup2_prefix(mountinfo.read())
    if prefix is None:
        return None, ""
    top = f"{prefix}{egress.TOP_SLICE}"
    if not egress.existing(top):
        # Active from boot (dtenant-firewall.service wants it) and never empty after.
        command.run([command.which("systemctl"), "start", egress.TOP_SLICE], check=False)
        if not egress.existing(top):
            return prefix, ""
    own = [(a.tenant.slice, a) for a in allocations if egress.existing(f"{top}/{a.tenant.slice}")]
    return prefix, render.nft_daemon_egress(prefix, own, config.network)


def sync_from_registry() -> None:
    """`dtenant firewall sync`: the table from the registry and the configuration."""
    from dtenant_session import config
    from dtenant_session.registry import Registry

    settings = config.load()
    with Registry() as registry:
        allocations = registry.all()
    sync_firewall(allocations, settings)


def add_to_firewall(allocation: Allocation, everyone: Sequence[Allocation], config: Config) -> str:
    """One tenant's ranges into the existing table (a login at scale must not rewrite
    a thousand tenants' rules); the whole table when it is missing. Returns which."""
    nft = command.which("nft")
    added = command.run([nft, "-f", "-"], input=render.nft_add_tenant(allocation), check=False)
    if added.returncode != 0:
        sync_firewall(everyone, config)
        return "table rebuilt"
    _let_tenant_traffic_through(config)
    return "tenant added"


def _let_tenant_traffic_through(config: Config) -> None:
    iptables = _iptables()
    # One listing of the whole table instead of a check per rule: this runs at first logins.
    present = set(command.run([iptables, "-w", "5", "-S"]).stdout.splitlines())
    _accept_in_docker_user(iptables, config, present)
    _enable_forwarding(iptables, present)


def _iptables() -> str:
    try:
        return command.which("iptables")
    except command.CommandError:
        raise NetworkError(
            "iptables is missing (package iptables): without it dtenant cannot turn "
            "forwarding on and keep the host from routing for others"
        ) from None


def _enable_forwarding(iptables: str, present: set[str]) -> None:
    """Docker's rule: whoever makes the host forward keeps it from becoming a router. When
    forwarding is off, the iptables FORWARD policy becomes DROP (tenant traffic is accepted
    in DOCKER-USER) before forwarding goes on; a system dockerd that starts later finds it
    on and keeps that policy. Having done so, dtenant sets DROP again whenever it finds it
    gone (a flushed ruleset: nftables.service restarts take the policy with them). When
    forwarding was on already (a router, or the system daemon did it), the policy is left
    to whoever turned it on."""
    mark = Path(paths.FORWARDING_MARK)
    try:
        forwarding = IP_FORWARD.read_text().strip() == "1"
        if forwarding and not mark.exists():
            return
        if "-P FORWARD DROP" not in present:
            command.run([iptables, "-w", "5", "-P", "FORWARD", "DROP"])
        # At boot this may run before systemd-tmpfiles has made /run/dtenant.
        mark.parent.mkdir(mode=0o700, exist_ok=True)
        mark.touch(mode=0o600)
        if not forwarding:
            IP_FORWARD.write_text("1\n")
    except OSError as exc:
        raise NetworkError(f"cannot enable IPv4 forwarding ({IP_FORWARD}): {exc}") from None


def docker_user_rules(config: Config) -> list[list[str]]:
    """dtenant's ACCEPT rules in DOCKER-USER (as `iptables -S` prints them, without -A
    DOCKER-USER): tenant traffic out, replies in. What a tenant may not reach is dropped
    in dtenant's own nftables table first (a drop there is final)."""
    pools = (config.network.bridge_pool, config.network.networks_pool)
    replies = ["-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED"]
    matches = [["-s", pool] for pool in pools] + [["-d", pool, *replies] for pool in pools]
    return [[*match, "-m", "comment", "--comment", "dtenant", "-j", "ACCEPT"] for match in matches]


def _accept_in_docker_user(iptables: str, config: Config, present: set[str]) -> None:
    """Tenant traffic accepted in DOCKER-USER, the chain Docker keeps for local rules
    (created with its jump from FORWARD when missing; a system dockerd that starts later
    keeps both), so a FORWARD policy of DROP leaves tenants their traffic."""
    if "-N DOCKER-USER" not in present:
        # check=False: a system dockerd starting now may create it first; the jump is checked.
        command.run([iptables, "-w", "5", "-N", "DOCKER-USER"], check=False)
    if "-A FORWARD -j DOCKER-USER" not in present:
        command.run([iptables, "-w", "5", "-I", "FORWARD", "-j", "DOCKER-USER"])
    for rule in docker_user_rules(config):
        if " ".join(["-A", "DOCKER-USER", *rule]) not in present:
            command.run([iptables, "-w", "5", "-I", "DOCKER-USER", *rule])
