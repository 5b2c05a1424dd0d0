"""Boot a lab: the part that runs inside the lab's new namespaces, before systemd.

`python3 -m tests.lab.boot launch STATE` joins the lab's cgroups and execs
unshare(1), which forks `... boot STATE` as PID 1 of the new namespaces. That stage
builds the lab's root (an overlay of / whose changes live on the lab's disk, a tmpfs the
real machine holds, so that they outlive a reboot; real directories for Docker's data;
fresh /proc, /sys, /dev, /run, /tmp, cgroup mounts), pivot_roots into it and execs
systemd. Every boot, the first and each reboot (host.reboot), runs the same plan.

`boot_plan` is pure: it returns the list of steps; `apply` performs them.
"""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from dtenant_session import command, mountinfo
from tests.lab.paths import DATA_DIRS, LabPaths

# Device nodes copied (mknod) into the lab's own /dev, a tmpfs: the lab never touches
# the host's /dev, so its udev cannot change the real machine's devices.
DEVICE_NODES = ("null", "zero", "full", "random", "urandom", "tty", "net/tun", "fuse")

# Units that make no sense in a lab or would change the host kernel (modules and binfmt
# registrations are global); masked in the lab's overlay.
VISIBLE_PROC = "/run/.lab-proc"

MASKED_UNITS = (
    "console-getty.service",
    "systemd-modules-load.service",
    "systemd-binfmt.service",
    "proc-sys-fs-binfmt_misc.automount",
    "proc-sys-fs-binfmt_misc.mount",
    "systemd-sysctl.service",
)

ENABLED_UNITS = (
    ("multi-user.target.wants", "systemd-networkd.service"),
    ("sockets.target.wants", "systemd-networkd.socket"),
)

# udev in the lab only coldplugs network links: triggering every host device would send
# uevents for the real machine's hardware.
UDEV_TRIGGER_DROPIN = """\
[Service]
ExecStart=
ExecStart=-udevadm trigger --type=all --action=add --subsystem-match=net
"""


@dataclass(frozen=True)
class MakeDirs:
    path: str
    mode: int = 0o755

    def apply(self) -> None:
        Path(self.path).mkdir(mode=self.mode, parents=True, exist_ok=True)


@dataclass(frozen=True)
class Mount:
    fstype: str
    source: str
    target: str
    options: str = ""

    def apply(self) -> None:
        argv = [command.which("mount"), "-t", self.fstype]
        if self.options:
            argv += ["-o", self.options]
        command.run([*argv, self.source, self.target])


@dataclass(frozen=True)
class Bind:
    source: str
    target: str
    recursive: bool = False
    readonly: bool = False

    def apply(self) -> None:
        mount = command.which("mount")
        flag = "--rbind" if self.recursive else "--bind"
        command.run([mount, flag, self.source, self.target])
        if self.readonly:
            command.run([mount, "-o", "remount,bind,ro", self.target])


@dataclass(frozen=True)
class Symlink:
    path: str
    points_to: str

    def apply(self) -> None:
        link = Path(self.path)
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(self.points_to)


@dataclass(frozen=True)
class WriteFile:
    path: str
    content: str

    def apply(self) -> None:
        target = Path(self.path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(self.content)


@dataclass(frozen=True)
class CopyDevice:
    """A device node of the lab's own, like the host's: a bind would share the inode, and
    the lab's udev and tmpfiles would chmod the real machine's node."""

    source: str
    target: str

    def apply(self) -> None:
        st = os.stat(self.source)
        Path(self.target).parent.mkdir(parents=True, exist_ok=True)
        os.mknod(self.target, st.st_mode, st.st_rdev)
        os.chmod(self.target, stat.S_IMODE(st.st_mode))


@dataclass(frozen=True)
class Remove:
    """Delete a file from the lab's root (a whiteout in the overlay: the host keeps it)."""

    path: str

    def apply(self) -> None:
        Path(self.path).unlink(missing_ok=True)


Step = MakeDirs | Mount | Bind | Symlink | WriteFile | CopyDevice | Remove


def boot_plan(
    paths: LabPaths,
    cgroups: list[mountinfo.CgroupMount],
    hostname: str,
    binds: tuple[str, ...] = (),
) -> list[Step]:
    root = str(paths.root)
    scratch = str(paths.scratch)
    # The scratch tmpfs (the lab's disk) is mounted by host.up on the real machine: a
    # mount made here would go with the lab's mount namespace at a reboot.
    steps: list[Step] = [
        MakeDirs(f"{scratch}/upper"),
        MakeDirs(f"{scratch}/work"),
        Mount(
            "overlay",
            "overlay",
            root,
            f"lowerdir=/,upperdir={scratch}/upper,workdir={scratch}/work",
        ),
    ]
    for relative in DATA_DIRS:
        steps += [
            MakeDirs(str(paths.data_dir(relative)), 0o711),
            MakeDirs(f"{root}/{relative}", 0o711),
            Bind(str(paths.data_dir(relative)), f"{root}/{relative}"),
        ]
    steps += _proc_steps(root)
    steps += _sys_steps(root, cgroups)
    steps += _dev_steps(root)
    steps += [
        Mount("tmpfs", "tmpfs", f"{root}/tmp", "mode=1777,nosuid,nodev"),
        Mount("tmpfs", "tmpfs", f"{root}/run", "mode=755,nosuid,nodev"),
        # The kernel lets a user namespace (userns-remapped containers) mount a new proc
        # only if some proc in the mount namespace is fully visible; /proc is not, with
        # /proc/sys read-only on top. One plain proc, out of the way, satisfies it.
        MakeDirs(f"{root}{VISIBLE_PROC}", 0o700),
        Mount("proc", "proc", f"{root}{VISIBLE_PROC}", "nosuid,nodev,noexec"),
    ]
    # Live views of host directories: the overlay's lower layer must not change under it,
    # so a checkout edited while the lab runs is bound in rather than seen through it.
    # Last, so that the lab's own /tmp and /run do not hide a checkout below them.
    for directory in binds:
        steps += [MakeDirs(f"{root}{directory}"),
                  Bind(directory, f"{root}{directory}", readonly=True)]  # fmt: skip
    steps += _config_steps(root, hostname)
    return steps


def _proc_steps(root: str) -> list[Step]:
    # Only the network sysctls (per network namespace) stay writable: kernel.*, vm.*
    # and fs.* are global and belong to the real machine.
    steps: list[Step] = [
        Mount("proc", "proc", f"{root}/proc", "nosuid,nodev,noexec"),
        Bind(f"{root}/proc/sys/net", f"{root}/proc/sys/net"),
        Bind(f"{root}/proc/sys", f"{root}/proc/sys", recursive=True, readonly=True),
    ]
    if Path("/proc/sysrq-trigger").exists():
        trigger = f"{root}/proc/sysrq-trigger"
        steps.append(Bind(trigger, trigger, readonly=True))
    return steps


def _sys_steps(root: str, cgroups: list[mountinfo.CgroupMount]) -> list[Step]:
    # A fresh sysfs: mounted in the lab's network namespace it shows the lab's links.
    steps: list[Step] = [Mount("sysfs", "sysfs", f"{root}/sys", "nosuid,nodev,noexec")]
    if any(c.mount_point != "/sys/fs/cgroup" for c in cgroups):
        steps.append(Mount("tmpfs", "tmpfs", f"{root}/sys/fs/cgroup", "mode=755"))
    # Mounted in the lab's cgroup namespace, each hierarchy's root is the lab's cgroup.
    for cgroup in cgroups:
        target = f"{root}{cgroup.mount_point}"
        steps += [MakeDirs(target), Mount(cgroup.fstype, "cgroup", target, cgroup.mount_options)]
    return steps


def _dev_steps(root: str) -> list[Step]:
    dev = f"{root}/dev"
    steps: list[Step] = [Mount("tmpfs", "tmpfs", dev, "mode=755,nosuid")]
    for node in DEVICE_NODES:
        if Path(f"/dev/{node}").exists():
            steps.append(CopyDevice(f"/dev/{node}", f"{dev}/{node}"))
    steps += [
        MakeDirs(f"{dev}/pts"),
        Mount("devpts", "devpts", f"{dev}/pts", "newinstance,ptmxmode=0666,mode=620,gid=5"),
        Symlink(f"{dev}/ptmx", "pts/ptmx"),
        MakeDirs(f"{dev}/shm", 0o1777),
        Mount("tmpfs", "tmpfs", f"{dev}/shm", "mode=1777,nosuid,nodev"),
        Symlink(f"{dev}/fd", "/proc/self/fd"),
        Symlink(f"{dev}/stdin", "/proc/self/fd/0"),
        Symlink(f"{dev}/stdout", "/proc/self/fd/1"),
        Symlink(f"{dev}/stderr", "/proc/self/fd/2"),
    ]
    return steps


def _config_steps(root: str, hostname: str) -> list[Step]:
    units = f"{root}/etc/systemd/system"
    steps: list[Step] = [WriteFile(f"{root}/etc/hostname", hostname + "\n")]
    steps += [Symlink(f"{units}/{unit}", "/dev/null") for unit in MASKED_UNITS]
    steps += [
        Symlink(f"{units}/{wants}/{unit}", f"/lib/systemd/system/{unit}")
        for wants, unit in ENABLED_UNITS
    ]
    steps.append(WriteFile(f"{units}/systemd-udev-trigger.service.d/lab.conf", UDEV_TRIGGER_DROPIN))
    # A build machine's policy-rc.d forbids starting services (it has no init); the lab
    # has one, and packages installed in it must start theirs as on a real host.
    steps.append(Remove(f"{root}/usr/sbin/policy-rc.d"))
    return steps


def apply(steps: list[Step]) -> None:
    for step in steps:
        step.apply()


def _pivot_into(root: Path) -> None:
    old = root / ".oldroot"
    old.mkdir(exist_ok=True)
    os.chdir(root)
    # pivot_root, not chroot: runc needs a real root for user namespaces (userns-remap).
    command.run([command.which("pivot_root"), ".", ".oldroot"])
    os.chdir("/")
    command.run([command.which("umount"), "-l", "/.oldroot"])
    Path("/.oldroot").rmdir()


def join_cgroups(paths: LabPaths) -> None:
    for cgroup in mountinfo.cgroup_mounts(mountinfo.read()):
        procs = Path(cgroup.mount_point) / paths.cgroup_name / "cgroup.procs"
        procs.write_text(f"{os.getpid()}\n")


def launch(paths: LabPaths) -> None:
    """Join the lab's cgroups, then become unshare(1) forking the boot stage."""
    exec_unshared(paths, ["--pid", "--mount", "--net", "--uts", "--ipc", "--cgroup"],
                  "tests.lab.boot", "boot")  # fmt: skip


def exec_unshared(paths: LabPaths, namespaces: list[str], module: str, stage: str) -> None:
    """Join the lab's cgroups and become unshare(1) forking `module`'s `stage` in new
    `namespaces` (unshare's options)."""
    join_cgroups(paths)
    unshare = command.which("unshare")
    argv = [unshare, *namespaces, "--fork", sys.executable, "-B", "-m", module, stage,
            paths.name, str(paths.base)]  # fmt: skip
    os.execv(unshare, argv)


def boot(paths: LabPaths) -> None:
    """PID 1 of the lab's namespaces: build the root, pivot into it, exec systemd."""
    hostname = f"lab-{paths.name}"
    command.run([command.which("mount"), "--make-rprivate", "/"])
    cgroups = mountinfo.cgroup_mounts(mountinfo.read())
    apply(boot_plan(paths, cgroups, hostname, paths.bound()))
    command.run([command.which("hostname"), hostname])
    _pivot_into(paths.root)
    systemd = "/lib/systemd/systemd"
    os.execve(systemd, [systemd], {"container": "other", "PATH": ":".join(command.SEARCH_PATH)})


def run_stage(argv: list[str], stages: dict[str, Callable[[LabPaths], None]]) -> int:
    """`STAGE NAME BASE`: run the stage (each execs, returning only on failure)."""
    stage, name, base = argv
    if stage not in stages:
        print(f"lab: unknown stage {stage!r}", file=sys.stderr)
        return 2
    try:
        stages[stage](LabPaths(name, Path(base)))
    except (command.CommandError, OSError) as exc:
        print(f"lab {name}: {stage} failed: {exc}", file=sys.stderr)
        return 1
    return 1


def main(argv: list[str]) -> int:
    return run_stage(argv, {"launch": launch, "boot": boot})


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
