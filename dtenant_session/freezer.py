"""A tenant's daemon held still for the last look before an idle stop.

Between a look that finds a daemon idle and its stop, a client may connect; a daemon
still accepting would serve its first requests and then go (a `docker run --rm` then
loses its container: the next dockerd removes a created --rm container as it starts).
So the look is taken with the daemon's unit frozen (cgroup v2's cgroup.freeze, which
systemd's hybrid mode has as well): it accepts nothing, whoever connects waits in the
socket's queue, which systemd keeps; found idle, the daemon is killed where it stands
(cgroup.kill), never running again, and the next start serves the queue. An idle daemon
has no container and no request in flight: it is killed as cleanly as it would stop.
Freezes hold one lock, so that a pass can tell a group left frozen by a stop that was
itself killed midway (and thaw it) from one frozen for a look right now.
"""

from __future__ import annotations

import contextlib
import glob
import os
import signal
import time
from collections.abc import Iterator

from dtenant_session import egress, files, mountinfo, move, paths

FREEZE_SECONDS = 5.0  # a task in an uninterruptible wait (NFS) can delay a freeze
LOCK = f"{paths.LOCKS_DIR}/freeze.lock"
LOCK_SECONDS = 60.0  # a look takes milliseconds; a freeze may take FREEZE_SECONDS


class FreezeError(Exception):
    pass


def cgroup2_directory(control_group: str) -> str:
    """The directory of a systemd control group ("/dtenant.slice/...") in the cgroup2
    hierarchy, where cgroup.freeze and cgroup.kill are."""
    prefix = egress.cgroup2_prefix(mountinfo.read())
    if prefix is None:
        raise FreezeError("no cgroup2 hierarchy below /sys/fs/cgroup")
    return f"{egress.SYSFS_CGROUP}/{prefix}{control_group.strip('/')}"


class Frozen:
    """A frozen control group; kill() ends every process in it."""

    def __init__(self, directory: str) -> None:
        self.directory = directory

    def kill(self) -> None:
        try:
            _write(f"{self.directory}/cgroup.kill", "1")
        except FileNotFoundError:  # before Linux 5.14; frozen, nothing in it can fork
            for pid in move.pids_below(self.directory):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)

    def unix_sockets(self) -> set[int]:
        """The inodes of the unix sockets its processes hold (frozen, they hold still)."""
        return {inode for pid in move.pids_below(self.directory) for inode in _unix_sockets(pid)}


@contextlib.contextmanager
def frozen(control_group: str) -> Iterator[Frozen]:
    """The group frozen for the block, thawed after it whatever happens (after a kill
    too: systemd may give the group's path to the unit's next processes)."""
    directory = cgroup2_directory(control_group)
    with _termination_deferred(), files.locked(LOCK, LOCK_SECONDS):
        _write(f"{directory}/cgroup.freeze", "1")
        try:
            _wait_frozen(directory)
            yield Frozen(directory)
        finally:
            with contextlib.suppress(FileNotFoundError):  # systemd removed the emptied group
                _write(f"{directory}/cgroup.freeze", "0")


@contextlib.contextmanager
def _termination_deferred() -> Iterator[None]:
    """A SIGTERM meanwhile (systemctl stop, a shutdown) ends the process after the thaw,
    not with the daemon frozen. Only the main thread can handle signals."""
    received: list[int] = []
    try:
        previous = signal.signal(signal.SIGTERM, lambda signum, _frame: received.append(signum))
    except ValueError:
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        if received:
            os.kill(os.getpid(), signal.SIGTERM)


def thaw_left(pattern: str) -> list[str]:
    """Thaw the groups matching pattern (below the cgroup2 hierarchy) that a stop
    interrupted between its freeze and its thaw left frozen; their directories."""
    thawed = []
    with files.locked(LOCK, LOCK_SECONDS):
        for freeze in glob.glob(f"{cgroup2_directory(pattern)}/cgroup.freeze"):
            with contextlib.suppress(OSError):
                with open(freeze) as stream:
                    if stream.read().strip() != "1":
                        continue
                _write(freeze, "0")
                thawed.append(os.path.dirname(freeze))
    return thawed


def _wait_frozen(directory: str) -> None:
    deadline = time.monotonic() + FREEZE_SECONDS
    pause = 0.0005
    while _events(directory).get("frozen") != "1":
        if time.monotonic() > deadline:
            raise FreezeError(f"{directory} did not freeze within {FREEZE_SECONDS:g} s")
        time.sleep(pause)
        pause = min(pause * 2, 0.05)


def _events(directory: str) -> dict[str, str]:
    with open(f"{directory}/cgroup.events") as stream:
        pairs = (line.partition(" ") for line in stream.read().splitlines())
        return {key: value for key, _, value in pairs}


def _unix_sockets(pid: int) -> set[int]:
    """Its unix sockets, in whatever network namespace (the kernel's protocol name, as
    "UNIX" or "UNIX-STREAM", tells them from the others)."""
    inodes = set()
    with contextlib.suppress(OSError):  # exited meanwhile
        for fd in os.listdir(f"/proc/{pid}/fd"):
            link = f"/proc/{pid}/fd/{fd}"
            with contextlib.suppress(OSError):
                target = os.readlink(link)
                if target.startswith("socket:[") and os.getxattr(
                    link, "system.sockprotoname"
                ).startswith(b"UNIX"):
                    inodes.add(int(target[len("socket:[") : -1]))
    return inodes


def _write(path: str, value: str) -> None:
    with open(path, "w") as stream:
        stream.write(value)
