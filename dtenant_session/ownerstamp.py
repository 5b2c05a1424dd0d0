"""The owner stamp: a data-root's claim to belong to one host and one tenant.

Written once when a tenant is provisioned (never replaced: a data-root that belongs to
another host or tenant keeps saying so), rewritten only by a rename; the pre-start check
refuses a daemon whose data-root says otherwise. Standard library only.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from dtenant_session import files, paths

NAME = ".dtenant-owner"


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


def path(user: str) -> str:
    return os.path.join(data_root(user), NAME)


def read(user: str) -> dict[str, Any]:
    """The stamp as written; OSError or ValueError when it cannot be read."""
    with open(path(user)) as stream:
        content = json.load(stream)
    if not isinstance(content, dict):
        raise ValueError(f"{path(user)} is not an object")  # noqa: TRY004 - bad content
    return content


def claim(user: str, uid: int) -> None:
    """Claim a data-root for this host and tenant; an existing stamp is never replaced."""
    if not os.path.exists(path(user)):
        files.replace(path(user), json.dumps({**owner(user, uid), "created": time.time()}),
                      files.PRIVATE)  # fmt: skip


def rename(user: str, uid: int) -> None:
    """After a rename: the same host and uid, the new name."""
    files.replace(path(user), json.dumps({**read(user), "user": user, "uid": uid}), files.PRIVATE)


# A move of the data-root to a new id map is under way (idshift.py).
IDSHIFT_MARKER = ".dtenant-idshift"


def state_dirs(data_root: str) -> list[str]:
    """Docker's per-map state directories ("UID.GID") under a data-root."""
    try:
        names = os.listdir(data_root)
    except FileNotFoundError:
        return []
    return sorted(n for n in names if _is_pair(n))


def _is_pair(name: str) -> bool:
    first, dot, second = name.partition(".")
    return bool(dot) and first.isdigit() and second.isdigit()
