"""Moving a tenant's data from one container-id mapping to another, losing nothing.

Version 0.1 mapped container root to the user's own uid; since 0.2 a tenant's container
ids are a block of its own (subid.py). The files Docker keeps for the tenant (layers,
volumes, container files) carry host ids of the old map; each is moved to the host id
the same container id has in the new map. The user's own id U is kept at U inside the
container by the new map, and was another container id's host id before, so the move
takes two passes, each idempotent: (A) every old host id to `block + container id` (the
block is clear of every old range, so a second run changes nothing), (B) `block + U` to
U. A marker file records the old maps and the pass, so a move that is interrupted (a
crash, a time limit) resumes where it was.

chown clears set-user-ID and set-group-ID bits and file capabilities: both are put back,
and a capability's root id (a host uid) moves with the map.
"""

from __future__ import annotations

import errno
import json
import os
import stat
import struct
from collections.abc import Callable
from dataclasses import dataclass

from dtenant_session import files, ownerstamp, treewalk
from dtenant_session.subid import ID_BLOCK, Range

CAPABILITY = "security.capability"
VFS_CAP_REVISION_3 = 0x03000000
# In ownerstamp, which the pre-start check imports: this module's dataclasses would cost
# it ~8 ms at every daemon start.
MARKER = ownerstamp.IDSHIFT_MARKER
state_dirs = ownerstamp.state_dirs


@dataclass(frozen=True)
class IdMap:
    """Docker's view of a map: (container id, host id, size) runs in file order."""

    runs: tuple[tuple[int, int, int], ...]

    @classmethod
    def from_ranges(cls, ranges: list[Range]) -> IdMap:
        runs, container = [], 0
        for r in ranges:  # pkg/idtools createIDMap
            runs.append((container, r.start, r.count))
            container += r.count
        return cls(tuple(runs))

    def to_container(self, host: int) -> int | None:
        for container, start, size in self.runs:
            if start <= host < start + size:
                return container + host - start
        return None


def pass_a(old: IdMap, block: int) -> Callable[[int], int]:
    """Old host id -> block + its container id (ids the old map lacks stay as they are)."""

    def move(host: int) -> int:
        container = old.to_container(host)
        return host if container is None or container >= ID_BLOCK else block + container

    return move


def pass_b(block: int, own: int) -> Callable[[int], int]:
    """The parked user's own id -> the id itself."""

    def move(host: int) -> int:
        return own if 0 < own < ID_BLOCK and host == block + own else host

    return move


def capability_root(value: bytes, move: Callable[[int], int]) -> bytes:
    """A security.capability value with its namespace root id moved (revision 3 only)."""
    if len(value) == 24 and struct.unpack_from("<I", value)[0] & 0xFF000000 == VFS_CAP_REVISION_3:
        (root,) = struct.unpack_from("<I", value, 20)
        return value[:20] + struct.pack("<I", move(root))
    return value


def chown_tree(top: str, uid_move: Callable[[int], int], gid_move: Callable[[int], int]) -> int:
    """Apply the moves to every entry under top (iteratively, relative to directory
    descriptors, never following a link); returns how many entries changed. The tree
    must be quiescent (its daemon stopped); any entry that cannot be moved fails the
    whole move, which a later run resumes."""
    changed = 0

    def ids(st: os.stat_result) -> tuple[int, int] | None:
        wanted = uid_move(st.st_uid), gid_move(st.st_gid)
        return None if wanted == (st.st_uid, st.st_gid) else wanted

    def directory(fd: int, st: os.stat_result) -> None:
        nonlocal changed
        if (wanted := ids(st)) is not None:
            os.fchown(fd, *wanted)
            os.fchmod(fd, stat.S_IMODE(st.st_mode))
            changed += 1

    def entry(dir_fd: int, name: str, st: os.stat_result) -> None:
        nonlocal changed
        if (wanted := ids(st)) is None:
            return
        regular = treewalk.open_regular(dir_fd, name) if stat.S_ISREG(st.st_mode) else None
        if regular is None:
            os.chown(name, *wanted, dir_fd=dir_fd, follow_symlinks=False)
        else:
            try:
                _chown_keeping_bits(regular, st, wanted, uid_move)
            finally:
                os.close(regular)
        changed += 1

    result = treewalk.visit(top, directory, entry)
    if result.error_count:
        raise OSError(f"{top}: {result.error_count} entries could not be moved: "
                      f"{'; '.join(result.errors[:3])}")  # fmt: skip
    return changed


def _chown_keeping_bits(fd: int, st: os.stat_result, ids: tuple[int, int],
                        uid_move: Callable[[int], int]) -> None:  # fmt: skip
    """chown clears set-user-ID and set-group-ID bits and file capabilities: put them back."""
    try:
        capability: bytes | None = os.getxattr(fd, CAPABILITY)
    except OSError as exc:
        if exc.errno not in (errno.ENODATA, errno.ENOTSUP):
            raise
        capability = None
    os.fchown(fd, *ids)
    # Not on a file with several names: another one may lie outside the data-root, where
    # the user would run it as container root.
    if st.st_mode & (stat.S_ISUID | stat.S_ISGID) and st.st_nlink == 1:
        os.fchmod(fd, stat.S_IMODE(st.st_mode))
    if capability is not None:
        os.setxattr(fd, CAPABILITY, capability_root(capability, uid_move))


@dataclass
class Move:
    """One tenant's move, as recorded in its marker."""

    source: str  # the old state directory's name, "UID.GID"
    old_uids: list[Range]
    old_gids: list[Range]
    block: int
    own_uid: int
    own_gid: int
    done_a: bool = False

    def save(self, data_root: str) -> None:
        content = {**self.__dict__}
        content["old_uids"] = [r.line() for r in self.old_uids]
        content["old_gids"] = [r.line() for r in self.old_gids]
        files.replace(os.path.join(data_root, MARKER), json.dumps(content), files.PRIVATE)

    @classmethod
    def load(cls, data_root: str) -> Move | None:
        try:
            with open(os.path.join(data_root, MARKER)) as stream:
                content = json.load(stream)
        except FileNotFoundError:
            return None

        def ranges(lines: list[str]) -> list[Range]:
            return [Range(name, int(start), int(count))
                    for name, start, count in (line.split(":") for line in lines)]  # fmt: skip

        content["old_uids"] = ranges(content["old_uids"])
        content["old_gids"] = ranges(content["old_gids"])
        return cls(**content)


CONTAINER_PATHS = ("ResolvConfPath", "HostnamePath", "HostsPath", "LogPath")


def retarget(state: str, old: str, new: str) -> int:
    """Docker keeps absolute paths into its state directory in each container's
    config.v2.json (volume sources, hosts and log files): point them at the new name.
    Idempotent; returns how many files changed."""
    changed = 0
    containers = os.path.join(state, "containers")
    try:
        names = os.listdir(containers)
    except FileNotFoundError:
        return 0
    for name in names:
        path = os.path.join(containers, name, "config.v2.json")
        try:
            with open(path, "rb") as stream:
                config = json.loads(stream.read())
        except (OSError, ValueError):
            continue  # not a container Docker could load either
        if _retarget_config(config, old, new):
            files.replace(path, json.dumps(config), files.PRIVATE)
            changed += 1
    return changed


def _retarget_config(config: dict[str, object], old: str, new: str) -> bool:
    def moved(value: object) -> object:
        if isinstance(value, str) and (value == old or value.startswith(old + "/")):
            return new + value[len(old) :]
        return value

    before = json.dumps(config, sort_keys=True)
    for key in CONTAINER_PATHS:
        if key in config:
            config[key] = moved(config[key])
    points = config.get("MountPoints")
    if isinstance(points, dict):
        for point in points.values():
            if isinstance(point, dict) and "Source" in point:
                point["Source"] = moved(point["Source"])
    return json.dumps(config, sort_keys=True) != before


def run(data_root: str, move: Move) -> None:
    """Carry out (or resume) a recorded move; the state directory ends up as
    `block.block`, where Docker looks for it under the new map."""
    move.save(data_root)
    source = os.path.join(data_root, move.source)
    target = os.path.join(data_root, f"{move.block}.{move.block}")
    if not os.path.lexists(source) and os.path.isdir(target):  # renamed, then interrupted
        retarget(target, source, target)
        os.unlink(os.path.join(data_root, MARKER))
        return
    if not move.done_a:
        chown_tree(source, pass_a(IdMap.from_ranges(move.old_uids), move.block),
                   pass_a(IdMap.from_ranges(move.old_gids), move.block))  # fmt: skip
        move.done_a = True
        move.save(data_root)
    chown_tree(source, pass_b(move.block, move.own_uid), pass_b(move.block, move.own_gid))
    retarget(source, source, target)
    os.rename(source, target)
    os.unlink(os.path.join(data_root, MARKER))
