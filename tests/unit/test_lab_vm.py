"""The pure parts of VM labs (tests/lab/vm.py): module order, the initramfs, qemu's argv."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from tests.lab import vm
from tests.lab.paths import LabPaths

MODULES_DEP = """\
kernel/fs/9p/9p.ko: kernel/net/9p/9pnet.ko kernel/fs/fscache/fscache.ko kernel/fs/netfs/netfs.ko
kernel/net/9p/9pnet.ko:
kernel/fs/fscache/fscache.ko: kernel/fs/netfs/netfs.ko
kernel/fs/netfs/netfs.ko:
kernel/net/9p/9pnet_virtio.ko: kernel/net/9p/9pnet.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_ring.ko:
kernel/arch/x86/crypto/crc32c-intel.ko:
"""


def test_modules_load_after_what_they_need_and_once() -> None:
    order = vm.load_order(MODULES_DEP, ["9pnet_virtio", "9p"])
    assert order == [
        "kernel/drivers/virtio/virtio_ring.ko", "kernel/net/9p/9pnet.ko",
        "kernel/net/9p/9pnet_virtio.ko", "kernel/fs/netfs/netfs.ko",
        "kernel/fs/fscache/fscache.ko", "kernel/fs/9p/9p.ko",
    ]  # fmt: skip
    assert vm.load_order(MODULES_DEP, ["crc32c_intel"]) == [
        "kernel/arch/x86/crypto/crc32c-intel.ko"
    ]


def test_a_missing_module_is_named() -> None:
    with pytest.raises(KeyError, match="loop"):
        vm.load_order(MODULES_DEP, ["loop"])


def _parse_newc(data: bytes) -> list[tuple[str, int, bytes, tuple[int, int]]]:
    entries: list[tuple[str, int, bytes, tuple[int, int]]] = []
    offset = 0
    while True:
        fields = [int(data[offset + 6 + 8 * i : offset + 14 + 8 * i], 16) for i in range(13)]
        name_size, file_size = fields[11], fields[6]
        start = offset + 110
        name = data[start : start + name_size - 1].decode()
        body = start + name_size + (-(start + name_size) % 4)
        if name == "TRAILER!!!":
            return entries
        entries.append((name, fields[1], data[body : body + file_size], (fields[9], fields[10])))
        offset = body + file_size + (-(body + file_size) % 4)


def test_the_archive_is_newc_the_kernel_unpacks() -> None:
    entries = [
        vm.CpioEntry("bin", stat.S_IFDIR | 0o755),
        vm.CpioEntry("bin/busybox", stat.S_IFREG | 0o755, b"\x7fELF..."),
        vm.CpioEntry("dev/console", stat.S_IFCHR | 0o600, rdev=(5, 1)),
    ]
    archive = vm.newc(entries)
    assert archive.startswith(b"070701") and len(archive) % 4 == 0
    assert _parse_newc(archive) == [
        ("bin", stat.S_IFDIR | 0o755, b"", (0, 0)),
        ("bin/busybox", stat.S_IFREG | 0o755, b"\x7fELF...", (0, 0)),
        ("dev/console", stat.S_IFCHR | 0o600, b"", (5, 1)),
    ]


def test_seeded_files_come_after_their_directories_and_roots_home_stays_private() -> None:
    seeds = vm.seed_files("lab-x", "ssh-ed25519 AAAA lab", "# bashrc\n")
    entries = vm.initramfs_entries(b"busybox", "#!/bin/busybox sh\n", {"9p.ko": b"ko"}, seeds)
    names = [e.name for e in entries]
    for entry in entries:
        parent = str(Path(entry.name).parent)
        assert parent == "." or names.index(parent) < names.index(entry.name), entry.name
    modes = {e.name: e.mode for e in entries}
    assert modes["seed/root"] == stat.S_IFDIR | 0o700
    assert modes["seed/root/.ssh"] == stat.S_IFDIR | 0o700
    assert modes["seed/root/.ssh/authorized_keys"] == stat.S_IFREG | 0o600
    link = "seed/etc/systemd/system/multi-user.target.wants/systemd-networkd.service"
    assert stat.S_ISLNK(modes[link])


def test_init_mounts_the_root_overlay_and_quotes_binds() -> None:
    script = vm.init_script("6.1.0-1-amd64", ["/root/ci run/dtenant"], ["kernel/fs/9p/9p.ko"],
                            "xfs")  # fmt: skip
    assert "insmod /modules/9p.ko" in script
    assert "mount -t xfs /dev/vda /disk" in script
    assert "lowerdir=/lower,upperdir=/disk/upper" in script
    assert "'/newroot/root/ci run/dtenant'" in script  # a path with a space, one word
    for data in ("var_lib_docker", "var_lib_containerd", "var_lib_dtenant"):
        assert f"/disk/data/{data}" in script
    assert script.rstrip().endswith("exec switch_root /newroot /lib/systemd/systemd")


def test_qemu_shares_read_only_and_forwards_only_ssh() -> None:
    files = vm.VmPaths(LabPaths("x", Path("/var/lib/dtenant-lab")))
    kernel = vm.Kernel("6.1", Path("/k/boot/vmlinuz-6.1"), Path("/k/lib/modules/6.1"))
    argv = vm.qemu_argv(files, kernel, ["/a,b"])
    shares = [argv[i + 1] for i, a in enumerate(argv) if a == "-virtfs"]
    assert len(shares) == 3 and all("readonly=on" in s for s in shares)
    assert "path=/a,,b" in shares[2]  # qemu's escaped comma
    network = argv[argv.index("-netdev") + 1]
    assert "restrict=on" in network and network.count("hostfwd=") == 1
    assert "-no-reboot" in argv  # a guest's reboot ends qemu: host.reboot boots it again
