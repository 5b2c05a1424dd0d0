"""Walking and removing trees a tenant controls, as root.

A tenant writes whatever it likes into its volumes, layers and build contexts: trees
thousands of levels deep, directories of millions of entries, FIFOs, symlink loops, and
directories swapped for symlinks while root looks at them. Everything here is
iterative (an explicit stack, never recursion), descends with openat(O_NOFOLLOW |
O_DIRECTORY) relative to the parent's descriptor (a symlink is never followed, not even
one that replaces a directory mid-walk), never opens anything but directories (a FIFO
cannot block it), stays on one filesystem, holds at most a few dozen descriptors
whatever the depth (a directory whose descriptor was given up is opened again from an
ancestor, one name at a time, and must be the very same inode), and keeps in memory
only the path being walked. Walks have a time and an entry budget and say when they
stopped early; removal has none (it must finish), and reports what it could not delete.

Standard library only, and light to import: the pre-start check of every daemon uses it.
"""

from __future__ import annotations

import errno
import os
import stat
import time
from collections import OrderedDict
from typing import TYPE_CHECKING, NamedTuple, TypeAlias

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
# What "not a directory (any more)" looks like to openat(O_DIRECTORY | O_NOFOLLOW).
_NOT_A_DIRECTORY = (errno.ENOTDIR, errno.ELOOP)
MAX_ERRORS = 20  # kept word for word; the rest are only counted
_CLOCK_EVERY = 1024  # entries between two looks at the clock


class Limits(NamedTuple):
    seconds: float | None = 20.0  # None: no time budget
    entries: int | None = 5_000_000  # None: no entry budget (entries read again count)
    open_directories: int = 32  # directories held open at once (each up to 2 fds)


DEFAULT = Limits()
UNLIMITED = Limits(seconds=None, entries=None)


class Result:
    """What a walk or a removal saw: totals, whether it got through, what went wrong."""

    __slots__ = ("bytes", "complete", "directories", "entries", "error_count", "errors", "stopped")

    def __init__(self) -> None:
        self.bytes = 0
        self.entries = 0
        self.directories = 0
        self.complete = True
        self.stopped = ""  # why it did not get through
        self.errors: list[str] = []
        self.error_count = 0

    def summary(self) -> str:
        """One line for the administrator; empty when all went well."""
        parts = []
        if not self.complete:
            parts.append(f"stopped early: {self.stopped}")
        if self.error_count:
            more = self.error_count - len(self.errors)
            also = f" (and {more} more)" if more else ""
            parts.append(f"{self.error_count} error(s): {self.errors[0]}{also}")
        return "; ".join(parts)


class _Stop(Exception):
    """A budget ran out."""


class _Changed(Exception):
    """A directory reopened from its parent is no longer the one first seen."""


class Directory:
    """One directory on the current path: enough to reopen it and to resume it."""

    __slots__ = ("consumed", "dev", "fd", "ino", "name", "parent", "rescans", "scan", "skip")

    def __init__(self, parent: Directory | None, name: str, st: os.stat_result, fd: int) -> None:
        self.parent = parent
        self.name = name
        self.dev = st.st_dev
        self.ino = st.st_ino
        self.fd: int | None = fd
        self.scan: Iterator[os.DirEntry[str]] | None = None
        self.consumed = 0  # entries read so far: a walk resumes after them
        self.skip: set[str] | None = None  # removal: names that could not be removed
        self.rescans = 0

    def path(self, name: str = "") -> str:
        """For messages only: root never opens by this path."""
        names = [name] if name else []
        directory: Directory | None = self
        while directory is not None:
            names.append(directory.name)
            directory = directory.parent
        return "/".join(reversed(names))

    def close(self) -> None:
        if self.scan is not None:
            self.scan.close()  # type: ignore[attr-defined]
            self.scan = None
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


class _Tree:
    """Depth-first, iterative, fd-relative traversal; subclasses say what each entry means.

    `resume`: after a directory's descriptor was given up, skip the entries already read
    (a walk); otherwise read it again from the start (a removal: what was handled is gone).
    """

    resume = True

    follow_root = True  # root is the administrator's path: below it nothing is followed

    def __init__(self, root: str, limits: Limits) -> None:
        self.limits = limits
        self.result = Result()
        self.deadline = None if limits.seconds is None else time.monotonic() + limits.seconds
        fd = os.open(root, _DIR_FLAGS & ~os.O_NOFOLLOW if self.follow_root else _DIR_FLAGS)
        self.root = Directory(None, root.rstrip("/") or "/", os.fstat(fd), fd)
        self.stack = [self.root]
        self.held: OrderedDict[Directory, None] = OrderedDict()  # reopenable, LRU first

    # -- what subclasses decide ----------------------------------------------------------

    def entry(self, directory: Directory, item: os.DirEntry[str]) -> bool:
        """A non-directory entry; True: it is a directory after all, descend."""
        raise NotImplementedError

    def entered(self, directory: Directory, st: os.stat_result) -> None:
        """A directory just opened (st from its descriptor)."""

    def left(self, directory: Directory) -> bool:
        """A directory fully read; False: read it again."""
        return True

    def prune(self, name: str) -> bool:
        return False

    def not_descended(self, parent: Directory, name: str, exc: OSError) -> None:
        self.error(parent.path(name), exc)

    # -- the traversal -------------------------------------------------------------------

    def run(self) -> Result:
        try:
            while self.stack:
                top = self.stack[-1]
                name = self._next_subdirectory(top)
                if name is not None:
                    self._descend(top, name)
                    continue
                top.close()
                self.held.pop(top, None)
                if self.left(top):
                    self.stack.pop()
                else:  # read it again from the start
                    top.consumed = 0
        except _Stop as stop:
            self.result.complete = False
            self.result.stopped = str(stop)
        finally:
            for directory in self.stack:
                directory.close()
        return self.result

    def error(self, where: str, exc: OSError) -> None:
        result = self.result
        result.error_count += 1
        if len(result.errors) < MAX_ERRORS:
            result.errors.append(f"{where}: {exc.strerror or exc}")

    def _count(self) -> None:
        result = self.result
        result.entries += 1
        if self.limits.entries is not None and result.entries > self.limits.entries:
            raise _Stop(f"entry budget of {self.limits.entries} entries ran out")
        if result.entries % _CLOCK_EVERY == 0:
            self._check_clock()

    def _check_clock(self) -> None:
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise _Stop(f"time budget of {self.limits.seconds:g} s ran out")

    def _next_subdirectory(self, directory: Directory) -> str | None:
        """Handle entries up to the next subdirectory to descend into; None at the end."""
        scan = self._scan(directory)
        if scan is None:
            return None
        for item in scan:
            directory.consumed += 1
            self._count()
            if directory.skip is not None and item.name in directory.skip:
                continue
            try:
                is_directory = item.is_dir(follow_symlinks=False)
            except OSError:
                is_directory = False
            descend = is_directory or self.entry(directory, item)
            if descend and not self.prune(item.name):
                return item.name
        return None

    def _scan(self, directory: Directory) -> Iterator[os.DirEntry[str]] | None:
        if directory.scan is None:
            try:
                fd = self._descriptor(directory)
            except _Changed:
                self.error(directory.path(), OSError(errno.ESTALE, "replaced during the walk"))
                return None
            except OSError as exc:
                self.error(directory.path(), exc)
                return None
            directory.scan = os.scandir(fd)
            if self.resume:
                for _ in range(directory.consumed):
                    if next(directory.scan, None) is None:
                        break
                    self._count()
            else:
                directory.consumed = 0
        self._touch(directory)
        return directory.scan

    def _descend(self, parent: Directory, name: str) -> None:
        self._check_clock()
        try:
            fd = os.open(name, _DIR_FLAGS, dir_fd=self._descriptor(parent))
        except _Changed:
            return
        except OSError as exc:
            if exc.errno != errno.ENOENT:  # gone meanwhile: nothing to do
                self.not_descended(parent, name, exc)
            return
        st = os.fstat(fd)
        if st.st_dev != self.root.dev:
            os.close(fd)
            self.not_descended(parent, name, OSError(errno.EXDEV, "another filesystem"))
            return
        child = Directory(parent, name, st, fd)
        self.result.directories += 1
        self.entered(child, st)
        self.stack.append(child)
        self._touch(child)

    def _touch(self, directory: Directory) -> None:
        """directory was just used: keep it, give up the least recently used beyond the
        limit (the root is always held)."""
        if directory is self.root:
            return
        self.held[directory] = None
        self.held.move_to_end(directory)
        while len(self.held) > self.limits.open_directories:
            oldest, _ = self.held.popitem(last=False)
            oldest.close()

    def _descriptor(self, directory: Directory) -> int:
        """directory's descriptor, reopened name by name from the nearest held ancestor;
        each must be the inode first seen there (_Changed otherwise)."""
        chain = []
        ancestor = directory
        while ancestor.fd is None:
            chain.append(ancestor)
            if ancestor.parent is None:  # the root is always held: cannot happen
                raise _Changed(ancestor.path())
            ancestor = ancestor.parent
        fd = ancestor.fd
        for step in reversed(chain):
            try:
                fd = os.open(step.name, _DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                if exc.errno in _NOT_A_DIRECTORY:  # a symlink or a file there now
                    raise _Changed(step.path()) from None
                raise
            st = os.fstat(fd)
            if (st.st_dev, st.st_ino) != (step.dev, step.ino):
                os.close(fd)
                raise _Changed(step.path())
            step.fd = fd
            self._touch(step)
        return fd


# -- disk usage --------------------------------------------------------------------------


class _Usage(_Tree):
    """Blocks in use on the root's filesystem, each inode once (du -sx)."""

    def __init__(self, root: str, limits: Limits) -> None:
        super().__init__(root, limits)
        self.linked: set[int] = set()  # inodes with several links, counted already
        self._add(os.fstat(self._descriptor(self.root)))

    def _add(self, st: os.stat_result) -> None:
        if st.st_dev != self.root.dev:
            return
        if st.st_nlink > 1 and not stat.S_ISDIR(st.st_mode):
            if st.st_ino in self.linked:
                return
            self.linked.add(st.st_ino)
        self.result.bytes += st.st_blocks * 512

    def entered(self, directory: Directory, st: os.stat_result) -> None:
        self._add(st)

    def entry(self, directory: Directory, item: os.DirEntry[str]) -> bool:
        try:
            st = item.stat(follow_symlinks=False)  # fstatat(parent, name, NOFOLLOW)
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                self.error(directory.path(item.name), exc)
            return False
        if stat.S_ISDIR(st.st_mode):
            return True
        self._add(st)
        return False

    def not_descended(self, parent: Directory, name: str, exc: OSError) -> None:
        if exc.errno in _NOT_A_DIRECTORY:  # replaced since it was listed: count what it is
            try:
                self._add(os.stat(name, dir_fd=self._descriptor(parent), follow_symlinks=False))
            except (OSError, _Changed):
                pass
        elif exc.errno != errno.EXDEV:  # a mount point: not this filesystem's usage
            self.error(parent.path(name), exc)


def disk_usage(root: str, limits: Limits = DEFAULT) -> Result:
    """Bytes of disk used under root (its filesystem only, hard links once); raises
    OSError only when root itself cannot be opened."""
    return _Usage(root, limits).run()


# -- visiting every entry ----------------------------------------------------------------

DirectoryVisit: TypeAlias = "Callable[[int, os.stat_result], None]"
EntryVisit: TypeAlias = "Callable[[int, str, os.stat_result], None]"


class _Visitor(_Tree):
    def __init__(self, root: str, limits: Limits, on_directory: DirectoryVisit,
                 on_entry: EntryVisit) -> None:  # fmt: skip
        super().__init__(root, limits)
        self.on_directory, self.on_entry = on_directory, on_entry
        fd = self._descriptor(self.root)
        on_directory(fd, os.fstat(fd))

    def entered(self, directory: Directory, st: os.stat_result) -> None:
        self.on_directory(self._descriptor(directory), st)

    def entry(self, directory: Directory, item: os.DirEntry[str]) -> bool:
        try:
            st = item.stat(follow_symlinks=False)
        except OSError as exc:
            self.error(directory.path(item.name), exc)
            return False
        if stat.S_ISDIR(st.st_mode):
            return True
        self.on_entry(self._descriptor(directory), item.name, st)
        return False


def visit(root: str, on_directory: DirectoryVisit, on_entry: EntryVisit,
          limits: Limits = UNLIMITED) -> Result:  # fmt: skip
    """on_directory(fd, st) for every directory under root, root included, and
    on_entry(directory_fd, name, st) for every other entry: nothing followed, nothing
    opened but directories; a visit acts relative to the descriptors it is given."""
    return _Visitor(root, limits, on_directory, on_entry).run()


# -- finding files -----------------------------------------------------------------------


class _Finder(_Tree):
    def __init__(self, root: str, limits: Limits, visit: Callable[[int, str, Directory], None],
                 pruned: frozenset[str]) -> None:  # fmt: skip
        super().__init__(root, limits)
        self.visit = visit
        self.pruned = pruned

    def prune(self, name: str) -> bool:
        return name in self.pruned

    def entry(self, directory: Directory, item: os.DirEntry[str]) -> bool:
        try:
            regular = item.is_file(follow_symlinks=False)
        except OSError:
            return False
        if regular:
            self.visit(self._descriptor(directory), item.name, directory)
        return False

    def not_descended(self, parent: Directory, name: str, exc: OSError) -> None:
        if exc.errno not in _NOT_A_DIRECTORY and exc.errno != errno.EXDEV:
            self.error(parent.path(name), exc)


def regular_files(
    root: str,
    visit: Callable[[int, str, Directory], None],
    *,
    pruned: frozenset[str] = frozenset(),
    limits: Limits = DEFAULT,
) -> Result:
    """Call visit(directory_fd, name, directory) for each regular file under root, in no
    directory named in `pruned`. visit opens the file itself (open_regular): the entry
    may have changed since it was listed."""
    return _Finder(root, limits, visit, pruned).run()


def open_regular(dir_fd: int, name: str) -> int | None:
    """A descriptor of dir_fd/name if it is a regular file, never following a symlink or
    blocking on a FIFO or device; None otherwise."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY
                     | os.O_CLOEXEC, dir_fd=dir_fd)  # fmt: skip
    except OSError:
        return None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        return None
    return fd


# -- removal -----------------------------------------------------------------------------


class _Removal(_Tree):
    resume = False
    follow_root = False  # a symlink at root goes, not what it points at
    MAX_RESCANS = 3

    def _unlink(self, directory: Directory, name: str) -> bool:
        """True: it is a directory, descend into it."""
        try:
            os.unlink(name, dir_fd=self._descriptor(directory))
        except IsADirectoryError:
            return True
        except FileNotFoundError:
            pass
        except OSError as exc:
            self._keep(directory, name, exc)
        except _Changed:
            pass
        return False

    def _keep(self, directory: Directory, name: str, exc: OSError) -> None:
        self.error(directory.path(name), exc)
        if directory.skip is None:
            directory.skip = set()
        directory.skip.add(name)

    def entry(self, directory: Directory, item: os.DirEntry[str]) -> bool:
        return self._unlink(directory, item.name)

    def not_descended(self, parent: Directory, name: str, exc: OSError) -> None:
        if exc.errno in _NOT_A_DIRECTORY:  # replaced by a symlink or a file: remove that
            if self._unlink(parent, name):
                self._keep(parent, name, exc)  # a directory again: give up on it
            return
        self._keep(parent, name, exc)

    def left(self, directory: Directory) -> bool:
        parent = directory.parent
        if parent is None:
            return True  # the caller removes the root by its path
        try:
            os.rmdir(directory.name, dir_fd=self._descriptor(parent))
        except FileNotFoundError:
            pass
        except OSError as exc:
            if exc.errno == errno.ENOTEMPTY and directory.rescans < self.MAX_RESCANS:
                directory.rescans += 1  # written to meanwhile: read it again
                return False
            self._keep(parent, directory.name, exc)
        except _Changed:
            pass
        return True


def remove_tree(root: str) -> Result:
    """Delete root and everything below it on its filesystem, however deep or wide,
    without following any symlink. What could not be deleted is in the result's errors
    (mount points below root are left alone). A missing root is no error; a symlink or
    file at root is unlinked, not followed."""
    try:
        tree = _Removal(root, UNLIMITED)
    except FileNotFoundError:
        return Result()
    except OSError as exc:
        if exc.errno not in _NOT_A_DIRECTORY:
            raise
        os.unlink(root)
        return Result()
    result = tree.run()
    if result.error_count == 0:
        try:
            os.rmdir(root)
        except FileNotFoundError:
            pass
        except OSError as exc:
            tree.error(root, exc)
    return result
