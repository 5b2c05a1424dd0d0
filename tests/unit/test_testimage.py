from __future__ import annotations

import io
import tarfile

from tests import testimage

FAKE_BUSYBOX = b"\x7fELF fake busybox"


def _members(data: bytes) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return {m.name: m for m in tar.getmembers()}


def test_rootfs_has_busybox_and_the_applets_tests_use() -> None:
    members = _members(testimage.rootfs_tar(FAKE_BUSYBOX))
    assert members["bin/busybox"].size == len(FAKE_BUSYBOX)
    assert members["bin/busybox"].mode == 0o755
    for applet in ("sh", "httpd", "nc", "wget", "sleep", "id"):
        assert members[f"bin/{applet}"].linkname == "busybox"
    assert members["tmp"].mode == 0o1777
    assert all(m.uid == 0 and m.mtime == 0 for m in members.values())


def test_rootfs_is_reproducible() -> None:
    assert testimage.rootfs_tar(FAKE_BUSYBOX) == testimage.rootfs_tar(FAKE_BUSYBOX)


def test_import_reads_stdin_and_sets_a_command() -> None:
    argv = testimage.import_argv()
    assert argv[:2] == ["/usr/bin/docker", "import"]
    assert argv[-2:] == ["-", testimage.IMAGE]
    assert 'CMD ["/bin/sh"]' in argv
