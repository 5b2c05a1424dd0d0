"""Paths root may rely on: every directory on the way is one only root can change.

As sshd's StrictModes: a directory writable by another account (or a symlink in one)
lets that account swap what the path means between a check and a use.
"""

from __future__ import annotations

import os
import stat

from dtenant_session.errors import DtenantError


class UntrustedPath(DtenantError):
    pass


def _only_root_changes(info: os.stat_result) -> bool:
    """Owned by root, and not writable by group or others (a sticky directory does not
    help: its users can still create names in it)."""
    return info.st_uid == 0 and not info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def owned_directory(path: str, uid: int) -> str | None:
    """The real path of `path` when it is a directory that root or `uid` owns, not
    writable by group or others, below directories only root can change; None when it
    does not exist. Anything else raises UntrustedPath naming the culprit."""
    real = os.path.realpath(path)
    try:
        info = os.lstat(real)
    except FileNotFoundError:
        return None
    if not stat.S_ISDIR(info.st_mode):
        raise UntrustedPath(f"{path}: not a directory")
    if info.st_uid not in (0, uid) or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise UntrustedPath(
            f"{path}: owned by uid {info.st_uid} or writable by group or others "
            f"(mode {stat.filemode(info.st_mode)}); it must be the user's own"
        )
    check_parents(real)
    _check_links(path)
    return real


def check_parents(real: str) -> None:
    """Every directory above the real path `real` is one only root can change."""
    parent = os.path.dirname(real)
    while True:
        info = os.lstat(parent)
        if not _only_root_changes(info):
            raise UntrustedPath(
                f"{parent}: owned by uid {info.st_uid} or writable by group or others "
                f"(mode {stat.filemode(info.st_mode)}): anything below it can be swapped"
            )
        if parent == "/":
            return
        parent = os.path.dirname(parent)


def _check_links(path: str) -> None:
    """A symlink on the way (e.g. /home -> /srv/home) must be root's, in a directory
    only root can change."""
    parts = os.path.abspath(path).split("/")[1:]
    current = "/"
    for part in parts:
        current = os.path.join(current, part)
        try:
            info = os.lstat(current)
        except FileNotFoundError:
            return
        if stat.S_ISLNK(info.st_mode):
            if info.st_uid != 0:
                raise UntrustedPath(f"{current}: a symlink owned by uid {info.st_uid}")
            check_parents(current)
            current = os.path.realpath(current)
