"""/etc/subuid and /etc/subgid for userns-remap, mapped as users expect.

The tenant daemon runs with `userns-remap: USER`. Docker maps container ids onto the
user's ranges in these files, in order of their start. dtenant makes sure a tenant has

    USER:UID:1          container root is the user's own uid on the host
    USER:START:COUNT    container uids 1.. land in a subordinate range of the user

(the same for groups with the primary gid). Local users usually have a subordinate
range from useradd already; directory users (LDAP, SSSD) get one derived from their
registry slot, above every real uid, never overlapping another range. Writes take
shadow's own lock (/etc/subuid.lock) and replace the file atomically.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from dtenant_session.errors import DtenantError

SUBUID = "/etc/subuid"
SUBGID = "/etc/subgid"
RANGE_SIZE = 65536
LOCK_TIMEOUT = 5.0


class SubidError(DtenantError):
    pass


@dataclass(frozen=True)
class Range:
    name: str
    start: int
    count: int

    @property
    def end(self) -> int:
        return self.start + self.count - 1

    def overlaps(self, other: Range) -> bool:
        return self.start <= other.end and other.start <= self.end

    def line(self) -> str:
        return f"{self.name}:{self.start}:{self.count}"


def parse(text: str) -> list[Range]:
    ranges = []
    for line in text.splitlines():
        fields = line.strip().split(":")
        if len(fields) == 3 and fields[1].isdigit() and fields[2].isdigit():
            ranges.append(Range(fields[0], int(fields[1]), int(fields[2])))
    return ranges


def slot_range(user: str, slot: int, base: int) -> Range:
    """A subordinate range for a tenant without one: from its registry slot."""
    return Range(user, base + (slot - 1) * RANGE_SIZE, RANGE_SIZE)


def plan(text: str, user: str, own_id: int, fallback: Range, file: str) -> str | None:
    """The new file content, or None when it already maps `user` as wanted (pure)."""
    ranges = parse(text)
    mine = [r for r in ranges if r.name == user]
    own = Range(user, own_id, 1)
    wanted = [] if own in mine else [own]
    subordinate = [r for r in mine if r != own]
    if not subordinate:
        clash = [r for r in ranges if r.name != user and r.overlaps(fallback)]
        if clash:
            raise SubidError(
                f"{file}: the range {fallback.start}-{fallback.end} dtenant would give "
                f"{user!r} overlaps {clash[0].line()}; change userns.subid_base"
            )
        wanted.append(fallback)
    if not wanted:
        return None
    lines = text.splitlines()
    if own in wanted:
        # Before the user's other ranges: Docker maps container root from the first one.
        position = next((i for i, line in enumerate(lines) if line.startswith(f"{user}:")),
                        len(lines))  # fmt: skip
        lines.insert(position, own.line())
    if fallback in wanted:
        lines.append(fallback.line())
    return "\n".join(lines) + "\n"


@contextlib.contextmanager
def shadow_lock(file: str, timeout: float = LOCK_TIMEOUT) -> Iterator[None]:
    """The lock shadow's tools (useradd, usermod) take: FILE.lock holding the pid."""
    lock = f"{file}.lock"
    deadline = time.monotonic() + timeout
    while True:
        try:
            fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            break
        except FileExistsError:
            if _stale(lock):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(lock)
                continue
            if time.monotonic() > deadline:
                raise SubidError(f"{lock} is held by another program for more than "
                                 f"{timeout:g} s") from None  # fmt: skip
            time.sleep(0.05)
    try:
        os.write(fd, f"{os.getpid()}".encode())
        os.close(fd)
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(lock)


def _stale(lock: str) -> bool:
    try:
        with open(lock) as stream:
            pid = int(stream.read().strip() or "0")
    except (OSError, ValueError):
        return False
    return pid > 0 and not os.path.exists(f"/proc/{pid}")


def _replace(file: str, content: str) -> None:
    temporary = f"{file}+dtenant"
    with open(temporary, "w") as stream:
        stream.write(content)
        stream.flush()
        os.fsync(stream.fileno())
    os.chmod(temporary, 0o644)
    os.replace(temporary, file)


def _edit(file: str, change: Callable[[str], str | None]) -> bool:
    with shadow_lock(file):
        try:
            with open(file) as stream:
                text = stream.read()
        except FileNotFoundError:
            text = ""
        content = change(text)
        if content is None:
            return False
        _replace(file, content)
        return True


def ensure(user: str, uid: int, gid: int, slot: int, base: int) -> list[str]:
    """Give the tenant its mapping in both files, keyed by the user's name (as Docker 20.10
    reads them); returns the files that changed."""
    fallback = slot_range(user, slot, base)
    changed = []
    for file, own_id in ((SUBUID, uid), (SUBGID, gid)):

        def planned(text: str, file: str = file, own_id: int = own_id) -> str | None:
            return plan(text, user, own_id, fallback, file)

        if _edit(file, planned):
            changed.append(file)
    return changed


def rename(old: str, new: str) -> None:
    """A renamed user keeps its ranges: files its containers wrote keep their owners."""
    for file in (SUBUID, SUBGID):

        def renamed(text: str) -> str | None:
            lines = text.splitlines()
            edited = [f"{new}:{line[len(old) + 1 :]}" if line.startswith(f"{old}:") else line
                      for line in lines]  # fmt: skip
            return None if edited == lines else "\n".join(edited) + "\n"

        _edit(file, renamed)
