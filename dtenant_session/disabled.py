"""Tenants the administrator keeps from having a daemon (`dtenant disable USER`): one
root-owned file per user under paths.DISABLED_DIR, holding the reason. Login does not
provision such a user, and the daemon's pre-start check refuses to start, so the user's
docker command shows the reason (failsafe.py). Standard library only."""

from __future__ import annotations

import os
import time

from dtenant_session import files, paths


def reason(user: str) -> str | None:
    """Why the tenant is disabled; None when it is not."""
    try:
        with open(paths.disabled_path(user)) as stream:
            return stream.read().strip() or "no reason given"
    except FileNotFoundError:
        return None


def disable(user: str, why: str) -> None:
    os.makedirs(paths.DISABLED_DIR, mode=0o700, exist_ok=True)
    stamp = time.strftime("%Y-%m-%d")
    files.replace(paths.disabled_path(user), f"{why.strip() or 'no reason given'}, {stamp}\n",
                  files.PRIVATE)  # fmt: skip


def enable(user: str) -> bool:
    """False when the tenant was not disabled."""
    return files.remove_path(paths.disabled_path(user))
