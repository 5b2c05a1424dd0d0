"""Labs that are virtual machines: a kernel of their own, hence loop devices of their own.

A container lab shares the real machine's kernel, so it may not attach loop devices (they
are the real machine's). A VM lab is the same host as seen by its tests, with Debian's
own kernel under it: qemu (KVM where /dev/kvm works, else software emulation) boots
Debian 12's `linux-image-amd64`, fetched from the package registry into the lab's state
directory, with a small initramfs of our own. Its root is, as in a container lab, an
overlay of the real machine's root filesystem (shared read-only over 9p) whose changes
live on the lab's disk, a sparse image in the state directory; Docker's data directories
are real directories on that disk. The kernel's modules are shared read-only as well.

qemu runs in mount and network namespaces of its own: it shares only the root filesystem
(no /proc, /sys, /dev or other labs' mounts of the real machine), and the guest's sshd is
forwarded to a port on the loopback of that network namespace, where `run` logs in as
root with a key of the lab's. Nothing outside the state directory and the lab's cgroups
changes on the real machine.

`python3 -m tests.lab.vm launch NAME BASE` joins the lab's cgroups and execs unshare(1),
which forks `... qemu NAME BASE`: that stage makes the mount view and execs qemu.
"""

from __future__ import annotations

import os
import re
import shlex
import stat
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from dtenant_session import command
from tests.lab import boot
from tests.lab.paths import DATA_DIRS, LabPaths

KERNEL_PACKAGE = "linux-image-amd64"  # Debian's metapackage: its dependency is the kernel
# What the initramfs needs to reach the root: the rest loads from the shared modules.
ROOT_MODULES = ("virtio_pci", "virtio_blk", "9pnet_virtio", "9p", "overlay",
                "crc32c_generic", "ext4", "xfs")  # fmt: skip
DISK_FILESYSTEMS = {  # the lab disk's filesystem: what the tenants' data lives on
    "ext4": ("mkfs.ext4", "-q", "-F", "-L", "lab", "-E", "nodiscard"),
    "xfs": ("mkfs.xfs", "-q", "-f", "-L", "lab", "-K"),
}
SSH_PORT = 2222  # on the loopback of qemu's own network namespace
MEMORY = "4G"
DISK_SIZE = 64 << 30  # sparse: the real machine's disk holds what the lab writes
GUEST_ADDRESS = "10.0.2.15/24"  # qemu's user-mode network

NETWORK_UNIT = f"""\
# The VM lab's uplink: qemu's user-mode network, reached by the real machine through the
# forwarded SSH port only (no gateway: the lab has no way out).
[Match]
Driver=virtio_net

[Network]
Address={GUEST_ADDRESS}
"""


@dataclass(frozen=True)
class VmPaths:
    """A VM lab's files, in its state directory."""

    lab: LabPaths

    @property
    def kernel_tree(self) -> Path:
        return self.lab.state / "kernel"

    @property
    def initramfs(self) -> Path:
        return self.lab.state / "initramfs.cpio"

    @property
    def disk(self) -> Path:
        return self.lab.state / "disk.img"

    @property
    def view(self) -> Path:
        """Where qemu's mount namespace shows the real machine's root filesystem."""
        return self.lab.state / "view"

    @property
    def key(self) -> Path:
        return self.lab.state / "root-key"

    @property
    def control(self) -> Path:
        return self.lab.state / "ssh-control"

    @property
    def console(self) -> Path:
        return self.lab.boot_log


@dataclass(frozen=True)
class Kernel:
    release: str
    image: Path
    modules: Path  # lib/modules/RELEASE


# --- pure parts --------------------------------------------------------------------


def load_order(modules_dep: str, wanted: Iterable[str]) -> list[str]:
    """Module files (relative to lib/modules/RELEASE) to insmod, dependencies first, for
    the modules named `wanted`; modules.dep lists a module's dependencies, the ones it
    needs last."""
    depends: dict[str, list[str]] = {}
    for line in modules_dep.splitlines():
        module, _, rest = line.partition(":")
        depends[module] = rest.split()
    by_name = {_module_name(path): path for path in depends}
    order: list[str] = []

    def visit(path: str) -> None:
        if path in order:
            return
        for dependency in reversed(depends[path]):
            visit(dependency)
        order.append(path)

    for name in wanted:
        if name not in by_name:
            raise KeyError(f"kernel module {name} is not in modules.dep")
        visit(by_name[name])
    return order


def _module_name(path: str) -> str:
    return re.sub(r"\.ko(\.[a-z]+)?$", "", Path(path).name).replace("-", "_")


@dataclass(frozen=True)
class CpioEntry:
    name: str  # without a leading /
    mode: int  # with the file type bits
    data: bytes = b""
    rdev: tuple[int, int] = (0, 0)


def newc(entries: Sequence[CpioEntry]) -> bytes:
    """An uncompressed cpio archive in the "newc" format the kernel unpacks."""
    out = bytearray()
    for number, entry in enumerate([*entries, CpioEntry("TRAILER!!!", 0)], start=1):
        name = entry.name.encode() + b"\0"
        fields = (number, entry.mode, 0, 0, 1, 0, len(entry.data), 0, 0, *entry.rdev,
                  len(name), 0)  # fmt: skip
        out += b"070701" + b"".join(b"%08X" % field for field in fields) + name
        out += b"\0" * (-len(out) % 4) + entry.data
        out += b"\0" * (-len(out) % 4)
    return bytes(out)


def share_tag(index: int) -> str:
    return f"bind{index}"


def init_script(release: str, binds: Sequence[str], modules: Sequence[str], disk_fs: str) -> str:
    """/init of the initramfs: the root overlay, Docker's data directories, the modules
    and the lab's binds, then systemd."""
    lines = [
        "#!/bin/busybox sh",
        "/bin/busybox --install -s /bin",
        "mount -t proc proc /proc && mount -t sysfs sysfs /sys && mount -t devtmpfs dev /dev",
        'fail() { echo "lab init: $*" >&2; sleep 1; poweroff -f; }',
        *(f"insmod /modules/{Path(m).name} || fail insmod {Path(m).name}" for m in modules),
        "p9='trans=virtio,version=9p2000.L,msize=512000'",
        "mount -t 9p -o ro,cache=loose,$p9 hostroot /lower || fail the root share",
        f"mount -t {disk_fs} /dev/vda /disk || fail the lab disk",
        "mkdir -p /disk/upper /disk/work",
        "mount -t overlay overlay -o lowerdir=/lower,upperdir=/disk/upper,workdir=/disk/work"
        " /newroot || fail the root overlay",
        "mkdir -p /newroot/usr/lib/modules && mount -t 9p -o ro,cache=loose,$p9 modules"
        " /newroot/usr/lib/modules || fail the modules share",
    ]
    for relative in DATA_DIRS:
        data = f"/disk/data/{relative.replace('/', '_')}"
        lines.append(f"mkdir -p -m 711 {data} /newroot/{relative}"
                     f" && mount --bind {data} /newroot/{relative}")  # fmt: skip
    lines += ["mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /newroot/tmp"]
    for index, directory in enumerate(binds):
        target = shlex.quote(f"/newroot{directory}")
        # cache=none: the checkout changes while the lab runs, and the lab sees it.
        lines.append(f"mkdir -p {target} && mount -t 9p -o ro,$p9 {share_tag(index)} {target}")
    lines += [
        "cp -a /seed/. /newroot/",
        "umount /proc /sys && mount --move /dev /newroot/dev",
        f"echo 'lab init: kernel {release}, starting systemd'",
        "exec switch_root /newroot /lib/systemd/systemd",
    ]
    return "\n".join(lines) + "\n"


def seed_files(hostname: str, public_key: str, bashrc: str) -> dict[str, tuple[int, str]]:
    """Files written over the root at every boot (path: (mode, content)), as a container
    lab's boot plan writes them."""
    return {
        "etc/hostname": (0o644, hostname + "\n"),
        "etc/systemd/network/10-lab-uplink.network": (0o644, NETWORK_UNIT),
        "root/.ssh/authorized_keys": (0o600, public_key),
        # sshd runs commands through root's shell, which reads ~/.bashrc: the real
        # machine's (a developer's, say) costs seconds under emulation; a fresh host's.
        "root/.bashrc": (0o644, bashrc),
        # A build machine's policy-rc.d forbids starting services; a lab has an init.
        "usr/sbin/policy-rc.d": (0o755, "#!/bin/sh\nexit 0\n"),
    }


def initramfs_entries(busybox: bytes, init: str, modules: dict[str, bytes],
                      seeds: dict[str, tuple[int, str]]) -> list[CpioEntry]:  # fmt: skip
    directories = ["bin", "dev", "proc", "sys", "lower", "disk", "newroot", "modules", "seed"]
    entries = [CpioEntry(d, stat.S_IFDIR | 0o755) for d in directories]
    entries += [
        CpioEntry("dev/console", stat.S_IFCHR | 0o600, rdev=(5, 1)),
        CpioEntry("bin/busybox", stat.S_IFREG | 0o755, busybox),
        CpioEntry("init", stat.S_IFREG | 0o755, init.encode()),
    ]
    entries += [CpioEntry(f"modules/{name}", stat.S_IFREG | 0o644, data)
                for name, data in modules.items()]  # fmt: skip
    files = {f"seed/{path}": CpioEntry(f"seed/{path}", stat.S_IFREG | mode, content.encode())
             for path, (mode, content) in seeds.items()}  # fmt: skip
    for wants, unit in boot.ENABLED_UNITS:  # networkd: the uplink's address, for SSH
        link = f"seed/etc/systemd/system/{wants}/{unit}"
        files[link] = CpioEntry(link, stat.S_IFLNK | 0o777, f"/lib/systemd/system/{unit}".encode())
    made: set[str] = {"seed"}
    for name in sorted(files):
        parents = Path(name).parents
        for directory in [str(p) for p in reversed(parents) if str(p) not in {".", *made}]:
            made.add(directory)
            # cp -a gives the root's directories these modes: /root and ~/.ssh stay private.
            private = directory in {"seed/root", "seed/root/.ssh"}
            entries.append(CpioEntry(directory, stat.S_IFDIR | (0o700 if private else 0o755)))
        entries.append(files[name])
    return entries


def _virtfs(path: str, tag: str) -> str:
    escaped = path.replace(",", ",,")  # qemu's option syntax
    return f"local,path={escaped},mount_tag={tag},security_model=none,readonly=on,multidevs=remap"


def qemu_argv(vm: VmPaths, kernel: Kernel, binds: Sequence[str]) -> list[str]:
    argv = [
        "qemu-system-x86_64", "-name", f"dtenant-lab-{vm.lab.name}",
        "-accel", "tcg,thread=multi", "-cpu", "max", "-smp", str(os.cpu_count() or 2),
        "-m", MEMORY, "-nographic", "-no-reboot", "-nodefaults",
        "-serial", f"file:{vm.console}", "-monitor", "none",
        "-kernel", str(kernel.image), "-initrd", str(vm.initramfs),
        "-append", "console=ttyS0 panic=-1 rw",
        "-drive", f"file={vm.disk},format=raw,if=virtio,cache=unsafe",
        "-virtfs", _virtfs(str(vm.view), "hostroot"),
        "-virtfs", _virtfs(str(kernel.modules.parent), "modules"),
        "-netdev", f"user,id=uplink,restrict=on,hostfwd=tcp:127.0.0.1:{SSH_PORT}-:22",
        "-device", "virtio-net-pci,netdev=uplink",
        "-device", "virtio-rng-pci",
    ]  # fmt: skip
    for index, directory in enumerate(binds):
        argv += ["-virtfs", _virtfs(directory, share_tag(index))]
    return argv


# --- effects -----------------------------------------------------------------------


def fetch_kernel(vm: VmPaths) -> Kernel:
    """Debian's current kernel package, unpacked in the lab's state directory."""
    depends = command.run([command.which("apt-cache"), "depends", "--no-recommends",
                           "--no-suggests", KERNEL_PACKAGE]).stdout  # fmt: skip
    found = re.search(r"Depends: (linux-image-\S+)", depends)
    if not found:
        raise command.CommandError(["apt-cache", "depends", KERNEL_PACKAGE], "names no kernel")
    tree = vm.kernel_tree
    tree.mkdir()
    command.run([command.which("apt-get"), "download", "-q", "-o", "APT::Sandbox::User=root",
                 found.group(1)], cwd=str(tree), timeout=600)  # fmt: skip
    (deb,) = tree.glob("*.deb")
    command.run([command.which("dpkg-deb"), "-x", str(deb), str(tree)], timeout=300)
    deb.unlink()
    (modules,) = (tree / "lib" / "modules").iterdir()
    command.run([command.which("depmod"), "-b", str(tree), modules.name], timeout=120)
    return Kernel(modules.name, tree / "boot" / f"vmlinuz-{modules.name}", modules)


def prepare(vm: VmPaths, hostname: str, binds: Sequence[str], disk_fs: str = "ext4") -> None:
    """Kernel, initramfs, disk (`disk_fs`: ext4 or xfs) and key of a new VM lab."""
    mkfs, *options = DISK_FILESYSTEMS[disk_fs]
    kernel = fetch_kernel(vm)
    command.run([command.which("ssh-keygen"), "-q", "-t", "ed25519", "-N", "", "-C",
                 f"lab {vm.lab.name}", "-f", str(vm.key)])  # fmt: skip
    write_initramfs(vm, kernel, hostname, binds, disk_fs)
    fd = os.open(vm.disk, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.ftruncate(fd, DISK_SIZE)
    finally:
        os.close(fd)
    command.run([command.which(mkfs), *options, str(vm.disk)], timeout=300)
    vm.view.mkdir()


def write_initramfs(vm: VmPaths, kernel: Kernel, hostname: str, binds: Sequence[str],
                    disk_fs: str) -> None:  # fmt: skip
    order = load_order((kernel.modules / "modules.dep").read_text(), ROOT_MODULES)
    modules = {Path(m).name: (kernel.modules / m).read_bytes() for m in order}
    init = init_script(kernel.release, binds, order, disk_fs)
    seeds = seed_files(hostname, vm.key.with_suffix(".pub").read_text(),
                       Path("/etc/skel/.bashrc").read_text())  # fmt: skip
    busybox = Path("/bin/busybox").read_bytes()
    vm.initramfs.write_bytes(newc(initramfs_entries(busybox, init, modules, seeds)))


def kernel_of(vm: VmPaths) -> Kernel:
    (modules,) = (vm.kernel_tree / "lib" / "modules").iterdir()
    return Kernel(modules.name, vm.kernel_tree / "boot" / f"vmlinuz-{modules.name}", modules)


def launch(paths: LabPaths) -> None:
    """Join the lab's cgroups, then become unshare(1) forking the qemu stage."""
    boot.exec_unshared(paths, ["--mount", "--net"], "tests.lab.vm", "qemu")


def run_qemu(paths: LabPaths) -> None:
    """In qemu's own namespaces: the real machine's root filesystem alone at the view
    (a non-recursive bind: none of its other mounts), loopback up, then qemu."""
    vm = VmPaths(paths)
    mount = command.which("mount")
    command.run([mount, "--make-rprivate", "/"])
    command.run([mount, "--bind", "/", str(vm.view)])
    command.run([mount, "-o", "remount,bind,ro", str(vm.view)])
    command.run([command.which("ip"), "link", "set", "lo", "up"])
    argv = qemu_argv(vm, kernel_of(vm), paths.bound())
    program = command.which(argv[0])
    os.execv(program, [program, *argv[1:]])


if __name__ == "__main__":
    sys.exit(boot.run_stage(sys.argv[1:], {"launch": launch, "qemu": run_qemu}))
