from __future__ import annotations

import json
import os
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from dtenant_session import idshift, treewalk
from dtenant_session.subid import Range

OWN = 1001
OLD_START = 100000  # useradd's range of the user
BLOCK = 1_879_048_192
# 0.1's map: container root = the user, container ids 1.. = her subordinate range.
OLD = [Range("alice", OWN, 1), Range("alice", OLD_START, 65536)]
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")


def test_pass_a_moves_old_ids_into_the_block_and_parks_the_users_own() -> None:
    move = idshift.pass_a(idshift.IdMap.from_ranges(OLD), BLOCK)
    assert move(OWN) == BLOCK  # old container root
    assert move(OLD_START) == BLOCK + 1
    assert move(OLD_START + OWN - 1) == BLOCK + OWN  # container id 1001, parked
    assert move(0) == 0 and move(5) == 5  # not in the old map: left alone
    assert move(move(OLD_START)) == move(OLD_START)  # a second run changes nothing
    settle = idshift.pass_b(BLOCK, OWN)
    assert settle(BLOCK + OWN) == OWN and settle(BLOCK) == BLOCK


def test_a_capabilitys_root_moves_with_the_map() -> None:
    v3 = struct.pack("<IIIII", idshift.VFS_CAP_REVISION_3, 1 << 13, 0, 0, 0) + struct.pack(
        "<I", OWN
    )
    moved = idshift.capability_root(v3, idshift.pass_a(idshift.IdMap.from_ranges(OLD), BLOCK))
    assert struct.unpack_from("<I", moved, 20)[0] == BLOCK
    v2 = b"\x00\x00\x00\x02" + bytes(16)
    assert idshift.capability_root(v2, lambda _: 7) == v2


def _tree(root: Path) -> dict[str, Path]:
    state = root / f"{OWN}.{OWN}"
    top = state / "volumes" / "v" / "_data"
    top.mkdir(parents=True)
    fd = os.open(top, os.O_DIRECTORY)
    for _ in range(DEPTH):
        os.mkdir("d", dir_fd=fd)
        inner = os.open("d", os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = inner
    os.close(os.open("by-user", os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=fd))
    os.chown("by-user", OLD_START + OWN - 1, OLD_START + OWN - 1, dir_fd=fd)  # container 1001
    os.close(fd)
    files = {"root": state / "volumes" / "v" / "_data" / "by-root",
             "suid": state / "suid", "link": state / "link"}  # fmt: skip
    files["root"].write_text("x")
    files["suid"].write_text("x")
    files["link"].symlink_to("/etc/passwd")
    os.chown(files["root"], OWN, OWN)  # container root
    os.chown(files["suid"], OLD_START + 999, OWN)
    os.chmod(files["suid"], 0o4755)  # noqa: S103 - a set-user-ID file must keep its bit
    os.chown(files["link"], OWN, OWN, follow_symlinks=False)
    files["linked"] = state / "linked"  # a set-user-ID file with a second name
    files["linked"].write_text("x")
    os.chown(files["linked"], OWN, OWN)
    os.chmod(files["linked"], 0o4755)  # noqa: S103 - the bit must not come back
    os.link(files["linked"], root / "outside")
    return files


DEPTH = 2100  # deeper than Python's recursion limit, and longer than PATH_MAX as a path


@pytest.fixture(autouse=True)
def _remove_deep_trees(tmp_path: Path) -> Iterator[None]:
    """pytest's own clean-up of old temporary directories recurses: leave no deep tree."""
    yield
    for top in tmp_path.iterdir():
        treewalk.remove_tree(str(top))


def _deep(top: Path, depth: int) -> int:
    """A descriptor of top/d/d/.../d (depth levels), opened step by step."""
    fd = os.open(top, os.O_DIRECTORY)
    for _ in range(depth):
        inner = os.open("d", os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = inner
    return fd


def _move(data_root: Path) -> idshift.Move:
    return idshift.Move(f"{OWN}.{OWN}", OLD, OLD, BLOCK, OWN, OWN)


@as_root
def test_a_move_shifts_every_entry_keeps_bits_and_follows_no_link(tmp_path: Path) -> None:
    files = _tree(tmp_path)
    passwd = os.stat("/etc/passwd")
    idshift.run(str(tmp_path), _move(tmp_path))
    moved = {k: Path(str(p).replace(f"{OWN}.{OWN}", f"{BLOCK}.{BLOCK}")) for k, p in files.items()}
    assert (os.lstat(moved["root"]).st_uid, os.lstat(moved["root"]).st_gid) == (BLOCK, BLOCK)
    fd = _deep(tmp_path / f"{BLOCK}.{BLOCK}" / "volumes" / "v" / "_data", DEPTH)
    user = os.stat("by-user", dir_fd=fd)
    os.close(fd)
    assert (user.st_uid, user.st_gid) == (OWN, OWN)
    assert os.lstat(moved["suid"]).st_uid == BLOCK + 1000
    assert os.lstat(moved["suid"]).st_mode & 0o7777 == 0o4755
    assert os.lstat(moved["link"]).st_uid == BLOCK
    assert os.lstat(moved["linked"]).st_uid == BLOCK
    assert os.lstat(moved["linked"]).st_mode & 0o7777 == 0o755
    assert os.stat("/etc/passwd") == passwd  # the link's target untouched
    assert not (tmp_path / idshift.MARKER).exists()
    assert idshift.state_dirs(str(tmp_path)) == [f"{BLOCK}.{BLOCK}"]


@as_root
def test_an_interrupted_move_resumes_without_moving_twice(tmp_path: Path) -> None:
    files = _tree(tmp_path)
    move = _move(tmp_path)
    move.save(str(tmp_path))
    source = str(tmp_path / move.source)
    idshift.chown_tree(source, idshift.pass_a(idshift.IdMap.from_ranges(OLD), BLOCK),
                       idshift.pass_a(idshift.IdMap.from_ranges(OLD), BLOCK))  # fmt: skip
    move.done_a = True
    move.save(str(tmp_path))  # then "crashed" in pass B
    resumed = idshift.Move.load(str(tmp_path))
    assert resumed == move
    idshift.run(str(tmp_path), resumed)
    fd = _deep(tmp_path / f"{BLOCK}.{BLOCK}" / "volumes" / "v" / "_data", DEPTH)
    assert os.stat("by-user", dir_fd=fd).st_uid == OWN
    os.close(fd)
    assert os.lstat(Path(str(files["root"]).replace(f"{OWN}.{OWN}", f"{BLOCK}.{BLOCK}"))
                    ).st_uid == BLOCK  # fmt: skip


def test_container_paths_into_the_state_directory_follow_it(tmp_path: Path) -> None:
    old, new = str(tmp_path / "1001.1001"), str(tmp_path / f"{BLOCK}.{BLOCK}")
    container = tmp_path / "1001.1001" / "containers" / "abc"
    container.mkdir(parents=True)
    config = {
        "HostsPath": f"{old}/containers/abc/hosts", "LogPath": f"{old}/containers/abc/abc.log",
        "MountPoints": {"/v": {"Source": f"{old}/volumes/data/_data", "Name": "data"},
                        "/w": {"Source": "/home/alice/w"}},
        "Config": {"Labels": {"note": f"{old}/x"}},  # the tenant's own text: untouched
    }  # fmt: skip
    (container / "config.v2.json").write_text(json.dumps(config))
    assert idshift.retarget(str(tmp_path / "1001.1001"), old, new) == 1
    moved = json.loads((container / "config.v2.json").read_text())
    assert moved["HostsPath"] == f"{new}/containers/abc/hosts"
    assert moved["MountPoints"]["/v"]["Source"] == f"{new}/volumes/data/_data"
    assert moved["MountPoints"]["/w"]["Source"] == "/home/alice/w"
    assert moved["Config"]["Labels"]["note"] == f"{old}/x"
    assert idshift.retarget(str(tmp_path / "1001.1001"), old, new) == 0
