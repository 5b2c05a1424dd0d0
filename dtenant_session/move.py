"""Moving a busy daemon to a new dockerd without stopping its containers (issue 16).

A tenant's containers run under shims (containerd-shim-runc-v2) that its daemon's own
containerd started in the daemon's private mount namespace (docker@.service): their root
file systems, network namespace files and shim sockets exist only there. A move keeps
them all: the shims go to a scope of their own in the tenant's slice
(`dtenant-moved-*.scope`), so the unit's stop does not kill them; dockerd stops with
live-restore on, which leaves its containers running; and the next dockerd (start-daemon,
ExecStart=) enters that same mount namespace, where its new containerd finds the shims
again and dockerd restores the containers. Only a shim root put in such a scope is
trusted to name that namespace: root, the shim's executable, a private mount namespace.

Standard library only: start-daemon runs at every start of a daemon.
"""

from __future__ import annotations

import os
import sys

from dtenant_session import paths

TYPE_CHECKING = False  # mypy's by name; typing itself costs 7 ms at every daemon start
if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence
    from typing import NoReturn

SHIM = "/usr/bin/containerd-shim-runc-v2"
SCOPE_PREFIX = "dtenant-moved-"
MOVING_DIR = f"{paths.RUN_DIR}/moving"  # root's: a file per tenant while its daemon moves
DELETED = " (deleted)"
CGROUP_ROOT = "/sys/fs/cgroup"
CLONE_NEWNS = 0x00020000
EXIT_WAIT = 60.0  # seconds for dockerd to exit at SIGTERM with live-restore on


class Process:
    """What decides whether a process is a held shim of dtenant's."""

    __slots__ = ("exe", "group", "mount_ns", "pid", "uids")

    def __init__(self, pid: int, uids: tuple[int, ...], exe: str, group: str | None,
                 mount_ns: int | None) -> None:  # fmt: skip
        self.pid = pid
        self.uids = uids  # real, effective, saved, filesystem
        self.exe = exe  # the /proc/PID/exe link text
        self.group = group  # its systemd cgroup
        self.mount_ns = mount_ns  # inode of its mount namespace


class Mark:
    """A move under way: the invocation of docker@USER.service that moves, and the scope
    that holds its shims. Its ExecStop= and ExecStopPost= act on it."""

    __slots__ = ("invocation", "scope")

    def __init__(self, invocation: str, scope: str) -> None:
        self.invocation = invocation
        self.scope = scope


# --- Pure ------------------------------------------------------------------------------


def systemd_group(cgroup_text: str) -> str | None:
    """The cgroup systemd placed a process in, from /proc/PID/cgroup: the name=systemd
    hierarchy's (cgroup v1 and hybrid), else the unified one's."""
    unified = None
    for line in cgroup_text.splitlines():
        number, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if controllers == "name=systemd":
            return path
        if number == "0" and controllers == "":
            unified = path
    return unified


def is_shim(process: Process) -> bool:
    """Root running the shim (or its copy dpkg has since replaced)."""
    return (bool(process.uids) and all(uid == 0 for uid in process.uids)
            and process.exe.removesuffix(DELETED) == SHIM)  # fmt: skip


def is_held_shim(process: Process, held_groups: Iterable[str], host_mount_ns: int) -> bool:
    """A shim dtenant moved out of a daemon (pure): root, the shim's executable, in one of
    the tenant's held scopes (only root puts a process there), in a private mount
    namespace (never the host's)."""
    return (is_shim(process) and process.group in set(held_groups)
            and process.mount_ns is not None and process.mount_ns != host_mount_ns)  # fmt: skip


def in_group(process: Process, group: str) -> bool:
    return process.group is not None and (process.group == group
                                          or process.group.startswith(f"{group}/"))  # fmt: skip


def scope_name(instance: str, now: float) -> str:
    """The scope that holds a moved daemon's shims (instance: systemd-escaped user)."""
    return f"{SCOPE_PREFIX}{instance}-{int(now * 1000)}.scope"


def held_scope_names(names: Iterable[str]) -> list[str]:
    return sorted(n for n in names if n.startswith(SCOPE_PREFIX) and n.endswith(".scope"))


def mark_text(mark: Mark) -> str:
    import json

    return json.dumps({"invocation": mark.invocation, "scope": mark.scope}) + "\n"


def parse_mark(text: str) -> Mark | None:
    import json

    try:
        fields = json.loads(text)
        mark = Mark(str(fields["invocation"]), str(fields["scope"]))
    except (ValueError, KeyError, TypeError):
        return None
    good = mark.invocation and held_scope_names([mark.scope]) and "/" not in mark.scope
    return mark if good else None


# --- The processes and cgroups ---------------------------------------------------------


def read_process(pid: int) -> Process | None:
    """A process's identity; None when it is gone."""
    base = f"/proc/{pid}"
    try:
        with open(f"{base}/status") as stream:
            uids: tuple[int, ...] = ()
            for line in stream:
                if line.startswith("Uid:"):
                    uids = tuple(int(u) for u in line.split()[1:])
        exe = os.readlink(f"{base}/exe")
        with open(f"{base}/cgroup") as stream:
            group = systemd_group(stream.read())
        mount_ns = os.stat(f"{base}/ns/mnt").st_ino
    except (OSError, ValueError):
        return None
    return Process(pid, uids, exe, group, mount_ns)


def group_dir(group: str, root: str = CGROUP_ROOT) -> str | None:
    """The directory of a systemd cgroup (v1 and hybrid: its own hierarchy; v2: unified)."""
    for hierarchy in (f"{root}/systemd", f"{root}/unified", root):
        directory = f"{hierarchy}{group}"
        if os.path.isdir(directory):
            return directory
    return None


def pids_in(group: str, root: str = CGROUP_ROOT) -> list[int]:
    """Every process in a cgroup and below it."""
    directory = group_dir(group, root)
    return [] if directory is None else pids_below(directory)


def pids_below(directory: str) -> list[int]:
    """Every process in a cgroup's directory and below it."""
    pids: list[int] = []
    for where, _subdirs, names in os.walk(directory):
        if "cgroup.procs" in names:
            try:
                with open(f"{where}/cgroup.procs") as procs:
                    pids += [int(p) for p in procs.read().split()]
            except (OSError, ValueError):
                continue
    return pids


def shims_in(group: str) -> list[Process]:
    """The shims among a unit's processes (those the move must keep)."""
    found = (read_process(pid) for pid in pids_in(group))
    return [p for p in found if p is not None and is_shim(p) and in_group(p, group)]


def held_groups(slice_group: str, root: str = CGROUP_ROOT) -> list[str]:
    """The held scopes in a tenant's slice, as cgroups."""
    directory = group_dir(slice_group, root)
    if directory is None:
        return []
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    return [f"{slice_group}/{name}" for name in held_scope_names(names)]


def _host_mount_ns() -> int:
    return os.stat("/proc/1/ns/mnt").st_ino


def held_shims(slice_group: str) -> list[Process]:
    """The trusted shims held for the tenant whose slice this is."""
    groups = held_groups(slice_group)
    host = _host_mount_ns()
    found = (read_process(pid) for group in groups for pid in pids_in(group))
    return [p for p in found if p is not None and is_held_shim(p, groups, host)]


# --- The move mark (root's, outside every daemon's namespace) ---------------------------


def mark_path(user: str) -> str:
    return f"{MOVING_DIR}/{user}"


def write_mark(user: str, mark: Mark) -> None:
    os.makedirs(MOVING_DIR, mode=0o700, exist_ok=True)
    path = mark_path(user)
    temporary = f"{path}.new"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as stream:
        stream.write(mark_text(mark))
    os.replace(temporary, path)


def clear_mark(user: str) -> None:
    try:
        os.unlink(mark_path(user))
    except FileNotFoundError:
        pass


def current_mark(user: str) -> Mark | None:
    """The move of this very invocation of the unit ($INVOCATION_ID), if one is under way:
    a mark left by an interrupted move never makes a later stop keep containers."""
    try:
        fd = os.open(mark_path(user), os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    with os.fdopen(fd) as stream:
        st = os.fstat(stream.fileno())
        if st.st_uid != 0 or st.st_mode & 0o022:
            return None
        mark = parse_mark(stream.read())
    invocation = os.environ.get("INVOCATION_ID", "")
    return mark if mark is not None and invocation and mark.invocation == invocation else None


# --- ExecStop= of a moving daemon ------------------------------------------------------


def attach(scope: str, pids: Sequence[int]) -> str | None:
    """Put processes into an existing scope; None, or what failed."""
    import subprocess

    if not pids:
        return None
    argv = ["/usr/bin/busctl", "call", "org.freedesktop.systemd1", "/org/freedesktop/systemd1",
            "org.freedesktop.systemd1.Manager", "AttachProcessesToUnit", "ssau", scope, "",
            str(len(pids)), *(str(p) for p in pids)]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    return None if done.returncode == 0 else done.stderr.strip() or f"exit {done.returncode}"


def _wait_exit(pid: int, timeout: float) -> bool:
    import select

    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        return bool(select.select([pidfd], [], [], timeout)[0])
    finally:
        os.close(pidfd)


class NotHeld(Exception):
    """The shims could not be held: the daemon is still running, and stops as usual."""


def hand_over(mark: Mark, unit_group: str, main_pid: int) -> list[str]:
    """The daemon exits with live-restore on (its containers keep running), every shim of
    its unit held in the mark's scope first (NotHeld, before anything, if that fails), and
    again after the exit (a container that started meanwhile). What happened, for the
    journal."""
    import signal

    lines = []
    moved = [p.pid for p in shims_in(unit_group)]
    if failed := attach(mark.scope, moved):
        raise NotHeld(f"cannot hold shims {moved} in {mark.scope}: {failed}")
    try:
        os.kill(main_pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    if not _wait_exit(main_pid, EXIT_WAIT):
        lines.append(f"dockerd (pid {main_pid}) did not exit within {EXIT_WAIT:g} s")
    late = [p.pid for p in shims_in(unit_group)]
    if failed := attach(mark.scope, late):
        lines.append(f"cannot hold shims {late} in {mark.scope}: {failed}")
    lines.append(f"moving: dockerd exited with live-restore on, its containers' shims held "
                 f"in {mark.scope} ({len(moved) + len(late)} more now) for the next "
                 f"daemon")  # fmt: skip
    return lines


# --- ExecStart= (start-daemon) ---------------------------------------------------------


def _setns(fd: int) -> None:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNS) != 0:
        error = ctypes.get_errno()
        raise OSError(error, os.strerror(error))


def _open_held_namespace(candidates: Sequence[Process], slice_group: str) -> tuple[int, int] | None:
    """A descriptor of the held shims' mount namespace and the shim's pid: opened first,
    then the process checked again, so a pid reused meanwhile cannot pass."""
    host = _host_mount_ns()
    groups = held_groups(slice_group)
    for candidate in candidates:
        try:
            fd = os.open(f"/proc/{candidate.pid}/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            continue
        again = read_process(candidate.pid)
        if (again is not None and is_held_shim(again, groups, host)
                and again.mount_ns == candidate.mount_ns == os.fstat(fd).st_ino):  # fmt: skip
            return fd, candidate.pid
        os.close(fd)
    return None


def start(argv: list[str]) -> NoReturn:
    """Exec the daemon (argv): in the mount namespace of the shims held for this tenant,
    if any, so that it finds its running containers again; else as it is."""
    try:
        with open("/proc/self/cgroup") as stream:
            own = systemd_group(stream.read())
        slice_group = own.rsplit("/", 1)[0] if own else ""
        held = held_shims(slice_group) if slice_group else []
        if held:
            print(f"dtenant: {_enter_held_namespace(held, slice_group, argv[0])}",
                  file=sys.stderr)  # fmt: skip
    except OSError as exc:
        print(f"dtenant: cannot enter the held containers' namespace ({exc}): the daemon "
              f"starts afresh", file=sys.stderr)  # fmt: skip
    sys.stderr.flush()
    os.execv(argv[0], argv)  # noqa: S606 - the daemon itself, as systemd would start it


def _leave(fresh: int) -> None:
    """Back to the unit's own namespace; a daemon never starts where it may not."""
    try:
        _setns(fresh)
    except OSError as exc:
        print(f"dtenant: cannot return to the unit's own mount namespace: {exc}",
              file=sys.stderr)  # fmt: skip
        os._exit(1)


def _enter_held_namespace(held: Sequence[Process], slice_group: str, program: str) -> str:
    """Join the held shims' mount namespace, where program must be the very file it is
    here (the unit's fresh namespace), else stay. What happened, for the journal."""
    opened = _open_held_namespace(held, slice_group)
    if opened is None:
        return "the held shims went away: the daemon starts afresh"
    fd, pid = opened
    fresh = os.open("/proc/self/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
    try:
        expected = os.stat(program)
        _setns(fd)
        there = os.stat(program)
        if (there.st_dev, there.st_ino) != (expected.st_dev, expected.st_ino):
            _leave(fresh)
            return (f"{program} is another file in the held shims' namespace (shim pid "
                    f"{pid}): the daemon starts afresh")  # fmt: skip
    finally:
        os.close(fresh)
        os.close(fd)
    others = len({p.mount_ns for p in held}) - 1
    note = f" ({others} other namespace(s) of held shims left out)" if others else ""
    return (f"the daemon starts in the mount namespace of its running containers (held "
            f"shim pid {pid}){note}")  # fmt: skip
