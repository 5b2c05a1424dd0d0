"""What a lab could leave on the real machine: a snapshot to compare before and after."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from dtenant_session import mountinfo
from tests.lab import host
from tests.lab.paths import LAB_ROOT

FILE_TREES = (
    "/etc", "/var", "/run", "/tmp", "/home", "/srv", "/opt", "/dev", "/root",
    "/usr/local", "/usr/lib/python3", "/usr/lib/python3.11",
)  # fmt: skip
# Busy trees that no lab can write to, and the lab's own state directory.
SKIPPED = {
    str(LAB_ROOT), "/root/.pyenv", "/root/.cache", "/root/.cargo", "/root/.rustup", "/root/.npm",
    "/tmp/pytest-of-root",
}  # fmt: skip
# Global kernel settings a careless container host would change.
SYSCTLS = (
    "kernel/hostname", "kernel/domainname", "kernel/core_pattern", "kernel/core_uses_pid",
    "kernel/pid_max", "net/ipv4/ip_forward", "fs/protected_symlinks", "fs/protected_hardlinks",
    "kernel/printk", "vm/overcommit_memory", "vm/max_map_count", "fs/inotify/max_user_instances",
)  # fmt: skip


@dataclass(frozen=True)
class Snapshot:
    processes: frozenset[tuple[int, str]]
    mounts: frozenset[tuple[str, str, str]]
    links: frozenset[str]
    cgroups: frozenset[str]
    files: frozenset[tuple[str, int, int, int]]
    sysctls: frozenset[tuple[str, str]]
    modules: frozenset[str]


def _userland_processes(ignored_namespaces: set[str]) -> frozenset[tuple[int, str]]:
    """Live userland processes outside `ignored_namespaces` (other labs' mount namespaces)."""
    found = set()
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            namespace = os.readlink(f"/proc/{entry}/ns/mnt")
        except OSError:
            continue
        state, ppid = stat.rsplit(")", 1)[1].split()[:2]
        # Kernel threads come and go; a zombie is only waiting for the real init to reap it.
        if int(entry) == 2 or int(ppid) == 2 or state == "Z" or namespace in ignored_namespaces:
            continue
        found.add((int(entry), cmdline.replace(b"\0", b" ").decode(errors="replace").strip()))
    return frozenset(found)


MAX_DEPTH = 64  # below that, what anyone leaves shows in its top directories already


def _files() -> frozenset[tuple[str, int, int, int]]:
    found: set[tuple[str, int, int, int]] = set()
    for top in FILE_TREES:
        found |= _tree(top)
    return frozenset(found)


def _tree(top: str) -> set[tuple[str, int, int, int]]:
    """Every entry below top, iteratively (os.walk recurses: a deep tree that other work
    on this machine leaves in /tmp must not end the test)."""
    found = set()
    pending = [(top, 0)]
    while pending:
        directory, depth = pending.pop()
        try:
            entries = list(os.scandir(directory))
        except OSError:
            continue
        for entry in entries:
            if entry.path in SKIPPED:
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            found.add((entry.path, st.st_mode, st.st_size, st.st_mtime_ns))
            if entry.is_dir(follow_symlinks=False) and depth < MAX_DEPTH:
                pending.append((entry.path, depth + 1))
    return found


def _cgroups() -> frozenset[str]:
    found = set()
    for cgroup in mountinfo.cgroup_mounts(mountinfo.read()):
        found |= {path for path, mode, _, _ in _tree(cgroup.mount_point) if stat.S_ISDIR(mode)}
        found.add(cgroup.mount_point)
    return frozenset(found)


def _sysctls() -> frozenset[tuple[str, str]]:
    found = set()
    for key in SYSCTLS:
        try:
            found.add((key, Path(f"/proc/sys/{key}").read_text().strip()))
        except OSError:
            continue
    return frozenset(found)


def take(ignored_labs: tuple[str, ...] = ()) -> Snapshot:
    """The real machine now; processes of the labs named in `ignored_labs` are left out."""
    modules = Path("/proc/modules")
    ignored = {host.open_lab(name).record.namespaces["mnt"] for name in ignored_labs}
    return Snapshot(
        processes=_userland_processes(ignored),
        mounts=frozenset((m.mount_point, m.fstype, m.source) for m in mountinfo.read()),
        links=frozenset(os.listdir("/sys/class/net")),
        cgroups=_cgroups(),
        files=_files(),
        sysctls=_sysctls(),
        modules=frozenset(
            line.split()[0] for line in modules.read_text().splitlines()
        ) if modules.exists() else frozenset(),
    )  # fmt: skip


def new_things(before: Snapshot, after: Snapshot) -> dict[str, list[str]]:
    """What `after` has that `before` did not (and changed files), by kind; empty if clean."""
    report: dict[str, list[str]] = {}
    before_files = {f[0]: f for f in before.files}
    for kind in ("processes", "mounts", "links", "cgroups", "sysctls", "modules"):
        added = getattr(after, kind) - getattr(before, kind)
        if added:
            report[kind] = sorted(str(item) for item in added)
    changed = [f[0] for f in after.files if before_files.get(f[0]) != f]
    if changed:
        report["files"] = sorted(changed)
    after_paths = {f[0] for f in after.files}
    removed = [path for path in before_files if path not in after_paths]
    if removed:
        report["removed files"] = sorted(removed)
    return report
