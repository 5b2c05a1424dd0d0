"""Reading files only root can have written, as sshd's StrictModes does (stdlib only).

Root acts on dtenant's configuration for every tenant, so a file a user could have
written or replaced is refused, never read: every directory from / down to it and the
file itself must be owned by root and writable by neither group nor others, no path
component may be a symlink, and the file must be a regular file with a single name.
Each check is made on the file descriptor that is then read (openat without following
symlinks, fstat, read): nothing can be swapped between the check and the use.
"""

from __future__ import annotations

import os
import pwd
import stat
from typing import NamedTuple

from dtenant_session.errors import DtenantError

_DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: a FIFO planted here must not hang the login; O_NOCTTY: nor a tty adopt us.
_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


class Untrusted(DtenantError):
    def __init__(self, path: str, problem: str) -> None:
        self.path, self.problem = path, problem
        super().__init__(f"{path}: {problem}")


class Trust(NamedTuple):
    """Who may write the files: `owner`, in every directory from `top` down. Tests pass
    their own uid and a directory of theirs; everything else uses the defaults."""

    owner: int = 0
    top: str = "/"


ROOT = Trust()  # root's, from / down


def _who(uid: int) -> str:
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def _kind(mode: int) -> str:
    kinds = [(stat.S_ISDIR, "a directory"), (stat.S_ISLNK, "a symlink"),
             (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
             (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")]  # fmt: skip
    return next((name for test, name in kinds if test(mode)), "not a regular file")


def problem(st: os.stat_result, trust: Trust, *, directory: bool) -> str | None:
    """Why a file or directory with this status cannot be trusted, or None (pure)."""
    right_kind, wanted = (
        (stat.S_ISDIR, "a directory") if directory else (stat.S_ISREG, "a regular file")
    )
    if not right_kind(st.st_mode):
        return f"is {_kind(st.st_mode)}, not {wanted}"
    if st.st_uid != trust.owner:
        return f"is owned by {_who(st.st_uid)}, not by {_who(trust.owner)}"
    writable = [who for who, bit in (("group", stat.S_IWGRP), ("others", stat.S_IWOTH))
                if st.st_mode & bit]  # fmt: skip
    if writable:
        return f"is writable by {' and '.join(writable)} (mode {stat.S_IMODE(st.st_mode):04o})"
    if not directory and st.st_nlink != 1:
        return f"has {st.st_nlink} hard links; a configuration file has one name only"
    return None


def _check(fd: int, path: str, trust: Trust, *, directory: bool) -> None:
    found = problem(os.fstat(fd), trust, directory=directory)
    if found:
        os.close(fd)
        raise Untrusted(path, found)


def _refused_open(parent: int, name: str, path: str, exc: OSError) -> Untrusted:
    """Why openat failed, for the message: a symlink or something else in the way."""
    try:
        mode = os.stat(name, dir_fd=parent, follow_symlinks=False).st_mode
    except OSError:
        return Untrusted(path, f"cannot open: {exc.strerror}")
    if stat.S_ISLNK(mode):
        return Untrusted(path, "is a symlink; configuration is never read through one")
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        return Untrusted(path, f"is {_kind(mode)}, not a regular file")
    return Untrusted(path, f"cannot open: {exc.strerror}")


def open_directory(path: str, trust: Trust) -> int | None:
    """A descriptor of directory `path`, each directory from trust.top down to it checked;
    None when it (or a directory above it) does not exist. The caller closes it."""
    top, path = os.path.normpath(trust.top), os.path.normpath(path)
    below = os.path.relpath(path, top)
    if below.startswith(".."):
        raise ValueError(f"{path} is not below {top}")
    fd = os.open(top, _DIRECTORY)
    _check(fd, top, trust, directory=True)
    here = top
    for name in [] if below == "." else below.split("/"):
        here = os.path.join(here, name)
        try:
            child = os.open(name, _DIRECTORY, dir_fd=fd)
        except FileNotFoundError:
            os.close(fd)
            return None
        except OSError as exc:
            refusal = _refused_open(fd, name, here, exc)
            os.close(fd)
            raise refusal from None
        os.close(fd)
        fd = child
        _check(fd, here, trust, directory=True)
    return fd


def read_file(directory: int, name: str, path: str, trust: Trust) -> bytes | None:
    """The content of `name` in a directory from open_directory, checked on the same
    descriptor it is read from; None when there is no such file."""
    try:
        fd = os.open(name, _FILE, dir_fd=directory)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise _refused_open(directory, name, path, exc) from None
    _check(fd, path, trust, directory=False)
    try:
        with os.fdopen(fd, "rb") as stream:
            return stream.read()
    except OSError as exc:
        raise Untrusted(path, f"cannot read: {exc.strerror}") from None


def owned_directory(path: str, uid: int, trust: Trust = ROOT) -> str | None:
    """The real path of a directory root may let a tenant's daemon write (a bind root):
    owned by `uid` or root, writable by neither group nor others, below directories only
    root can change; a symlink on the way (/home -> /srv/home) must be root's, in such a
    directory. None when it does not exist."""
    real = os.path.realpath(path)
    try:
        st = os.lstat(real)
    except FileNotFoundError:
        return None
    found = problem(st, Trust(owner=0 if st.st_uid == 0 else uid), directory=True)
    if found:
        raise Untrusted(path, f"{found}; a bind root must be the user's own")
    _root_only_above(real, trust)
    _root_symlinks_only(path, trust)
    return real


def _root_only_above(real: str, trust: Trust) -> None:
    parent = os.path.dirname(real)
    while True:
        found = problem(os.lstat(parent), trust, directory=True)
        if found:
            raise Untrusted(parent, f"{found}: anything below it can be swapped")
        if parent in ("/", os.path.normpath(trust.top)):
            return
        parent = os.path.dirname(parent)


def _root_symlinks_only(path: str, trust: Trust) -> None:
    current = "/"
    for name in os.path.abspath(path).split("/")[1:]:
        current = os.path.join(current, name)
        try:
            st = os.lstat(current)
        except FileNotFoundError:
            return
        if stat.S_ISLNK(st.st_mode):
            if st.st_uid != trust.owner:
                raise Untrusted(current, f"is a symlink owned by {_who(st.st_uid)}")
            _root_only_above(current, trust)
            current = os.path.realpath(current)
