"""Who gets DOCKER_HOST at login: the list of user names pam_listfile reads.

The PAM lines are static (pam/dtenant, dpkg's file, never rewritten): they skip pam_env,
and so DOCKER_HOST, for a user not on paths.DOCKER_HOST_USERS, and for everyone when the
list is missing. dtenant applies [eligibility] to the list instead: the login that
provisions puts an eligible user on it (before pam_listfile reads it, in the same session
stack) and takes an ineligible one off; provisioning puts the user on it; `dtenant setup`
decides every name on it and every registered tenant again; `dtenant remove` takes the
user off. The login's hot path (no Python) leaves it as it is.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path

from dtenant_session import files, paths, render
from dtenant_session.errors import DtenantError

# A leading dot: no user's name (tenant locks are USER.lock in the same directory).
LOCK = f"{paths.LOCKS_DIR}/.docker-host-users.lock"
# World-readable like the sockets' names; in /var/lib/dtenant (0700), which only root
# can enter: pam_listfile refuses a file others may write, and so does this module.
MODE = 0o644


def unsafe(st: os.stat_result | None) -> str | None:
    """Why pam_listfile would not read the list as dtenant wrote it (pure): then it fails
    every user, and everyone, root too, gets DOCKER_HOST. None when all is well."""
    import stat

    if st is None:
        return "is missing: nobody gets DOCKER_HOST"
    if not stat.S_ISREG(st.st_mode):
        return "is not a regular file (pam_listfile then gives everyone DOCKER_HOST)"
    if st.st_uid != 0 or st.st_mode & 0o022:
        return (f"is owned by uid {st.st_uid} with mode {stat.S_IMODE(st.st_mode):o}: only "
                "root may write it (pam_listfile then gives everyone DOCKER_HOST)")  # fmt: skip
    return None


def parse(text: str) -> set[str]:
    return {line for line in text.splitlines() if line}


def read() -> set[str]:
    try:
        return parse(Path(paths.DOCKER_HOST_USERS).read_text())
    except FileNotFoundError:
        return set()


def decide(listed: Iterable[str], candidates: Iterable[str],
           eligible: Mapping[str, bool]) -> set[str]:  # fmt: skip
    """The list after `dtenant setup`: every name listed or a candidate that is eligible.
    A name `eligible` does not know was put on the list while its verdicts were being
    made, by a login that had just found it eligible: it stays."""
    return {name for name in {*listed, *candidates} if eligible.get(name, True)}


def add(user: str) -> None:
    _change(lambda names: names | {user})


def discard(user: str) -> None:
    _change(lambda names: names - {user})


def rewrite(candidates: Iterable[str], is_eligible: Callable[[str], bool]) -> set[str]:
    """`dtenant setup`: decide every listed name and candidate again (outside the lock:
    account lookups may be slow), then write the list under the lock."""
    candidates = set(candidates)
    verdicts = {name: is_eligible(name) for name in read() | candidates}
    with _locked():
        kept = decide(read(), candidates, verdicts)
        _write(kept)
    return kept


def _change(change: Callable[[set[str]], set[str]]) -> None:
    with _locked():
        _write(change(read()))


def _write(names: set[str]) -> None:
    try:
        files.write_if_changed(Path(paths.DOCKER_HOST_USERS), render.pam_user_list(names), MODE)
    except OSError as exc:
        raise DtenantError(f"{paths.DOCKER_HOST_USERS} cannot be written: {exc.strerror}") from None


@contextlib.contextmanager
def _locked(timeout: float = 10.0) -> Iterator[None]:
    """One writer at a time: logins that provision and `dtenant setup` change the list
    by reading it first."""
    try:
        with files.locked(LOCK, timeout, poll=0.05):
            yield
    except files.LockBusy:
        raise DtenantError(f"{LOCK} held for more than {timeout:g} s: "
                           f"{paths.DOCKER_HOST_USERS} not changed") from None  # fmt: skip
