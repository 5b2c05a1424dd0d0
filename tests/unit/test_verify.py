from __future__ import annotations

import os
from pathlib import Path

import pytest

from dtenant_session import mountinfo, ownerstamp, paths, prestart

MOUNTS = mountinfo.parse(
    "23 1 254:0 / / rw - ext4 /dev/vda rw\n"
    "40 23 254:0 /srv/tenants/alice /var/lib/dtenant/tenants/bob/docker rw - ext4 /dev/vda rw\n"
    "41 23 0:50 / /var/lib/dtenant/tenants/carol rw - nfs4 server:/x rw\n"
)


def test_proc_locks_maps_device_and_inode_to_holders() -> None:
    text = (
        "1: FLOCK  ADVISORY  WRITE 4242 fe:00:1311 0 EOF\n"
        "2: POSIX  ADVISORY  WRITE 77 00:2d:9 0 EOF\n"
        "2: -> FLOCK  ADVISORY  WRITE 99 fe:00:1311 0 EOF\n"
    )
    assert prestart.proc_locks(text) == {(254, 0, 1311): [4242], (0, 45, 9): [77]}


def test_unit_of_reads_v1_and_v2_cgroup_files() -> None:
    hybrid = "9:name=systemd:/system.slice/system-docker.slice/docker@alice.service\n4:memory:/x\n"
    unified = "0::/user.slice/user-1000.slice/session-3.scope\n"
    assert prestart.unit_of(hybrid) == "docker@alice.service"
    assert prestart.unit_of(unified) == "session-3.scope"
    assert prestart.unit_of("0::/\n") == ""


def test_bbolt_files_are_recognised_by_their_magic(tmp_path: Path) -> None:
    bolt = tmp_path / "volumes" / "anything.db"
    bolt.parent.mkdir()
    bolt.write_bytes(bytes(16) + (0xED0CDAED).to_bytes(4, "little") + (2).to_bytes(4, "little")
                     + bytes(4072))  # fmt: skip
    (tmp_path / "other.json").write_text("{}" * 20)
    layer = tmp_path / "overlay2" / "abc" / "diff"
    layer.mkdir(parents=True)
    (layer / "user.db").write_bytes(bolt.read_bytes())  # container content: not the daemon's
    os.mkfifo(tmp_path / "volumes" / "fifo.db")  # never opened: it would block
    (tmp_path / "link.db").symlink_to(bolt)  # never followed
    found, incomplete = prestart.bbolt_files(str(tmp_path))
    assert [b.path for b in found] == [str(bolt)]
    assert incomplete == ""
    assert not found[0].locked


def test_filesystem_location_sees_through_bind_mounts() -> None:
    bob = prestart.filesystem_location("/var/lib/dtenant/tenants/bob/docker", MOUNTS)
    assert bob == ("254:0", "/srv/tenants/alice", "ext4")
    assert prestart.nested("/srv/tenants/alice", "/srv/tenants/alice/sub")
    assert not prestart.nested("/srv/tenants/alice", "/srv/tenants/alice2")


def test_network_filesystems_are_refused() -> None:
    findings = prestart.check_filesystem("carol", MOUNTS)
    assert findings
    assert "nfs4" in findings[0].problem


def test_owner_stamp_round_trip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(paths, "TENANTS_DIR", str(tmp_path))
    os.makedirs(ownerstamp.data_root("alice"))
    ownerstamp.claim("alice", 1000)
    assert prestart.check_owner("alice", 1000) == []
    other = prestart.check_owner("alice", 2000)
    assert other
    assert "belongs to tenant 'alice' (uid 1000)" in other[0].problem


def test_overlapping_data_roots_name_the_tenants_they_belong_to_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """alice's and bob's data-roots are one directory: refused for them, for `dtenant
    verify alice`; not for al, whose name is in "alice" (nor lib, in every data-root)."""
    monkeypatch.setattr(paths, "TENANTS_DIR", str(tmp_path))
    for user in ("al", "lib", "alice"):
        os.makedirs(ownerstamp.data_root(user))
    (tmp_path / "bob").mkdir()
    (tmp_path / "bob" / "docker").symlink_to(ownerstamp.data_root("alice"))
    mounts = mountinfo.parse("23 1 254:0 / / rw - ext4 /dev/vda rw\n")
    users = ["al", "lib", "alice", "bob"]
    assert len(prestart.check_distinct(users, mounts)) == 1
    for user in ("alice", "bob"):
        (finding,) = prestart.check_distinct(users, mounts, involving=user)
        assert "/alice/docker is the same directory as the data-root of bob" in finding.problem
    for user in ("al", "lib"):
        assert prestart.check_distinct(users, mounts, involving=user) == [], user


def test_data_roots_are_located_as_filesystem_location_locates_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fast path (the tenants' directory resolved once) agrees with resolving each
    data-root by itself, whatever symlinks and mounts lie in a tenant's part of the path."""
    tenants = tmp_path / "tenants"
    monkeypatch.setattr(paths, "TENANTS_DIR", str(tmp_path / "via"))
    (tmp_path / "via").symlink_to(tenants)  # the tenants' directory itself behind a symlink
    for user in ("plain", "linked", "capped", "nested"):
        os.makedirs(tenants / user / "docker")
    os.makedirs(tmp_path / "elsewhere" / "docker")
    (tenants / "moved").symlink_to(tmp_path / "elsewhere")  # a tenant's directory moved
    (tenants / "linked" / "docker").rename(tenants / "linked" / "real")
    (tenants / "linked" / "docker").symlink_to(tenants / "linked" / "real")
    (tenants / "file").mkdir()
    (tenants / "file" / "docker").write_text("")
    (tenants / "dangling").mkdir()
    (tenants / "dangling" / "docker").symlink_to(tmp_path / "nowhere")
    mounts = mountinfo.parse(
        "23 1 254:0 / / rw - ext4 /dev/vda rw\n"
        f"40 23 7:3 / {tenants}/capped/docker rw - ext4 /dev/loop3 rw\n"
        f"41 23 254:0 {tenants}/plain/docker {tenants}/nested/docker rw - ext4 /dev/vda rw\n"
    )
    locate = prestart.Locator(mounts)
    users = ["plain", "linked", "capped", "nested", "moved", "file", "dangling", "missing"]
    for user in users:
        root = ownerstamp.data_root(user)
        expected = prestart.filesystem_location(root, mounts) if os.path.isdir(root) else None
        assert locate(user) == expected, user
    (finding,) = prestart.check_distinct(users, mounts, involving="nested")
    assert "data-root of nested" in finding.problem and finding.tenant == "plain"
