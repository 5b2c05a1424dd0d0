"""A tenant's container root: a system account that nobody logs in as.

Its uid and gid are the tenant's id_base, the first id of the tenant's own block
(subid.py); the tenant's daemon runs with `userns-remap` naming it, so everything Docker
keeps for the tenant (layers, volumes, the exec-root's fifos) belongs to it and is out of
every login account's reach. The account has no home, no shell, a locked password and
no lastlog entry (a uid near 2^31 would make lastlog a huge sparse file).
"""

from __future__ import annotations

import fcntl
import grp
import os
import pwd
import time
from collections.abc import Callable
from typing import Any, cast

from dtenant_session import command, paths
from dtenant_session.errors import DtenantError
from dtenant_session.tenant import Tenant


class AccountError(DtenantError):
    pass


def problems(t: Tenant) -> list[str]:
    """What clashes with the tenant's container-root account (empty: it is fine, or it
    is absent and its name and id are free)."""
    name, ident = t.root_account, t.id_base
    found = []
    owners = {"user": uid_of(name), "group": gid_of(name)}
    for kind, number in owners.items():
        if number is not None and number != ident:
            found.append(f"{kind} {name} exists with id {number}, not {ident}")
    names = {"uid": user_named(ident), "gid": group_named(ident)}
    for kind, holder in names.items():
        if holder is not None and holder != name:
            found.append(f"{kind} {ident} belongs to {holder!r}, not {name}")
    return found


def _entry(lookup: Callable[[Any], Any], key: object, field: str) -> Any:
    """A field of the passwd or group entry `lookup` finds for key; None when none."""
    try:
        return getattr(lookup(key), field)
    except KeyError:
        return None


def uid_of(name: str) -> int | None:
    return cast("int | None", _entry(pwd.getpwnam, name, "pw_uid"))


def gid_of(name: str) -> int | None:
    return cast("int | None", _entry(grp.getgrnam, name, "gr_gid"))


def user_named(uid: int) -> str | None:
    return cast("str | None", _entry(pwd.getpwuid, uid, "pw_name"))


def group_named(gid: int) -> str | None:
    return cast("str | None", _entry(grp.getgrgid, gid, "gr_name"))


def exists(t: Tenant) -> bool:
    return uid_of(t.root_account) == t.id_base


ACCOUNTS_LOCK = f"{paths.LOCKS_DIR}/accounts.lock"
TRIES = 20  # shadow's tools do not wait for each other's lock: try again a little later


def ensure(t: Tenant) -> bool:
    """Create the account (and its group) unless it is there; True when created. One at
    a time (concurrent first logins), and again when another tool holds shadow's lock."""
    if exists(t) and not problems(t):
        return False
    os.makedirs(paths.LOCKS_DIR, mode=0o700, exist_ok=True)
    fd = os.open(ACCOUNTS_LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        clash = problems(t)
        if clash:
            raise AccountError(f"tenant {t.user}: container-root account: {'; '.join(clash)}")
        if exists(t):
            return False
        name, ident = t.root_account, str(t.id_base)
        if gid_of(name) is None:
            _shadow([command.which("groupadd"), "--system", "--gid", ident, name])
        _shadow([command.which("useradd"), "--system", "--no-log-init", "--uid", ident,
                 "--gid", ident, "--no-create-home", "--home-dir", "/nonexistent",
                 "--shell", "/usr/sbin/nologin", "--comment", "dtenant container root",
                 name])  # fmt: skip
        return True
    finally:
        os.close(fd)


def _shadow(argv: list[str]) -> None:
    for attempt in range(TRIES):
        result = command.run(argv, timeout=30, check=False)
        if result.returncode == 0:
            return
        if "lock" not in result.stderr or attempt == TRIES - 1:
            raise AccountError(f"{' '.join(argv)}: {result.stderr.strip() or result.returncode}")
        time.sleep(0.1)
