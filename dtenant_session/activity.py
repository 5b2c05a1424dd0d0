"""A tenant's last activity: the mtime of one file, touched on API use (by the
authorization plugin, here) and while the user is logged in (by each reaper pass that
sees a logind session)."""

from __future__ import annotations

import os

from dtenant_session import paths


def touch(user: str) -> None:
    """Record activity now; silently nothing for a user who is not a tenant."""
    path = paths.activity_path(user)
    try:
        os.utime(path)
    except FileNotFoundError:
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600))
        except FileNotFoundError:
            return  # no runtime directory: not provisioned, nothing to record


def last(user: str) -> float | None:
    try:
        return os.stat(paths.activity_path(user)).st_mtime
    except OSError:
        return None
