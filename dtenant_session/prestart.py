"""The check each tenant daemon runs before it starts (ExecStartPre, `check-tenant`): its
data-root and its account are its own.

dockerd keeps bbolt databases that take an exclusive lock; two daemons on one data-root
end in "error while opening volume store metadata database: timeout". These checks find
such collisions before they happen, name whoever holds a tenant's locks, and refuse a
data-root that belongs to another host or tenant (ownerstamp.py) or a map that is not the
tenant's own. `dtenant verify` runs them for every tenant (verify.py).

Standard library only and fast (no docker, no D-Bus): it runs before every daemon start.
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import stat
import time
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

from dtenant_session import dbread, disabled, mountinfo, ownerstamp, paths, treewalk
from dtenant_session.ownerstamp import data_root

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


class CannotCheck(Exception):
    """Verification itself failed (exit code 2)."""


# -- facts about the machine ------------------------------------------------------------


def registered_ids() -> dict[str, tuple[int, int]]:
    """user -> (uid, id_base) from the registry, read-only (no schema writes)."""
    try:
        db = dbread.connect(paths.REGISTRY)
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

    from dtenant_session import subid

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
    stale = [d for d in ownerstamp.state_dirs(root) if d != f"{id_base}.{id_base}"]
    if stale or os.path.exists(os.path.join(root, ownerstamp.IDSHIFT_MARKER)):
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
    stamp_path = ownerstamp.path(user)
    try:
        stamp = ownerstamp.read(user)
    except FileNotFoundError:
        return []  # created at provisioning; a data-root without one is not yet claimed
    except (OSError, ValueError) as exc:
        problem = f"unreadable owner stamp {stamp_path}: {exc}"
        advice = "inspect it; remove it only if this data-root is this tenant's"
        return [Finding(user, "owner", problem, stamp_path, advice=advice)]
    mine = ownerstamp.owner(user, uid)
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


class Locator:
    """filesystem_location of tenants' data-roots, fast for a thousand of them: the
    tenants' directory is resolved and listed once, and a data-root by itself only when a
    symlink or a mount lies in its own part of the path (a tenant's directory or
    data-root); otherwise one lstat tells."""

    def __init__(self, mounts: list[mountinfo.MountEntry]) -> None:
        self.mounts = mounts
        base = os.path.realpath(paths.TENANTS_DIR)
        self.base_location = filesystem_location(base, mounts)
        below = (m.mount_point[len(base) + 1 :] for m in mounts
                 if m.mount_point.startswith(base + "/"))  # fmt: skip
        mounted = {point.split("/", 1)[0] for point in below}
        try:
            with os.scandir(base) as entries:  # d_type: no stat for each tenant
                directories = {e.name for e in entries if e.is_dir(follow_symlinks=False)}
        except OSError:
            directories = set()
        self.plain = directories - mounted

    def __call__(self, user: str) -> tuple[str, str, str] | None:
        """The data-root's location, or None when it is not a directory."""
        root = data_root(user)
        try:
            own = os.lstat(root) if user in self.plain else None
        except OSError:
            return None
        if own is None or stat.S_ISLNK(own.st_mode):
            return filesystem_location(root, self.mounts) if os.path.isdir(root) else None
        if not stat.S_ISDIR(own.st_mode):
            return None
        device, place, fstype = self.base_location
        return device, f"{place.rstrip('/')}/{user}/docker", fstype


def check_distinct(users: Iterable[str], mounts: list[mountinfo.MountEntry],
                   involving: str | None = None) -> list[Finding]:  # fmt: skip
    """Data-roots pairwise distinct and not nested, by filesystem location; with
    `involving`, only the pairs that tenant is in (its name in a finding's text is no
    test: "al" is in "alice", "lib" in every data-root)."""
    locate = Locator(mounts)
    located = [(u, where) for u in users if (where := locate(u)) is not None]
    if involving is None:
        pairs = [(a, b) for index, a in enumerate(located) for b in located[index + 1 :]]
    else:
        at = next((i for i, (u, _) in enumerate(located) if u == involving), None)
        if at is None:
            return []
        pairs = [(a, located[at]) for a in located[:at]] + [
            (located[at], b) for b in located[at + 1 :]
        ]
    findings = []
    for (user, (device, place, _)), (other, (other_device, other_place, _)) in pairs:
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


def mounted_image(directory: str, mounts: list[mountinfo.MountEntry]) -> str | None:
    """The image file whose loop device is mounted at directory (the topmost mount), or
    None: no mount there, or not a loop device."""
    here = [m for m in mounts if m.mount_point == directory]
    if not here or not here[-1].source.startswith("/dev/loop"):
        return None
    device = here[-1].source.removeprefix("/dev/")
    try:
        with open(f"/sys/block/{device}/loop/backing_file") as stream:
            return stream.read().strip()
    except OSError:
        return None


def check_disk(user: str, mounts: list[mountinfo.MountEntry]) -> list[Finding]:
    """A tenant with a disk of its own (limits.disk_max: its image or its mount unit is
    there) starts only with that disk mounted at its data-root: never on the bare
    directory below, which would fill the disk everyone shares."""
    image, unit = paths.disk_image(user), paths.disk_unit(user)
    if not os.path.exists(image) and not os.path.exists(f"{paths.SYSTEMD_DIR}/{unit}"):
        return []
    root = data_root(user)
    if mounted_image(root, mounts) == image:
        return []
    return [Finding(user, "disk", f"its data-root {root} is not its own disk {image} "
                    "(limits.disk_max): not mounted", root,
                    advice=f"see `systemctl status {unit}`; `dtenant provision {user}` "
                    "makes and mounts it")]  # fmt: skip


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


def _disabled(user: str) -> list[Finding]:
    reason = disabled.reason(user)
    if reason is None:
        return []
    return [Finding(user, "disabled", f"the administrator disabled this tenant ({reason})",
                    advice="ask your administrator")]  # fmt: skip


def check_tenant_before_start(user: str) -> list[Finding]:
    """What docker@USER.service runs before dockerd: fast, standard library only."""
    disabled = _disabled(user)
    if disabled:
        return disabled
    tenants = registered_ids()  # one read: a thousand rows are ~1 ms
    if user not in tenants:
        return [
            Finding(
                user,
                "registry",
                "not a registered tenant",
                advice=f"run `dtenant provision {user}`",
            )
        ]
    uid, id_base = tenants[user]
    orphaned = check_account_before_start(user, uid)
    if orphaned:
        return orphaned
    mounts = mountinfo.read()
    disk = check_disk(user, mounts)
    if disk:
        return disk  # the data-root's contents are not the tenant's: check nothing in it
    findings = check_owner(user, uid)
    findings += check_mapping(user, id_base)
    findings += check_filesystem(user, mounts)
    findings += check_distinct(tenants, mounts, involving=user)
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

    return _egress_findings(user, egress.before_start(user, sync))


def open_own_ranges(user: str, proc_cgroup: str, nft: Callable[[str], str | None]
                    ) -> list[Finding]:  # fmt: skip
    """For the check server: the daemon's process (its /proc/PID/cgroup text), whose
    filter the client probed, gets its tenant's own ranges through `nft` (egress.py)."""
    from dtenant_session import egress

    return _egress_findings(user, egress.open_own_ranges(user, proc_cgroup, nft))


def _egress_findings(user: str, problem: str | None) -> list[Finding]:
    if problem is None:
        return []
    return [Finding(user, "firewall", problem, advice="see `dtenant firewall sync`")]


def verdict(user: str, daemon_egress: Callable[[str], list[Finding]]) -> tuple[int, str]:
    """The pre-start check of `user`: its exit status and what it says on stderr, one
    line per problem (exit 1 blocks the start)."""
    try:
        findings = check_tenant_before_start(user) or wait_for_bridge(user)
        findings = findings or daemon_egress(user)
    except (CannotCheck, OSError) as exc:
        return 1, f"dtenant: cannot check {user}'s data-root: {exc}\n"
    text = "".join(f"dtenant: refusing to start the daemon of {f.line()}\n" for f in findings)
    return (1 if findings else 0), text


def main_before_start(argv: list[str]) -> int:
    """The check in this process (check-tenant-direct): what check-tenant falls back on
    when the check server does not answer, or the daemon's filter needs loading again."""
    import sys

    if len(argv) != 1:
        print("usage: check-tenant-direct USER", file=sys.stderr)
        return 2
    status, text = verdict(argv[0], check_daemon_egress)
    sys.stderr.write(text)
    return status
