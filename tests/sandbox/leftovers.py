"""What a lab could leave on the real machine, and only that.

A shared machine is busy while a lab comes and goes: other programs start processes,
write to /tmp, create cgroups; other labs boot and stop. None of that is a lab's
leftover, so nothing here compares the whole machine. A lab is recognised by what is
its own (its `Footprint`, taken while it runs): processes in its namespaces or cgroups,
its cgroups, its state directory, mounts at the places its boot plan mounts, links by
the names it had. Host-wide settings a lab must not touch (device nodes, sysctls,
modules, the host's copies of the files the lab writes inside) are compared as they are.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from dtenant_session import mountinfo
from tests.lab import boot, host
from tests.lab.paths import CGROUP_PREFIX, LabPaths

# The namespaces a lab unshares (tests/lab/boot.py: launch).
NAMESPACE_KINDS = host.NAMESPACES
# Global kernel settings a careless container host would change.
SYSCTLS = (
    "kernel/hostname", "kernel/domainname", "kernel/core_pattern", "kernel/core_uses_pid",
    "kernel/pid_max", "net/ipv4/ip_forward", "fs/protected_symlinks", "fs/protected_hardlinks",
    "kernel/printk", "vm/overcommit_memory", "vm/max_map_count", "fs/inotify/max_user_instances",
)  # fmt: skip
# The host's device nodes a lab copies (a bind would let its udev chmod them), and ptmx.
DEVICES = (*boot.DEVICE_NODES, "ptmx", "pts/ptmx")
# Files a test writes inside a lab (on the overlay, the lab's tmpfs /tmp, ...) to show
# that none reaches the host.
MARKERS = tuple(f"{d}/dtenant-lab-marker" for d in ("/etc", "/tmp", "/var/tmp", "/root", "/srv"))
# Files a lab's tests write inside the lab: the host's own copies must not change.
LAB_WRITES = (
    *MARKERS, host.KEY_DIR, "/etc/passwd", "/etc/shadow", "/etc/group", "/etc/subuid",
    "/etc/subgid", "/etc/dtenant",
    "/etc/systemd/system", "/etc/systemd/network", "/etc/ssh/sshd_config.d", "/etc/pam.d",
    "/etc/nftables.conf", "/var/lib/dtenant", "/usr/lib/dtenant", "/usr/bin/dtenant",
)  # fmt: skip
# modules-load.d: what the lab's systemd-modules-load would load, were it not masked.
MODULES_LOAD_DIRS = ("/etc/modules-load.d", "/run/modules-load.d", "/usr/lib/modules-load.d")


@dataclass(frozen=True)
class Footprint:
    """What is a lab's own, taken while it runs."""

    name: str
    namespaces: frozenset[str]  # e.g. "net:[4026532412]", of its PID 1
    links: frozenset[str]  # its network links' names
    binds: tuple[str, ...]  # host directories shown inside (the checkout)


def footprint(lab: host.Lab) -> Footprint:
    # One the host shares with the lab (a bug a test checks) would make every process
    # on the machine look like the lab's.
    mine = {_namespace(os.getpid(), kind) for kind in NAMESPACE_KINDS}
    namespaces = {_namespace(lab.pid, kind) for kind in NAMESPACE_KINDS} - mine
    return Footprint(
        name=lab.name,
        namespaces=frozenset(n for n in namespaces if n),
        links=frozenset(lab.run(["ls", "/sys/class/net"]).stdout.split()),
        binds=lab.paths.bound(),
    )


def _namespace(pid: int, kind: str) -> str | None:
    try:
        return f"{kind}:{os.readlink(f'/proc/{pid}/ns/{kind}').split(':', 1)[1]}"
    except OSError:
        return None


@dataclass(frozen=True)
class Snapshot:
    """The host where a lab could change it, whoever else is at work on the machine."""

    taken_at: int  # clock ticks since boot, as /proc/PID/stat counts a process's start
    mounts: frozenset[tuple[str, str, str]]
    links: frozenset[str]
    devices: frozenset[tuple[str, int, int, int, int]]
    sysctls: frozenset[tuple[str, str]]
    modules: frozenset[str]
    files: frozenset[tuple[str, int, int, int]]


def take() -> Snapshot:
    """The host now, where a lab could change it."""
    return Snapshot(
        taken_at=int(time.clock_gettime(time.CLOCK_BOOTTIME) * os.sysconf("SC_CLK_TCK")),
        mounts=frozenset((m.mount_point, m.fstype, m.source) for m in mountinfo.read()),
        links=frozenset(os.listdir("/sys/class/net")),
        devices=_devices(),
        sysctls=_sysctls(),
        modules=_modules_to_load() & _loaded_modules(),
        files=_files([*LAB_WRITES, *_plan_writes()]),
    )


def left_behind(lab: Footprint, before: Snapshot, after: Snapshot) -> dict[str, list[str]]:
    """What of `lab` is on the host, by kind: its processes, state dir and cgroups now,
    the rest by comparing `before` with `after` (taken once the lab is down)."""
    paths = LabPaths(lab.name)
    report = {
        "processes": _processes(lab, paths, after.taken_at),
        "state": [str(paths.state)] if os.path.lexists(paths.state) else [],
        "cgroups": _cgroups_of(paths),
        "mounts": _new_mounts(lab, paths, before, after),
        "removed mounts": _removed_mounts(lab, before, after),
        "links": sorted((after.links - before.links) & lab.links),
    }
    for kind in ("devices", "sysctls", "modules", "files"):
        old, new = getattr(before, kind), getattr(after, kind)
        report[kind] = sorted(str(item) for item in old ^ new)
    return {kind: items for kind, items in report.items() if items}


@dataclass(frozen=True)
class Process:
    pid: int
    argv: str
    started: int  # clock ticks since boot
    namespaces: frozenset[str]
    cgroups: tuple[str, ...]  # its cgroup's path in each hierarchy

    def __str__(self) -> str:
        return f"{self.pid} {self.argv}"

    def in_cgroup(self, name: str) -> bool:
        return any(name in path.split("/") for path in self.cgroups)

    def in_other_lab(self, own: str) -> bool:
        """In the cgroup of a lab other than the one whose cgroup is `own`."""
        return any(part.startswith(CGROUP_PREFIX) and part != own
                   for path in self.cgroups for part in path.split("/"))  # fmt: skip


def _live_processes() -> list[Process]:
    """Every process but this one and zombies (only waiting for their parent to reap them)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        pid = int(entry)
        try:
            stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            cgroups = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if stat[0] == "Z":
            continue
        spaces = {_namespace(pid, kind) for kind in NAMESPACE_KINDS}
        found.append(Process(
            pid=pid,
            argv=cmdline.replace(b"\0", b" ").decode(errors="replace").strip(),
            started=int(stat[19]),
            namespaces=frozenset(n for n in spaces if n),
            cgroups=tuple(line.split(":", 2)[-1] for line in cgroups),
        ))  # fmt: skip
    return found


def _processes(lab: Footprint, paths: LabPaths, gone_by: int) -> list[str]:
    """Live processes in the lab's cgroups or namespaces. The kernel reuses a freed
    namespace's number at once, so a namespace of the lab's number counts only for a
    process started before `gone_by` (when the lab was down: its namespaces had no
    process left to start one) and in no other lab's cgroup (where another lab's systemd
    gives a service a new namespace)."""
    return sorted(
        str(p) for p in _live_processes()
        if p.in_cgroup(paths.cgroup_name) or (
            p.namespaces & lab.namespaces and p.started < gone_by
            and not p.in_other_lab(paths.cgroup_name)
        )
    )  # fmt: skip


def outside_its_cgroups(lab: Footprint) -> list[str]:
    """Processes of a running lab (in its namespaces) that are not in its cgroup in every
    hierarchy: what they would leave (cgroups of a systemd whose cgroup namespace failed)
    would be nowhere a leftover check looks."""
    name = LabPaths(lab.name).cgroup_name
    return sorted(
        str(p) for p in _live_processes()
        if p.namespaces & lab.namespaces
        and not all(name in path.split("/") for path in p.cgroups)
    )  # fmt: skip


def _cgroup_roots() -> list[Path]:
    return [Path(c.mount_point) for c in mountinfo.cgroup_mounts(mountinfo.read())]


def _cgroups_of(paths: LabPaths) -> list[str]:
    return sorted(str(d) for root in _cgroup_roots() if (d := root / paths.cgroup_name).exists())


def _lab_mount_points(lab: Footprint, paths: LabPaths) -> set[str]:
    """Where the lab's boot plan mounts, on the lab's side of pivot_root and (were its
    mounts to propagate, or the pivot to fail) the same places on the host's side."""
    root = str(paths.root)
    plan = boot.boot_plan(paths, mountinfo.cgroup_mounts(mountinfo.read()), "lab", lab.binds)
    targets = {s.target for s in plan if isinstance(s, boot.Mount | boot.Bind)}
    return targets | {t.removeprefix(root) or "/" for t in targets if t.startswith(root)}


def _new_mounts(lab: Footprint, paths: LabPaths, before: Snapshot, after: Snapshot) -> list[str]:
    state = str(paths.state)
    watched = _lab_mount_points(lab, paths)
    return sorted(
        str(m) for m in after.mounts - before.mounts
        if m[0] in watched or m[0] == state or m[0].startswith(state + "/")
    )  # fmt: skip


def _removed_mounts(lab: Footprint, before: Snapshot, after: Snapshot) -> list[str]:
    """The host's own mounts at places the lab mounts or unmounts (a propagated umount of
    /.oldroot would take the host's mounts with it)."""
    watched = _lab_mount_points(lab, LabPaths(lab.name)) | {"/"}
    return sorted(str(m) for m in before.mounts - after.mounts if m[0] in watched)


def _devices() -> frozenset[tuple[str, int, int, int, int]]:
    found = set()
    for node in DEVICES:
        try:
            st = os.lstat(f"/dev/{node}")
        except OSError:
            continue
        found.add((f"/dev/{node}", st.st_mode, st.st_uid, st.st_gid, st.st_rdev))
    return frozenset(found)


def _sysctls() -> frozenset[tuple[str, str]]:
    found = set()
    for key in SYSCTLS:
        try:
            found.add((key, Path(f"/proc/sys/{key}").read_text().strip()))
        except OSError:
            continue
    return frozenset(found)


def _loaded_modules() -> frozenset[str]:
    try:
        text = Path("/proc/modules").read_text()
    except OSError:
        return frozenset()
    return frozenset(line.split()[0] for line in text.splitlines())


def _modules_to_load() -> frozenset[str]:
    """Modules named in modules-load.d. Others come and go with any namespace's activity
    (the kernel autoloads nf_*, veth, overlay for whoever asks first)."""
    found = set()
    for directory in MODULES_LOAD_DIRS:
        for conf in sorted(Path(directory).glob("*.conf")):
            try:
                lines = conf.read_text().splitlines()
            except OSError:
                continue
            found |= {ln.strip() for ln in lines if ln.strip() and ln.strip()[0] not in "#;"}
    return frozenset(found)


def _plan_writes() -> list[str]:
    """The host's copies of the files the lab's boot plan writes into its own root."""
    paths = LabPaths("footprint")
    root = str(paths.root)
    plan = boot.boot_plan(paths, [], "lab")
    written = [s.path for s in plan if isinstance(s, boot.WriteFile | boot.Symlink | boot.Remove)]
    return [p.removeprefix(root) for p in written if p.startswith(root + "/")]


def _files(paths: list[str]) -> frozenset[tuple[str, int, int, int]]:
    """Each path and, for a directory, its entries one level down: (path, mode, size, mtime)
    or mode 0 for a missing one."""
    found = set()
    for top in paths:
        entries = [top]
        if os.path.isdir(top) and not os.path.islink(top):
            try:
                entries += [e.path for e in os.scandir(top)]
            except OSError:
                pass
        for path in entries:
            try:
                st = os.lstat(path)
            except OSError:
                found.add((path, 0, 0, 0))
                continue
            found.add((path, st.st_mode, st.st_size, st.st_mtime_ns))
    return frozenset(found)
