"""Data-root exclusivity and consistency: `dtenant verify`, and the check each tenant
daemon runs before it starts (ExecStartPre).

dockerd keeps bbolt databases that take an exclusive lock; two daemons on one data-root
end in "error while opening volume store metadata database: timeout". This module finds
such collisions before they happen, names whoever holds a tenant's locks, and refuses a
data-root that belongs to another host or tenant (an owner stamp in the data-root).

The single-tenant check is standard library only and fast (no docker, no D-Bus).
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

from dtenant_session import mountinfo, paths, treewalk

OWNER_STAMP = ".dtenant-owner"
BBOLT_MAGIC = 0xED0CDAED
# Network filesystems: their locks cannot be trusted across clients.
NETWORK_FILESYSTEMS = frozenset(
    {
        "nfs",
        "nfs4",
        "cifs",
        "smb3",
        "smbfs",
        "ceph",
        "glusterfs",
        "fuse.glusterfs",
        "fuse.sshfs",
        "9p",
        "afs",
        "lustre",
        "gpfs",
        "beegfs",
        "fuse.cephfs",
        "ocfs2",
        "gfs2",
    }
)
# Below a data-root, bbolt databases are looked for everywhere but in what holds
# container and user content: layer trees, volume data, container state, plugin roots.
PRUNED_DIRS = frozenset(
    {"overlay2", "aufs", "btrfs", "zfs", "vfs", "fuse-overlayfs", "containers", "_data", "rootfs"}
)
# What the search for databases may cost; a data-root holds a few dozen outside
# PRUNED_DIRS, but a tenant's build context or temporary files may sit there too.
BBOLT_LIMITS = treewalk.Limits(seconds=10.0, entries=200_000)


# NamedTuples, not dataclasses: the pre-start check must stay well under 100 ms, and
# dataclasses alone costs ~14 ms of imports.
class Holder(NamedTuple):
    pid: int
    command: str
    unit: str


class Finding(NamedTuple):
    tenant: str
    check: str
    problem: str
    path: str = ""
    holder: Holder | None = None
    advice: str = ""

    def line(self) -> str:
        text = f"{self.tenant}: {self.problem}"
        if self.advice:
            text += f"; {self.advice}"
        return text

    def as_dict(self) -> dict[str, Any]:
        fields = self._asdict()
        fields["holder"] = self.holder._asdict() if self.holder else None
        return fields


class Report:
    def __init__(self) -> None:
        self.findings: list[Finding] = []
        self.checked: list[str] = []

    def to_json(self) -> str:
        findings = [f.as_dict() for f in self.findings]
        return json.dumps({"checked": self.checked, "findings": findings}, indent=2)


class CannotCheck(Exception):
    """Verification itself failed (exit code 2)."""


# -- facts about the machine ------------------------------------------------------------


def machine_id() -> str:
    try:
        with open("/etc/machine-id") as stream:
            return stream.read().strip()
    except OSError:
        return ""


def owner(user: str, uid: int) -> dict[str, Any]:
    return {"machine_id": machine_id(), "hostname": os.uname().nodename, "user": user, "uid": uid}


def data_root(user: str) -> str:
    return f"{paths.TENANTS_DIR}/{user}/docker"


def write_owner_stamp(user: str, uid: int) -> None:
    """Claim a data-root for this host and tenant; an existing stamp is never replaced."""
    stamp = os.path.join(data_root(user), OWNER_STAMP)
    if not os.path.exists(stamp):
        _replace_json(stamp, {**owner(user, uid), "created": time.time()})


def rewrite_owner_stamp(user: str, uid: int) -> None:
    """After a rename: the same host and uid, the new name."""
    stamp = os.path.join(data_root(user), OWNER_STAMP)
    with open(stamp) as stream:
        content = json.load(stream)
    _replace_json(stamp, {**content, "user": user, "uid": uid})


def _replace_json(path: str, content: dict[str, Any]) -> None:
    temporary = f"{path}.tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as stream:
        os.fchmod(fd, 0o600)  # root's alone, whatever a temporary left by a crash had
        json.dump(content, stream)
    os.replace(temporary, path)


def registered_tenants() -> dict[str, int]:
    """user -> uid from the registry, read-only (no schema writes)."""
    return {user: uid for user, (uid, _) in registered_ids().items()}


def registered_ids() -> dict[str, tuple[int, int]]:
    """user -> (uid, id_base) from the registry, read-only (no schema writes)."""
    try:
        db = sqlite3.connect(f"file:{paths.REGISTRY}?mode=ro", uri=True, timeout=5)
        try:
            rows = db.execute("SELECT user, uid, id_base FROM tenants").fetchall()
        finally:
            db.close()
    except sqlite3.Error as exc:
        raise CannotCheck(f"cannot read the registry {paths.REGISTRY}: {exc}") from None
    return {user: (uid, id_base) for user, uid, id_base in rows}


def check_mapping(user: str, id_base: int) -> list[Finding]:
    """The daemon will map the tenant onto its own block, with its own account, and
    nothing of an older map is left in its data-root."""
    import pwd

    from dtenant_session import idshift, subid

    if not id_base:
        return [Finding(user, "ids", "has no container ids of its own yet (a tenant of 0.1)",
                        advice="run `dtenant setup` (it moves the tenant's data)")]  # fmt: skip
    account = subid.account_name(id_base)
    try:
        entry, account_uid = pwd.getpwnam(user), pwd.getpwnam(account).pw_uid
    except KeyError as exc:
        return [Finding(user, "ids", f"no such account: {exc}",
                        advice=f"run `dtenant provision {user}`")]  # fmt: skip
    if account_uid != id_base:
        return [Finding(user, "ids", f"{account} has uid {account_uid}, not {id_base}",
                        advice="another account took the name: rename it")]  # fmt: skip
    # What the daemon reads as /etc/subuid and /etc/subgid: the tenant's own files.
    files = (subid.SUBUID, subid.SUBGID)
    texts = {file: subid.read(paths.private_subid(user, file)) for file in files}
    own = {subid.SUBUID: entry.pw_uid, subid.SUBGID: entry.pw_gid}
    advice = f"run `dtenant provision {user}`"
    problems = subid.mapping_problems(texts, id_base, account, own)
    found = [Finding(user, "ids", problem, advice=advice) for problem in problems]
    root = data_root(user)
    stale = [d for d in idshift.state_dirs(root) if d != f"{id_base}.{id_base}"]
    if stale or os.path.exists(os.path.join(root, idshift.MARKER)):
        found.append(Finding(user, "ids", f"data of an older id map in {root} "
                             f"({', '.join(stale) or 'a move under way'})",
                             advice="run `dtenant setup` to finish moving it"))  # fmt: skip
    return found


def proc_locks(text: str) -> dict[tuple[int, int, int], list[int]]:
    """(major, minor, inode) -> pids holding a lock, from /proc/locks (pure)."""
    held: dict[tuple[int, int, int], list[int]] = {}
    for line in text.splitlines():
        fields = line.split()
        if "->" in fields:  # a waiter, not a holder
            continue
        try:
            pid = int(fields[4])
            major, minor, inode = fields[5].split(":")
            key = (int(major, 16), int(minor, 16), int(inode))
        except (IndexError, ValueError):
            continue
        held.setdefault(key, []).append(pid)
    return held


def unit_of(cgroup_text: str) -> str:
    """The systemd unit (service or scope) a process runs in, from /proc/PID/cgroup."""
    for line in cgroup_text.splitlines():
        _, controllers, path = line.split(":", 2)
        if controllers in ("", "name=systemd"):
            for part in reversed(path.split("/")):
                if part.endswith((".service", ".scope")):
                    return part
    return ""


def holder(pid: int) -> Holder:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as stream:
            command = stream.read().replace(b"\0", b" ").decode(errors="replace").strip()
        with open(f"/proc/{pid}/cgroup") as stream:
            unit = unit_of(stream.read())
    except OSError:
        command, unit = "(exited)", ""
    return Holder(pid, command, unit)


class BboltFile(NamedTuple):
    path: str
    dev: int
    ino: int
    locked: bool  # someone holds bbolt's lock on it


def _bbolt_file(dir_fd: int, name: str, where: treewalk.Directory) -> BboltFile | None:
    """dir_fd/name if a regular file whose first meta page is bbolt's: a 16-byte page
    header, then magic 0xED0CDAED, version 2. Opened without following a symlink or
    blocking on a FIFO, read 24 bytes, lock tried on the same descriptor."""
    fd = treewalk.open_regular(dir_fd, name)
    if fd is None:
        return None
    try:
        head = os.pread(fd, 24, 0)
        if len(head) != 24 or int.from_bytes(head[16:20], "little") != BBOLT_MAGIC:
            return None
        st = os.fstat(fd)
        return BboltFile(where.path(name), st.st_dev, st.st_ino, _is_locked(fd))
    except OSError:
        return None
    finally:
        os.close(fd)  # closing releases a lock we got


def bbolt_files(root: str, limits: treewalk.Limits = BBOLT_LIMITS) -> tuple[list[BboltFile], str]:
    """bbolt databases below root outside PRUNED_DIRS, and what kept the search from
    being complete ("" when it was)."""
    found: list[BboltFile] = []

    def visit(dir_fd: int, name: str, where: treewalk.Directory) -> None:
        bolt = _bbolt_file(dir_fd, name, where)
        if bolt is not None:
            found.append(bolt)

    result = treewalk.regular_files(root, visit, pruned=PRUNED_DIRS, limits=limits)
    return found, result.summary()


def filesystem_location(path: str, mounts: list[mountinfo.MountEntry]) -> tuple[str, str, str]:
    """(device, path inside that filesystem, fstype): equal or nested locations collide
    whatever symlinks or bind mounts lead there."""
    real = os.path.realpath(path)
    best = max(
        (
            m
            for m in mounts
            if real == m.mount_point or real.startswith(m.mount_point.rstrip("/") + "/")
        ),
        key=lambda m: len(m.mount_point),
    )
    inside = real[len(best.mount_point.rstrip("/")) :] or "/"
    return (
        best.device,
        os.path.normpath(best.root.rstrip("/") + "/" + inside.lstrip("/")),
        best.fstype,
    )


def nested(first: str, second: str) -> bool:
    return (
        first == second
        or first.startswith(second.rstrip("/") + "/")
        or second.startswith(first.rstrip("/") + "/")
    )


# -- checks -----------------------------------------------------------------------------


def check_owner(user: str, uid: int) -> list[Finding]:
    stamp_path = os.path.join(data_root(user), OWNER_STAMP)
    try:
        with open(stamp_path) as stream:
            stamp = json.load(stream)
    except FileNotFoundError:
        return []  # created at provisioning; a data-root without one is not yet claimed
    except (OSError, ValueError) as exc:
        problem = f"unreadable owner stamp {stamp_path}: {exc}"
        advice = "inspect it; remove it only if this data-root is this tenant's"
        return [Finding(user, "owner", problem, stamp_path, advice=advice)]
    mine = owner(user, uid)
    if stamp.get("machine_id") != mine["machine_id"]:
        return [
            Finding(
                user,
                "owner",
                f"data-root {data_root(user)} belongs to host {stamp.get('hostname')!r} "
                f"(machine-id {stamp.get('machine_id')}), not to this host",
                stamp_path,
                advice="is this storage shared by mistake? Use a data-root of this host",
            )
        ]
    if (stamp.get("user"), stamp.get("uid")) != (user, uid):
        return [
            Finding(
                user,
                "owner",
                f"data-root {data_root(user)} belongs to tenant {stamp.get('user')!r} "
                f"(uid {stamp.get('uid')}), not to {user!r} (uid {uid})",
                stamp_path,
                advice="a data-root is never shared between tenants",
            )
        ]
    return []


def _is_locked(fd: int) -> bool:
    """Try the lock bbolt takes: cheaper than reading the whole machine's /proc/locks when,
    as before a daemon starts, nobody should hold it."""
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    return False


def check_locks(user: str, allowed_unit: str | None) -> list[Finding]:
    """Every bbolt file under the data-root is locked by nobody or by allowed_unit; a
    search the tenant's data kept from completing is a finding too (fail closed)."""
    root = data_root(user)
    if not os.path.isdir(root):
        return []
    bolts, incomplete = bbolt_files(root)
    findings = []
    if incomplete:
        findings.append(Finding(user, "lock", f"cannot check every database under {root}: "
                                f"{incomplete}", root,
                                advice="look at what the tenant stored there"))  # fmt: skip
    locked = [bolt for bolt in bolts if bolt.locked]
    if not locked:
        return findings
    try:
        with open("/proc/locks") as stream:
            locks = proc_locks(stream.read())
    except OSError as exc:
        raise CannotCheck(f"cannot read /proc/locks: {exc}") from None
    for bolt in locked:
        for pid in locks.get((os.major(bolt.dev), os.minor(bolt.dev), bolt.ino), []):
            who = holder(pid)
            if allowed_unit is not None and who.unit == allowed_unit:
                continue
            findings.append(
                Finding(
                    user,
                    "lock",
                    f"{bolt.path} is locked by pid {pid} ({who.command or '?'}"
                    f"{', unit ' + who.unit if who.unit else ''})",
                    bolt.path,
                    who,
                    advice=f"stop pid {pid} before the tenant's daemon starts",
                )
            )
    return findings


def check_filesystem(user: str, mounts: list[mountinfo.MountEntry]) -> list[Finding]:
    _, _, fstype = filesystem_location(data_root(user), mounts)
    if fstype in NETWORK_FILESYSTEMS:
        return [
            Finding(
                user,
                "filesystem",
                f"data-root {data_root(user)} is on {fstype}: its locks cannot be trusted",
                data_root(user),
                advice="use a local filesystem",
            )
        ]
    return []


def check_distinct(users: Iterable[str], mounts: list[mountinfo.MountEntry]) -> list[Finding]:
    """Data-roots pairwise distinct and not nested, by filesystem location."""
    located = [
        (u, filesystem_location(data_root(u), mounts)) for u in users if os.path.isdir(data_root(u))
    ]
    findings = []
    for index, (user, (device, place, _)) in enumerate(located):
        for other, (other_device, other_place, _) in located[index + 1 :]:
            if device == other_device and nested(place, other_place):
                how = "is the same directory as" if place == other_place else "overlaps"
                findings.append(
                    Finding(
                        user,
                        "distinct",
                        f"data-root {data_root(user)} {how} the data-root of {other} "
                        f"({data_root(other)}; both are {place} on device {device})",
                        data_root(user),
                        advice="each tenant needs a data-root of its own",
                    )
                )
    return findings


def orphan_advice(user: str) -> str:
    return (f"`dtenant rename {user} NEW` hands its data to account NEW; "
            f"`dtenant remove {user} [--purge]` takes the tenant away")  # fmt: skip


def check_account_before_start(user: str, uid: int) -> list[Finding]:
    """The tenant's account still has its name and uid: an orphaned tenant's daemon never
    starts, whoever has its socket (a new account with its old uid or name)."""
    import pwd

    try:
        now: int | None = pwd.getpwnam(user).pw_uid
    except KeyError:
        now = None
    if now == uid:
        return []
    problem = f"user {user!r} (uid {uid}) no longer exists"
    if now is not None:
        problem += f" (the name now has uid {now})"
    return [Finding(user, "account", f"{problem}: its tenant is orphaned",
                    advice=orphan_advice(user))]  # fmt: skip


def check_tenant_before_start(user: str) -> list[Finding]:
    """What docker@USER.service runs before dockerd: fast, standard library only."""
    tenants = registered_tenants()
    if user not in tenants:
        return [
            Finding(
                user,
                "registry",
                "not a registered tenant",
                advice=f"run `dtenant provision {user}`",
            )
        ]
    orphaned = check_account_before_start(user, tenants[user])
    if orphaned:
        return orphaned
    mounts = mountinfo.read()
    findings = check_owner(user, tenants[user])
    findings += check_mapping(user, registered_ids()[user][1])
    findings += check_filesystem(user, mounts)
    findings += [f for f in check_distinct(tenants, mounts) if user in f.problem]
    # Before start, any holder is foreign: the tenant's own dockerd is not running yet.
    findings += check_locks(user, allowed_unit=None)
    return findings


def wait_for_bridge(user: str, timeout: float = 10.0) -> list[Finding]:
    """dockerd reads its bridge's address when it starts: at boot, wait for networkd."""
    try:
        with open(f"{paths.TENANTS_DIR}/{user}/daemon.json") as stream:
            bridge = json.load(stream)["bridge"]
    except (OSError, ValueError, KeyError) as exc:
        return [
            Finding(
                user,
                "daemon.json",
                f"cannot read its bridge: {exc}",
                advice=f"run `dtenant provision {user}`",
            )
        ]
    deadline = time.monotonic() + timeout
    if not os.path.exists(f"/sys/class/net/{bridge}"):
        # networkd makes it from the tenant's files; at boot it may not have got there
        # yet, after a deletion it needs a reload to notice.
        from dtenant_session import command  # rare path: keep the common one light

        command.run([command.which("networkctl"), "reload"], check=False, timeout=timeout)
    while not os.path.exists(f"/sys/class/net/{bridge}"):
        if time.monotonic() > deadline:
            return [
                Finding(
                    user,
                    "bridge",
                    f"bridge {bridge} does not exist",
                    advice="is systemd-networkd running? `networkctl status`",
                )
            ]
        time.sleep(0.05)
    return []


def check_daemon_egress(user: str) -> list[Finding]:
    """The daemon about to start (in this check's cgroup) can fetch nothing from the
    host's loopback, link-local or listed networks, or other tenants (egress.py)."""
    from dtenant_session import egress

    def sync() -> None:
        from dtenant_session import network  # rare path: keep the common one light

        network.sync_from_registry()

    problem = egress.before_start(user, sync)
    if problem is None:
        return []
    return [Finding(user, "firewall", problem, advice="see `dtenant firewall sync`")]


def main_before_start(argv: list[str]) -> int:
    """ExecStartPre of docker@USER.service: one clear line per problem, exit 1 blocks."""
    import sys

    if len(argv) != 1:
        print("usage: check-tenant USER", file=sys.stderr)
        return 2
    user = argv[0]
    try:
        findings = check_tenant_before_start(user) or wait_for_bridge(user)
        findings = findings or check_daemon_egress(user)
    except (CannotCheck, OSError) as exc:
        print(f"dtenant: cannot check {user}'s data-root: {exc}", file=sys.stderr)
        return 1
    for finding in findings:
        print(f"dtenant: refusing to start the daemon of {finding.line()}", file=sys.stderr)
    return 1 if findings else 0


def check_account(allocation: Any, registered: set[str]) -> list[Finding]:
    """The tenant's user still exists with the uid the registry holds; else whether it was
    certainly renamed or is orphaned (standing.py)."""
    from dtenant_session import lifecycle, standing

    user = allocation.user
    seen = lifecycle.standing_now(allocation, registered)
    if seen.kind == standing.CURRENT:
        return []
    advice = orphan_advice(user)
    if seen.kind == standing.RENAMED:
        advice = (f"it moves at {seen.new_name}'s next login, or now with "
                  f"`dtenant rename {user} {seen.new_name}`")  # fmt: skip
    return [Finding(user, "account", seen.problem, advice=advice)]


def check_consistency(allocation: Any, config: Any, links: dict[str, set[str]]) -> list[Finding]:
    """Registry, generated files, units and the bridge agree for one tenant."""
    from dtenant_session import render

    t = allocation.tenant
    expected = {
        t.daemon_json: render.daemon_json(allocation, config),
        t.socket_dropin: render.socket_dropin(allocation),
        t.netdev_file: render.netdev(allocation),
        t.network_file: render.network(allocation),
    }
    findings = []
    for path, content in expected.items():
        try:
            actual = path.read_text()
        except OSError:
            actual = None
        if actual != content:
            state = "is missing" if actual is None else "differs from the registry and config"
            findings.append(
                Finding(
                    t.user,
                    "files",
                    f"{path} {state}",
                    str(path),
                    advice=f"run `dtenant provision {t.user}`",
                )
            )
    if allocation.bridge_address not in links.get(t.bridge, set()):
        state = "is missing" if t.bridge not in links else "lacks its address"
        findings.append(Finding(t.user, "network",
                                f"bridge {t.bridge} {state} ({allocation.bridge_address})",
                                advice=f"run `dtenant provision {t.user}`"))  # fmt: skip
    wants = f"/etc/systemd/system/sockets.target.wants/{t.socket_unit}"
    if not os.path.lexists(wants):
        findings.append(
            Finding(
                t.user,
                "units",
                f"{t.socket_unit} is not enabled",
                wants,
                advice=f"run `dtenant provision {t.user}`",
            )
        )
    return findings


def check_orphans(users: set[str], bridges: set[str]) -> list[Finding]:
    findings = []
    try:
        directories = set(os.listdir(paths.TENANTS_DIR))
    except FileNotFoundError:
        directories = set()
    for user in sorted(directories - users):
        where = f"{paths.TENANTS_DIR}/{user}"
        if os.path.exists(f"{where}/REMOVED"):  # kept by `dtenant remove` on purpose
            continue
        findings.append(
            Finding(
                user,
                "registry",
                f"{where} has no registry entry",
                where,
                advice="a removed tenant's data, or a registry that lost it",
            )
        )
    try:
        network_files = os.listdir(paths.NETWORKD_DIR)
    except FileNotFoundError:
        network_files = []
    for name in sorted(network_files):
        stem, _, suffix = name.partition(".")
        ours = stem.startswith("60-dtenant") and suffix in ("netdev", "network")
        if ours and stem.removeprefix("60-") not in bridges:
            where = f"{paths.NETWORKD_DIR}/{name}"
            findings.append(Finding("-", "registry", f"{where} belongs to no tenant", where))
    return findings


def _check_one(allocation: Any, config: Any, mounts: list[mountinfo.MountEntry],
               links: dict[str, set[str]], registered: set[str]) -> list[Finding]:  # fmt: skip
    """Every check of one tenant; whatever its data does to them, a finding for it and
    the other tenants still checked."""
    user = allocation.user
    findings: list[Finding] = []
    try:
        findings += check_account(allocation, registered)
    except Exception as exc:  # noqa: BLE001 - one tenant's data must not end the pass
        findings.append(Finding(user, "error", f"could not check: {exc}"))
    orphan = bool(findings)  # an orphan's files and units are not to be put right
    checks: tuple[Callable[[], list[Finding]], ...] = (
        lambda: check_owner(user, allocation.uid),
        lambda: check_mapping(user, allocation.id_base),
        lambda: check_filesystem(user, mounts),
        lambda: check_locks(user, allowed_unit=allocation.tenant.service_unit),
        lambda: [] if orphan else check_consistency(allocation, config, links),
    )
    for check in checks:
        try:
            findings += check()
        except CannotCheck:
            raise
        except Exception as exc:  # noqa: BLE001 - one tenant's data must not end the pass
            findings.append(Finding(user, "error", f"could not check: {exc}"))
    return findings


def verify_all(config: Any, only: str | None = None) -> Report:
    """Every check for every tenant (or one): `dtenant verify`."""
    from dtenant_session.registry import Registry, RegistryError

    try:
        with Registry() as registry:
            allocations = registry.all()
    except RegistryError as exc:
        raise CannotCheck(str(exc)) from None
    from dtenant_session import network

    report = Report()
    mounts = mountinfo.read()
    links = network.link_addresses()
    chosen = [a for a in allocations if only is None or a.user == only]
    if only is not None and not chosen:
        raise CannotCheck(f"{only!r} is not a registered tenant")
    registered = {a.user for a in allocations}
    for allocation in chosen:
        report.checked.append(allocation.user)
        report.findings += _check_one(allocation, config, mounts, links, registered)
    distinct = check_distinct([a.user for a in allocations], mounts)
    report.findings += [f for f in distinct if only is None or only in f.problem]
    if only is None:
        report.findings += check_orphans(
            {a.user for a in allocations}, {a.tenant.bridge for a in allocations}
        )
        report.findings += check_subid_files()
    return report


def check_subid_files() -> list[Finding]:
    """Entries another account would be given (a user name of digits that is some other
    account's uid), and ranges of different owners that overlap."""
    from dtenant_session import idmap, subid

    texts = {file: subid.read(file) for file in (subid.SUBUID, subid.SUBGID)}
    problems = [
        problem
        for file, text in texts.items()
        for problem in subid.foreign_keys(text, idmap.uid_of, idmap.user_named, file)
    ]
    problems += subid.overlaps(texts)
    return [Finding("", "ids", problem, advice="key the entry by the owner's uid or move it")
            for problem in problems]  # fmt: skip
