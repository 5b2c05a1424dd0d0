"""Tenant daemons that run a replaced binary: after a docker.io or containerd update.

Debian's docker.io restarts docker.service only; a tenant's daemon keeps running the old
dockerd (and its own containerd, shims and docker-proxy, children in its unit) until it
stops. dpkg replaces a binary by renaming a new file over it, so a process still running
the old one has an executable that is deleted or is no longer the file at its path.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

from dtenant_session import move

WATCHED = (
    "/usr/sbin/dockerd",
    "/usr/bin/containerd",
    "/usr/bin/containerd-shim-runc-v2",
    "/usr/sbin/docker-proxy",
    "/usr/bin/docker-proxy",
)
DELETED = " (deleted)"

FileId = tuple[int, int]  # (st_dev, st_ino)


def stale(running: Sequence[tuple[str, FileId | None]], current: Mapping[str, FileId]) -> list[str]:
    """Names of watched binaries of which a process runs an old copy (pure): running is
    each process's /proc/PID/exe (its link text, the file it is), current each watched
    path's file now."""
    names = set()
    for link, file_id in running:
        path = link.removesuffix(DELETED)
        if path not in current:
            continue
        if link.endswith(DELETED) or file_id != current[path]:
            names.add(os.path.basename(path))
    return sorted(names)


def _file_id(path: str) -> FileId | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def outdated(control_group: str, root: str = "/sys/fs/cgroup") -> list[str]:
    """The watched binaries of which some process of the unit runs an old copy."""
    current = {p: file_id for p in WATCHED if (file_id := _file_id(p)) is not None}
    for hierarchy in (f"{root}/unified", f"{root}/systemd", root):
        directory = f"{hierarchy}{control_group}"
        if os.path.isdir(directory):
            break
    else:
        return []
    running = []
    for pid in move.pids_below(directory):
        try:
            link = os.readlink(f"/proc/{pid}/exe")
        except OSError:
            continue  # gone, or a kernel thread
        running.append((link, _file_id(f"/proc/{pid}/exe")))
    return stale(running, current)
