"""treewalk on the trees a tenant can make: deep, wide, FIFOs, loops, swaps mid-walk."""

from __future__ import annotations

import os
import subprocess
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dtenant_session import treewalk

DEEP = 1500  # deeper than Python's recursion limit (1000) and the 1,100 of the report


def _deep(top: Path, levels: int = DEEP) -> Path:
    """top/d/d/.../d (levels deep) with a file at the bottom; fd-relative, as no path to
    the bottom fits in PATH_MAX once the names are long enough."""
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    for _ in range(levels):
        os.mkdir("d", dir_fd=fd)
        below = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = below
    with open(os.open("bottom", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd), "wb") as stream:
        stream.write(b"x" * 8192)
    os.close(fd)
    return top


def _du(path: Path) -> int:
    """What coreutils says: the reference for disk use."""
    out = subprocess.run(["du", "-sx", "--block-size=1", str(path)], capture_output=True,
                         text=True, check=True).stdout  # fmt: skip
    return int(out.split()[0])


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """Something a tenant's symlinks point at: must never be counted or removed."""
    where = tmp_path / "outside"
    where.mkdir()
    (where / "precious").write_bytes(b"p" * (1 << 20))
    return where


def test_usage_matches_du_on_an_ordinary_tree(tmp_path: Path) -> None:
    root = tmp_path / "t"
    for name in ("a/b/c", "a/e", "f"):
        (root / name).mkdir(parents=True)
    for index, name in enumerate(("a/x", "a/b/c/y", "f/z", "w")):
        (root / name).write_bytes(b"z" * (4096 * (index + 1)))
    result = treewalk.disk_usage(str(root))
    assert result.complete and not result.errors
    assert result.bytes == _du(root)
    assert result.directories == 5


def test_a_tree_deeper_than_the_recursion_limit(tmp_path: Path) -> None:
    root = tmp_path / "t"
    root.mkdir()
    _deep(root)
    result = treewalk.disk_usage(str(root))
    assert result.complete, result.stopped
    assert result.errors == []
    assert result.directories == DEEP
    assert result.bytes == _du(root)
    removed = treewalk.remove_tree(str(root))
    assert removed.error_count == 0, removed.errors
    assert not root.exists()


def test_descriptors_stay_bounded_however_deep(tmp_path: Path) -> None:
    root = tmp_path / "t"
    root.mkdir()
    _deep(root)
    before = _open_fds()
    seen: list[int] = []

    def visit(dir_fd: int, name: str, where: treewalk.Directory) -> None:
        seen.append(_open_fds())

    limits = treewalk.Limits(open_directories=8)
    result = treewalk.regular_files(str(root), visit, limits=limits)
    assert result.complete
    assert len(seen) == 1
    assert seen[0] - before <= 2 * 8 + 2  # each held directory: its fd and its listing
    assert _open_fds() == before  # nothing leaks
    assert treewalk.remove_tree(str(root)).error_count == 0  # pytest's cleanup would recurse


def test_fifo_is_never_opened(tmp_path: Path) -> None:
    root = tmp_path / "t"
    (root / "sub").mkdir(parents=True)
    os.mkfifo(root / "sub" / "fifo")
    os.mkfifo(root / "fifo")
    visited: list[str] = []
    result = treewalk.disk_usage(str(root))  # would block forever on open(fifo)
    assert result.complete
    assert result.bytes == _du(root)
    treewalk.regular_files(str(root), lambda fd, name, d: visited.append(name))
    assert visited == []
    assert treewalk.remove_tree(str(root)).error_count == 0
    assert not root.exists()


def test_symlink_loops_and_links_out_are_never_followed(tmp_path: Path, outside: Path) -> None:
    root = tmp_path / "t"
    (root / "a").mkdir(parents=True)
    (root / "a" / "self").symlink_to(".")
    (root / "a" / "up").symlink_to("../..")
    (root / "loop1").symlink_to("loop2")
    (root / "loop2").symlink_to("loop1")
    (root / "out").symlink_to(outside)
    (root / "outfile").symlink_to(outside / "precious")
    result = treewalk.disk_usage(str(root))
    assert result.complete and result.errors == []
    assert result.bytes < 1 << 20  # the precious MiB is not counted
    assert result.bytes == _du(root)
    assert treewalk.remove_tree(str(root)).error_count == 0
    assert not root.exists()
    assert (outside / "precious").stat().st_size == 1 << 20


def test_a_symlink_as_the_root_is_followed_by_walks_but_unlinked_by_removal(
    tmp_path: Path, outside: Path
) -> None:
    link = tmp_path / "link"
    link.symlink_to(outside)
    assert treewalk.disk_usage(str(link)).bytes == _du(outside)  # the administrator's path
    treewalk.remove_tree(str(link))
    assert not link.is_symlink()
    assert (outside / "precious").exists()


def test_hard_links_count_once(tmp_path: Path) -> None:
    root = tmp_path / "t"
    (root / "a").mkdir(parents=True)
    (root / "one").write_bytes(b"h" * (256 * 1024))
    alone = treewalk.disk_usage(str(root)).bytes
    for name in ("two", "a/three", "a/four"):
        os.link(root / "one", root / name)
    assert treewalk.disk_usage(str(root)).bytes == alone == _du(root)


@pytest.fixture
def swap_during_listing(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """Replace a directory with a symlink right after the listing said "directory",
    before the walker opens it: the race a tenant would try to win."""
    plan: dict[str, Any] = {}
    real_scandir = os.scandir

    def scandir(fd: Any) -> Any:
        listing = real_scandir(fd)

        class Swapping:
            def __iter__(self) -> Iterator[os.DirEntry[str]]:
                for item in listing:
                    if item.name == plan.get("name") and item.is_dir(follow_symlinks=False):
                        os.rename(item.name, plan["aside"], src_dir_fd=fd)
                        os.symlink(plan["target"], item.name, dir_fd=fd)
                    yield item

            def close(self) -> None:
                listing.close()

        return Swapping()

    monkeypatch.setattr(os, "scandir", scandir)
    yield plan


def test_a_directory_swapped_for_a_symlink_mid_walk_is_not_followed(
    tmp_path: Path, outside: Path, swap_during_listing: dict[str, Any]
) -> None:
    root = tmp_path / "t"
    (root / "victim").mkdir(parents=True)
    (root / "victim" / "mine").write_bytes(b"m" * 4096)
    swap_during_listing.update(name="victim", aside=str(tmp_path / "aside"), target=str(outside))
    result = treewalk.disk_usage(str(root))
    assert result.complete
    assert result.bytes < 1 << 20
    removed = treewalk.remove_tree(str(tmp_path / "t"))
    assert removed.error_count == 0
    assert not root.exists()
    assert (outside / "precious").stat().st_size == 1 << 20  # the symlink went, not this


def test_an_ancestor_replaced_while_its_descriptor_was_given_up(
    tmp_path: Path, outside: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Deep below, with few descriptors held: an ancestor is swapped for a symlink to
    elsewhere. Reopening it must notice (same inode or nothing), never walk elsewhere."""
    root = tmp_path / "t"
    (root / "a" / "b" / "c" / "d" / "e").mkdir(parents=True)
    (root / "a" / "b" / "c" / "d" / "e" / "f").write_text("deep")
    (root / "a" / "later").write_text("after the deep part")
    real_scandir = os.scandir
    swapped: list[bool] = []

    def scandir(fd: Any) -> Any:
        if (
            os.fstat(fd).st_ino == (root / "a" / "b" / "c" / "d" / "e").stat().st_ino
            and not swapped
        ):
            os.rename(root / "a", tmp_path / "a-aside")
            (root / "a").symlink_to(outside)
            swapped.append(True)
        return real_scandir(fd)

    monkeypatch.setattr(os, "scandir", scandir)
    limits = treewalk.Limits(open_directories=2)
    visited: list[str] = []
    result = treewalk.regular_files(str(root), lambda fd, name, d: visited.append(d.path(name)),
                                    limits=limits)  # fmt: skip
    assert swapped
    assert "precious" not in " ".join(visited)
    assert any("a/b/c: replaced during the walk" in e for e in result.errors), result.errors


def test_budgets_stop_a_walk_and_say_so(tmp_path: Path) -> None:
    root = tmp_path / "t"
    root.mkdir()
    for index in range(3000):
        (root / f"f{index}").touch()
    (root / "sub").mkdir()
    by_entries = treewalk.disk_usage(str(root), treewalk.Limits(entries=100))
    assert not by_entries.complete
    assert "entry budget of 100" in by_entries.stopped
    assert "stopped early" in by_entries.summary()
    by_time = treewalk.disk_usage(str(root), treewalk.Limits(seconds=0.0))
    assert not by_time.complete
    assert "time budget" in by_time.stopped
    whole = treewalk.disk_usage(str(root))
    assert whole.complete and whole.entries == 3001


def test_a_wide_directory_in_little_memory(tmp_path: Path) -> None:
    root = tmp_path / "t"
    root.mkdir()
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for index in range(20_000):
            os.close(os.open(f"entry-with-a-longish-name-{index}", os.O_CREAT | os.O_WRONLY,
                             0o644, dir_fd=fd))  # fmt: skip
        for index in range(500):
            os.mkdir(f"d{index}", dir_fd=fd)
    finally:
        os.close(fd)
    tracemalloc.start()
    try:
        result = treewalk.disk_usage(str(root))
        walked = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        removed = treewalk.remove_tree(str(root))
        removing = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert result.complete and result.entries == 20_500
    assert removed.error_count == 0 and not root.exists()
    # Names are not kept, the listing streams: 20,500 names would take ~1.5 MiB.
    assert walked < 512 << 10, walked
    assert removing < 512 << 10, removing


def test_removal_reports_what_it_cannot_delete(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root may delete anything: the permission case needs an ordinary user")
    root = tmp_path / "t"
    (root / "locked").mkdir(parents=True)
    (root / "locked" / "kept").touch()
    (root / "free").touch()
    (root / "locked").chmod(0o500)
    try:
        result = treewalk.remove_tree(str(root))
    finally:
        (root / "locked").chmod(0o700)
    assert result.error_count >= 1
    assert "locked/kept" in result.errors[0]
    assert not (root / "free").exists()


def test_removal_leaves_a_mount_point_and_says_so(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting needs root")
    root = tmp_path / "t"
    (root / "mnt").mkdir(parents=True)
    (root / "other").touch()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1M", "tmpfs", str(root / "mnt")],
                   check=True)  # fmt: skip
    try:
        (root / "mnt" / "inside").touch()
        usage = treewalk.disk_usage(str(root))
        assert usage.complete and usage.errors == []  # another filesystem: not counted
        result = treewalk.remove_tree(str(root))
        assert result.error_count == 1
        assert "mnt: another filesystem" in result.errors[0]
        assert (root / "mnt" / "inside").exists()
        assert not (root / "other").exists()
    finally:
        subprocess.run(["umount", str(root / "mnt")], check=True)
