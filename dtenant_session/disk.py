"""A tenant's disk of its own (limits.disk_max): a hard cap on everything its daemon
stores, whatever the host's filesystem.

The data-root is an ext4 filesystem in a sparse image file, disk.img in the tenant's
state directory (hidden from its daemon: docker@.service), loop-mounted at the data-root
by a mount unit that the daemon's unit wants (render.disk_mount; desired.py lists both).
A sparse file works on ext4, xfs and btrfs alike and needs no quota support of the host:
ext4 project quotas need the `project` feature and the `prjquota` mount option, which
Debian's root filesystems do not have. The image takes on the host only what the tenant
stores; at its size the tenant gets "no space left on device", alone.

Setting a cap carries the tenant's data over (its daemon stopped; copied into the new
image, which replaces the bare data-root only when the copy is complete); raising it
grows the filesystem in place, even mounted. Lowering or removing a cap keeps the disk
as it is (provision.kept_disk): shrinking can lose nothing only with the daemon stopped
and the data fitting, which the administrator decides (README, "Disk limits").
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from dtenant_session import command, mountinfo, prestart, systemd, treewalk
from dtenant_session.errors import DtenantError
from dtenant_session.registry import Allocation
from dtenant_session.tenant import Tenant

CARRIED = "docker.uncapped"  # the bare data-root, while its copy replaces it


def ensure(allocation: Allocation, size: int, stop_daemon: Callable[[], None]) -> list[str]:
    """The tenant's data-root on its own disk of `size` bytes, mounted; what was done.
    The mount unit's file is written (and systemd reloaded) before this."""
    t = allocation.tenant
    steps = []
    if not t.disk_image.exists():
        stop_daemon()
        steps.append(_make(t, size))
    elif t.disk_image.stat().st_size < size:  # never shrunk: provision.kept_disk
        steps.append(_grow(t, size))
    _mount(t)
    carried = t.state_dir / CARRIED
    if carried.exists():  # the copy is on the disk: the bare data-root goes
        result = treewalk.remove_tree(str(carried))
        if result.error_count:
            raise DtenantError(f"{t.user}: cannot delete {carried}: {result.summary()}")
    return steps


def _mount(t: Tenant) -> None:
    async def start(bus: systemd.Bus) -> None:
        await bus.start(t.disk_unit)

    if prestart.mounted_image(str(t.data_root), mountinfo.read()) != str(t.disk_image):
        systemd.run(start, timeout=120)
    # The filesystem's own root: the tenant's directory, as desired.py has it.
    os.chown(t.data_root, 0, t.id_base, follow_symlinks=False)
    os.chmod(t.data_root, 0o710, follow_symlinks=False)  # noqa: S103 - its group: container root


def _make(t: Tenant, size: int) -> str:
    """A new image of `size` bytes holding everything of the bare data-root; the bare
    data-root moves aside only once the image is complete (an interruption leaves it)."""
    new = t.disk_image.with_name(t.disk_image.name + ".new")
    new.unlink(missing_ok=True)
    fd = os.open(new, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        os.ftruncate(fd, size)  # sparse: the host's disk is taken as the tenant stores
    finally:
        os.close(fd)
    command.run([command.which("mkfs.ext4"), "-q", "-F", "-m", "0", "-L", "dtenant",
                 "-E", f"root_owner=0:{t.id_base},nodiscard", str(new)], timeout=300)  # fmt: skip
    had = _has_data(t.data_root)
    if had:
        _copy_into(t, new)
    os.rename(new, t.disk_image)
    if had:
        os.rename(t.data_root, t.state_dir / CARRIED)
        t.data_root.mkdir(mode=0o710)
    return f"made its disk {t.disk_image} ({size >> 20} MiB)" + (
        ", its data carried over" if had else "")  # fmt: skip


def _has_data(directory: Path) -> bool:
    try:
        return any(os.scandir(directory))
    except FileNotFoundError:
        return False


def _copy_into(t: Tenant, image: Path) -> None:
    """Everything of the data-root (owners, modes, xattrs such as overlayfs' own, hard
    links, sparse files) into the image, mounted aside for the copy."""
    aside = t.state_dir / "disk.new"
    aside.mkdir(mode=0o700, exist_ok=True)
    mount, umount = command.which("mount"), command.which("umount")
    command.run([mount, "-o", "loop,nodev,nosuid", str(image), str(aside)], timeout=60)
    try:
        copied = command.run([command.which("cp"), "-a", "--sparse=always",
                              f"{t.data_root}/.", f"{aside}/"], check=False,
                             timeout=24 * 3600)  # fmt: skip
        command.run([command.which("sync"), "-f", str(aside)], check=False, timeout=600)
    finally:
        command.run([umount, str(aside)], timeout=120)
        aside.rmdir()
    if copied.returncode != 0:
        image.unlink(missing_ok=True)
        raise DtenantError(
            f"{t.user}: its data could not be carried over to its disk {t.disk_image} "
            f"({copied.stderr.strip().splitlines()[-1] if copied.stderr.strip() else 'cp failed'}"
            f"): nothing changed, its data-root {t.data_root} is as it was")  # fmt: skip


def _grow(t: Tenant, size: int) -> str:
    """A larger cap: the image and its filesystem grown in place, mounted or not."""
    with open(t.disk_image, "r+b") as stream:
        os.ftruncate(stream.fileno(), size)
    mounts = mountinfo.read()
    loop = next((m.source for m in reversed(mounts) if m.mount_point == str(t.data_root)
                 and prestart.mounted_image(str(t.data_root), mounts) == str(t.disk_image)),
                None)  # fmt: skip
    if loop is not None:
        command.run([command.which("losetup"), "-c", loop], timeout=60)
        command.run([command.which("resize2fs"), loop], timeout=600)
    else:
        command.run([command.which("e2fsck"), "-f", "-p", str(t.disk_image)], timeout=600)
        command.run([command.which("resize2fs"), str(t.disk_image)], timeout=600)
    return f"grew its disk {t.disk_image} to {size >> 20} MiB"
