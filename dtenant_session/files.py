"""Writing files the way a crash cannot half-do: temporary file, fsync, rename."""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
import time
from collections.abc import Iterator

# pathlib only where a Path is made: the pre-start check of every daemon imports this
# module, and pathlib costs it ~3 ms.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path

# Root's alone: a tenant's daemon.json, the registry, stamps. Nothing running as a user
# reads them, and they tell one tenant about the others.
PRIVATE = 0o600


def replace(path: str | os.PathLike[str], content: str, mode: int = 0o644,
            owner: tuple[int, int] | None = None) -> None:  # fmt: skip
    """Atomically replace path with content, mode and owner (root's when None): a
    temporary beside it, created with its final mode so the content is never readable by
    more than that, written and fsynced, then renamed over it. The one writer of dtenant's
    files."""
    from pathlib import Path

    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    # A temporary of this writer's own: two writers at once (the reaper's timer and a
    # manual `dtenant reap`) would rename each other's away.
    temporary = target.with_name(f".{target.name}.{os.urandom(6).hex()}.dtenant-tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                 mode)  # fmt: skip
    try:
        try:
            os.fchmod(fd, mode)  # umask narrows
            if owner is not None:
                os.fchown(fd, *owner)
            data = memoryview(content.encode())
            while data:
                data = data[os.write(fd, data) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def write_if_changed(path: Path, content: str, mode: int = 0o644) -> bool:
    """replace(), unless content and mode are already so (then False, no write). A symlink
    or anything but a regular file in its place is replaced, never followed."""
    try:
        st = path.lstat()
        if (stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == mode
                and path.read_text() == content):  # fmt: skip
            return False
    except (FileNotFoundError, UnicodeDecodeError):
        pass
    replace(path, content, mode)
    return True


def make_private(path: Path, *, create: bool = False) -> bool:
    """Mode 0600 on root's file at path (created empty if asked), no symlink followed;
    True when its mode changed."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | (os.O_CREAT if create else 0)
    try:
        fd = os.open(path, flags, PRIVATE)
    except FileNotFoundError:
        return False
    try:
        if stat.S_IMODE(os.fstat(fd).st_mode) == PRIVATE:
            return False
        os.fchmod(fd, PRIVATE)
        return True
    finally:
        os.close(fd)


def remove_path(path: str) -> bool:
    from pathlib import Path

    return remove(Path(path))


def remove(path: Path) -> bool:
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    return True


class LockBusy(Exception):
    """Another holder kept a lock longer than the caller would wait."""


@contextlib.contextmanager
def locked(path: str, timeout: float, poll: float = 0.01) -> Iterator[None]:
    """An exclusive flock on root's lock file at path (its directory made 0700), waited
    for at most `timeout` seconds; LockBusy when another holder keeps it longer."""
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, PRIVATE)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise LockBusy(path) from None
                time.sleep(poll)
        yield
    finally:
        os.close(fd)
