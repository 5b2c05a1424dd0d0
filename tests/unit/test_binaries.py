"""Which binaries a tenant daemon's processes run old copies of (issue 16)."""

from __future__ import annotations

from dtenant_session import binaries

NOW = {"/usr/sbin/dockerd": (1, 10), "/usr/bin/containerd": (1, 20)}


def test_the_current_files_are_not_outdated() -> None:
    running = [("/usr/sbin/dockerd", (1, 10)), ("/usr/bin/containerd", (1, 20))]
    assert binaries.stale(running, NOW) == []


def test_a_deleted_executable_is_outdated() -> None:
    """dpkg renames the new file over the old one: the old inode is unlinked."""
    assert binaries.stale([("/usr/sbin/dockerd (deleted)", (1, 9))], NOW) == ["dockerd"]


def test_another_file_at_the_path_is_outdated() -> None:
    """The old file kept a name elsewhere (a hard link): not deleted, still not current."""
    running = [("/usr/sbin/dockerd", (1, 10)), ("/usr/bin/containerd", (1, 21))]
    assert binaries.stale(running, NOW) == ["containerd"]


def test_unwatched_programs_and_missing_binaries_are_ignored() -> None:
    running = [("/usr/bin/runc (deleted)", (1, 5)), ("/usr/bin/containerd-shim-runc-v2", (1, 6))]
    assert binaries.stale(running, NOW) == []
