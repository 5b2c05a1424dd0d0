"""Pure text: what dtenant writes for a tenant and for the host. No I/O here."""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Iterable, Sequence
from typing import Any

from dtenant_session import egress, paths, tenant
from dtenant_session.config import Config, Network
from dtenant_session.errors import DtenantError
from dtenant_session.registry import Allocation

HEADER = "# Written by dtenant; local changes are overwritten.\n"


def netdev(allocation: Allocation) -> str:
    tenant = allocation.tenant
    return (
        f"{HEADER}[NetDev]\nName={tenant.bridge}\nKind=bridge\n"
        f"Description=dtenant bridge of {tenant.user}\n"
    )


def network(allocation: Allocation) -> str:
    # Match on the interface name (the original write-up matched a file name: no match).
    return (
        f"{HEADER}[Match]\nName={allocation.tenant.bridge}\n\n"
        f"[Network]\nAddress={allocation.bridge_address}\n"
        "ConfigureWithoutCarrier=yes\nLinkLocalAddressing=no\nIPv6AcceptRA=no\n\n"
        "[Link]\nRequiredForOnline=no\n"
    )


def daemon_config(allocation: Allocation, config: Config) -> dict[str, Any]:
    tenant = allocation.tenant
    owned: dict[str, Any] = {
        "bridge": tenant.bridge,
        "data-root": str(tenant.data_root),
        "exec-root": str(tenant.exec_root),
        "pidfile": str(tenant.pidfile),
        # /etc/docker is read-only to a tenant's daemon (docker@.service).
        "deprecated-key-path": str(tenant.key_file),
        # dtenant owns forwarding, NAT and isolation in its own nftables table: every
        # dockerd start would rewrite the shared DOCKER* chains of the others.
        "iptables": False,
        "ip-masq": False,
        "default-address-pools": [
            {"base": allocation.networks_pool, "size": config.network.network_prefix}
        ],
        # No "containerd": the host's is hidden from the daemon (docker@.service), so it
        # runs one of its own, in its own mount namespace and in the tenant's slice; its
        # containers stop with the daemon (docker@.service's ExecStop=, daemonstop.py).
        # live-restore stays on all the same: off, dockerd deletes the host's docker0 at
        # every start after the first.
        "live-restore": True,
        # Container root is the tenant's own system account, never a person (subid.py).
        "userns-remap": f"{tenant.root_account}:{tenant.root_account}",
        # The daemon and every container of the tenant in the tenant's own slice, whose
        # limits come from [limits]; containers in private cgroup namespaces.
        "exec-opts": ["native.cgroupdriver=systemd"],
        "cgroup-parent": tenant.slice,
        "default-cgroupns-mode": "private",
        # BuildKit's RUN --network=host and --security=insecure stay off.
        "builder": {"entitlements": {"network-host": False, "security-insecure": False}},
        # Every API request passes the tenant's own plugin: policy, and activity for
        # the reaper.
        "authorization-plugins": [paths.authz_plugin(tenant.user)],
    }
    return {**dict(config.daemon.extra), **owned}


def json_text(settings: dict[str, Any]) -> str:
    return json.dumps(settings, indent=2, sort_keys=True) + "\n"


def daemon_json(allocation: Allocation, config: Config) -> str:
    return json_text(daemon_config(allocation, config))


def service_dropin(allocation: Allocation, writable: Sequence[str], disk: bool = False) -> str:
    """docker@USER.service for this tenant: the only places of the host its daemon (and
    everything it starts) may write besides its own state are its bundle directory and
    `writable`, the resolved bind roots (the user's home). Everywhere else a path a
    tenant swaps for a symlink leads to a read-only file system (docker@.service).
    With a disk of its own (limits.disk_max), the data-root is mounted first; should that
    fail, the pre-start check refuses the start (never the bare directory)."""
    t = allocation.tenant
    binds = " ".join([unit_path(str(t.bundle_dir)), *(f"-{unit_path(p)}" for p in writable)])
    mount = f"[Unit]\nWants={t.disk_unit}\nAfter={t.disk_unit}\n\n" if disk else ""
    return (
        f"{HEADER}# The daemon of {t.user} (uid {t.uid}; container root {t.id_base}).\n"
        f"{mount}[Service]\nBindPaths={binds}\n"
    )


def disk_mount(allocation: Allocation) -> str:
    """The mount unit of a capped tenant's data-root: its filesystem image, on a loop
    device (limits.disk_max; disk.py makes and sizes the image)."""
    t = allocation.tenant
    return (
        f"{HEADER}# The data-root of {t.user}, capped by limits.disk_max.\n"
        f"[Unit]\nDescription=dtenant: disk of {t.user}\nBefore={t.service_unit}\n\n"
        f"[Mount]\nWhat={unit_path(str(t.disk_image))}\nWhere={unit_path(str(t.data_root))}\n"
        "Type=ext4\nOptions=loop,nodev,noatime\n"
    )


def socket_dropin(allocation: Allocation) -> str:
    """docker@USER.socket for this tenant: owned by its uid as a number (a user name
    of digits would be read as another account's uid)."""
    return f"{HEADER}[Socket]\nSocketUser={allocation.uid}\n"


def unit_path(path: str) -> str:
    """A path as one word of a unit file setting; anything systemd would read otherwise
    (a ':' separates BindPaths sources from targets, '%' starts a specifier, spaces and
    quotes split words) is refused rather than escaped."""
    if not _UNIT_PATH.fullmatch(path):
        raise DtenantError(f"path {path!r} cannot be handed to systemd (allowed: / and "
                         "letters, digits, '.', '_', '-', '+', '@', ',', '=', '~')")  # fmt: skip
    return path


_UNIT_PATH = re.compile(r"/[A-Za-z0-9._/@+,=~-]*")


def slice_limits(config: Config) -> str:
    """Drop-in for every dtenant-*.slice (systemd applies dtenant-.slice.d/ to them all)."""
    limits = config.limits
    lines = [
        "# Written by `dtenant setup` from [limits] in /etc/dtenant/dtenant.toml.",
        "[Slice]",
        "MemoryAccounting=yes",
        "TasksAccounting=yes",
        "CPUAccounting=yes",
        f"MemoryMax={limits.memory_max or 'infinity'}",
        f"TasksMax={limits.tasks_max or 'infinity'}",
        f"CPUQuota={limits.cpu_quota}",
    ]
    return "\n".join(lines) + "\n"


def reap_timer_dropin(config: Config) -> str:
    """dtenant-reap.timer.d/interval.conf: a pass reap.interval seconds after boot (or
    at once, when a timer that never fired is re-armed by a daemon-reload), then every
    reap.interval seconds after the last pass began."""
    interval = config.reap.interval
    return (
        "# Written by `dtenant setup` from reap.interval in /etc/dtenant/dtenant.toml.\n"
        "# An empty setting resets every monotonic trigger of the timer, OnBootSec= too\n"
        "# (systemd.timer(5)): each is given again below.\n"
        f"[Timer]\nOnUnitActiveSec=\nOnBootSec={interval}\nOnUnitActiveSec={interval}\n"
        f"AccuracySec={max(1, min(30, interval // 10))}s\n"
    )


def pam_session_lines() -> list[tuple[str, str]]:
    """(control, module and arguments): the hook, then DOCKER_HOST for the users on
    dtenant's list. Static: the rules are applied to the list, never to these lines.

    Nothing here can fail a login or a logout: only success jumps (pam.conf(5): a jump
    counts as "ok"), and anything else is ignored.
    """
    # Only at open_session: at close the PAM environment holds what pam_env read from the
    # user's ~/.pam_environment; logouts reach the reaper through logind instead.
    hook = ("[default=ignore]", f"pam_exec.so quiet type=open_session {paths.HOOK}")
    # A listed user "fails" sense=deny (ignored): pam_env runs. Anyone else, or a missing
    # list (onerr=succeed), succeeds and jumps over pam_env: no DOCKER_HOST. The hook,
    # above, has put the user on the list or taken them off before this line reads it.
    gate = ("[success=1 default=ignore]", f"pam_listfile.so item=user sense=deny "
            f"file={paths.DOCKER_HOST_USERS} onerr=succeed quiet")  # fmt: skip
    env = ("optional", f"pam_env.so conffile={paths.PAM_ENV_CONF} readenv=0 user_readenv=0")
    return [hook, gate, env]


def pam_profile() -> str:
    """Debian's pam-auth-update profile (/usr/share/pam-configs/dtenant, shipped as is)."""
    body = "".join(f"\t{control}\t{module}\n" for control, module in pam_session_lines())
    return (
        "Name: dtenant: a Docker daemon of their own for every user\n"
        "Default: yes\n"
        "Priority: 0\n"
        "Session-Type: Additional\n"
        "Session:\n" + body
    )


def pam_snippet() -> str:
    """The same lines for distributions without pam-auth-update."""
    body = "".join(f"session {control} {module}\n" for control, module in pam_session_lines())
    return (
        "# dtenant: add to the session stack shared by your login services (sshd, login,\n"
        "# su), e.g. /etc/pam.d/system-session, after pam_systemd. The same lines for\n"
        f"# every configuration: `dtenant setup` keeps the list {paths.DOCKER_HOST_USERS}\n" + body
    )


def pam_user_list(names: Iterable[str]) -> str:
    """The list pam_listfile reads: one name a line, compared whole with the user name."""
    unique = set(names)
    for name in unique:
        if not tenant.supported_name(name):
            raise DtenantError(f"user name {name!r} cannot go on {paths.DOCKER_HOST_USERS}")
    return "".join(f"{name}\n" for name in sorted(unique))


def _same_tenant_pairs(allocation: Allocation) -> list[str]:
    ranges = (allocation.bridge_subnet, allocation.networks_pool)
    return [f"{src} . {dst}" for src in ranges for dst in ranges]


def firewall_elements(allocation: Allocation) -> dict[str, tuple[str, ...]]:
    """The tenant's elements in each set of dtenant's table."""
    return {
        "tenant_nets": (allocation.bridge_subnet, allocation.networks_pool),
        "same_tenant": tuple(_same_tenant_pairs(allocation)),
    }


def nft_add_tenant(allocation: Allocation) -> str:
    """One tenant's elements, added to dtenant's table as it stands (fails if missing)."""
    return "".join(f"add element inet dtenant {name} {{ {', '.join(elements)} }}\n"
                   for name, elements in firewall_elements(allocation).items())  # fmt: skip


# Interfaces a tenant's containers sit on: its main bridge and its user-defined networks
# (Docker names those br-ID, as it does the system daemon's; policy.py allows only the
# bridge driver and no bridge name of a tenant's choosing).
TENANT_LINKS = '{ "dtenant*", "br-*" }'
# The system daemon's containers sit on docker0 and on br-* (outside tenant ranges).
SYSTEM_LINKS = '{ "docker0", "br-*" }'


def _nft_prerouting() -> str:
    """Strict reverse-path check: a source address is accepted only on the link its route
    goes through, so a container with NET_ADMIN or NET_RAW passes off as no other tenant,
    nor as any address outside its own networks. Before conntrack: no state for spoofs."""
    return (
        "\tchain prerouting {\n\t\ttype filter hook prerouting priority raw; policy accept;\n"
        "\t\tip saddr @tenant_nets fib saddr . iif oif missing counter drop "
        'comment "a tenant address arrives only from its own link"\n'
        f"\t\tiifname {TENANT_LINKS} meta nfproto ipv4 fib saddr . iif oif missing counter drop "
        'comment "containers send only from their own addresses"\n'
        "\t}\n"
    )


def _nft_forward(isolation: str) -> str:
    """Only a tenant itself opens connections into its ranges (in open mode: any tenant);
    from the LAN, the host's other bridges and (strict) other tenants only replies come in,
    and new connections from outside reach containers through published ports only
    (docker-proxy on the host, not forwarded). Tenants open no connection to the system
    daemon's containers: dtenant never weakens what that daemon protects."""
    into = (
        "\t\tip daddr @tenant_nets ip saddr . ip daddr != @same_tenant counter drop "
        'comment "strict: new connections into a tenant\'s ranges from the tenant only"\n'
        if isolation == "strict"
        else "\t\tip daddr @tenant_nets ip saddr != @tenant_nets counter drop "
        'comment "open: new connections into tenant ranges from tenants only"\n'
    )
    return (
        "\tchain forward {\n\t\ttype filter hook forward priority filter - 5; policy accept;\n"
        "\t\tct state established,related accept\n"
        f"{into}"
        f"\t\tip saddr @tenant_nets ip daddr != @tenant_nets oifname {SYSTEM_LINKS} counter drop "
        'comment "no tenant opens connections to the system daemon\'s containers"\n'
        "\t}\n"
    )


def nft_ruleset(allocations: Sequence[Allocation], isolation: str, daemon_egress: str = "") -> str:
    """dtenant's own nftables table, replaced atomically: anti-spoofing, NAT out,
    isolation from the outside and between tenants, and `daemon_egress`
    (nft_daemon_egress)."""
    nets = [a.bridge_subnet for a in allocations] + [a.networks_pool for a in allocations]
    same = [pair for a in allocations for pair in _same_tenant_pairs(a)]
    nets_elements = f"elements = {{ {', '.join(nets)} }}" if nets else ""
    same_elements = f"elements = {{ {', '.join(same)} }}" if same else ""
    return (
        "table inet dtenant\n"
        "delete table inet dtenant\n"
        "table inet dtenant {\n"
        f"\tset tenant_nets {{\n\t\ttype ipv4_addr; flags interval;\n\t\t{nets_elements}\n\t}}\n"
        f"\tset same_tenant {{\n\t\ttype ipv4_addr . ipv4_addr; flags interval;\n"
        f"\t\t{same_elements}\n\t}}\n"
        f"{_nft_prerouting()}"
        f"{_nft_forward(isolation)}"
        "\tchain postrouting {\n\t\ttype nat hook postrouting priority srcnat; policy accept;\n"
        "\t\tip saddr @tenant_nets ip daddr != @tenant_nets masquerade\n\t}\n"
        f"{daemon_egress}}}\n"
    )


# The level nft's `socket cgroupv2` compares is counted from the root of the whole
# hierarchy on kernels before 6.11 (and their stable lines without the change), from the
# loading process's cgroup namespace after: on a host that is itself a container,
# dtenant.slice may lie deeper than level 1. A cgroup's id is found at one level only, so
# a rule for each level up to this one matches the slice wherever it lies; the pre-start
# check refuses a daemon none of them matches (egress.py).
CGROUP_LEVELS = range(1, 9)
REFUSE = "reject with icmpx type admin-prohibited"  # connect(): "no route to host"


def nft_daemon_egress(prefix: str, own: Sequence[tuple[str, Allocation]], net: Network) -> str:
    """Chains of dtenant's table that filter what tenant daemons (every process below
    dtenant.slice: dockerd, git, containerd, docker-proxy) connect to: not the host's own
    addresses (its loopback and every address of the host, which a local connection
    reaches through `lo`, past input rules for outside traffic) but DNS, not another
    tenant's range, nothing in network.daemon_blocked. Its own range stays open to a
    daemon (docker-proxy), by its slice's cgroup: `own` pairs a slice's path below
    dtenant.slice with its allocation. `prefix`: egress.cgroup2_prefix."""
    top = f"{prefix}{egress.TOP_SLICE}"
    elements = ", ".join(
        egress.own_elements(f"{top}/{tenant_slice}", (a.bridge_subnet, a.networks_pool))
        for tenant_slice, a in own
    )
    dispatch = "".join(
        f'\t\tsocket cgroupv2 level {level} "{top}" goto daemon_from_{level}\n'
        for level in CGROUP_LEVELS
    )
    per_level = "".join(
        f"\tchain daemon_from_{level} {{\n"
        f"\t\tsocket cgroupv2 level {level + 1} . ip daddr @daemon_own accept\n"
        "\t\tgoto daemon_egress\n\t}\n"
        for level in CGROUP_LEVELS
    )
    return (
        "\tset daemon_own {\n\t\ttypeof socket cgroupv2 level 2 . ip daddr; flags interval;\n"
        f"\t\t{f'elements = {{ {elements} }}' if elements else ''}\n\t}}\n"
        "\tchain daemon_out {\n\t\ttype filter hook output priority filter; policy accept;\n"
        "\t\tct state established,related accept\n"
        f"{dispatch}\t}}\n{per_level}"
        f"\tchain daemon_egress {{\n{_daemon_refusals(net)}\t}}\n"
    )


def _daemon_refusals(net: Network) -> str:
    blocked = [ipaddress.ip_network(n) for n in net.daemon_blocked]
    v4 = ", ".join(str(n) for n in blocked if n.version == 4)
    v6 = ", ".join(str(n) for n in blocked if n.version == 6)
    rules = []
    if net.daemon_dns:
        rules.append('fib daddr type local meta l4proto { tcp, udp } th dport 53 accept '
                     'comment "the host\'s resolver"')  # fmt: skip
    rules.append(f'fib daddr type local counter {REFUSE} comment "the host\'s own addresses"')
    rules.append(f"ip daddr {{ {net.bridge_pool}, {net.networks_pool} }} counter {REFUSE} "
                 "comment \"other tenants' ranges\"")  # fmt: skip
    if v4:
        rules.append(f'ip daddr {{ {v4} }} counter {REFUSE} comment "network.daemon_blocked"')
    if v6:
        rules.append(f'ip6 daddr {{ {v6} }} counter {REFUSE} comment "network.daemon_blocked"')
    return "".join(f"\t\t{rule}\n" for rule in rules)
