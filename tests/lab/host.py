"""Labs: throwaway systemd hosts on this machine, run from the real machine's side.

A lab is PID 1 systemd in its own pid/mount/net/uts/ipc/cgroup namespaces, on an overlay
of / whose changes live on a tmpfs the real machine holds (the lab's disk: it outlives a
`reboot`, as a host's disk does). Everything it owns on the real machine is its state
directory, that tmpfs and one cgroup per hierarchy; `down` kills every process in its
namespaces, removes those cgroups, unmounts the tmpfs, removes the state directory, and
refuses to delete anything still mounted.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from dtenant_session import command, mountinfo, treewalk
from dtenant_session.errors import DtenantError
from tests.lab import boot, vm
from tests.lab.paths import LAB_ROOT, LabPaths, check_name

BOOT_TIMEOUT = 120.0
SHUTDOWN_TIMEOUT = 120.0  # a clean shutdown: every unit's stop, as on a host
# Every namespace a lab unshares: `down` kills whatever is in any of them.
NAMESPACES = ("mnt", "pid", "net", "uts", "ipc", "cgroup")
KEY_DIR = "/root/.ssh/dtenant-lab"  # inside the lab
LAB_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class LabError(DtenantError):
    pass


@dataclass(frozen=True)
class LabRecord:
    name: str
    launcher_pid: int
    init_pid: int
    namespaces: dict[str, str]
    started_at: float
    boot_seconds: float = 0.0
    kind: str = "container"  # or "vm" (tests/lab/vm.py)


@dataclass(frozen=True)
class LabStatus:
    name: str
    state: str  # "running" or "dead"
    init_pid: int | None
    boot_seconds: float | None


def _namespace_id(pid: int, kind: str) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/{kind}")
    except OSError:
        return None


def _pids() -> Iterator[int]:
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            yield int(entry)


def _read_record(paths: LabPaths) -> LabRecord | None:
    try:
        return LabRecord(**json.loads(paths.record.read_text()))
    except (OSError, ValueError, TypeError):
        return None


def _is_alive(record: LabRecord) -> bool:
    return _namespace_id(record.init_pid, "mnt") == record.namespaces.get("mnt")


def _cgroup_dirs(paths: LabPaths) -> list[Path]:
    return [
        Path(c.mount_point) / paths.cgroup_name for c in mountinfo.cgroup_mounts(mountinfo.read())
    ]


def _create_cgroups(paths: LabPaths) -> None:
    for directory in _cgroup_dirs(paths):
        directory.mkdir(exist_ok=True)
        # A new v1 cpuset has no CPUs or memory nodes: nothing could join it.
        for knob in ("cpuset.cpus", "cpuset.mems"):
            mine = directory / knob
            if mine.exists() and not mine.read_text().strip():
                mine.write_text((directory.parent / knob).read_text())


class Lab:
    """A running lab, as seen from the real machine."""

    def __init__(self, paths: LabPaths, record: LabRecord) -> None:
        self.paths = paths
        self.record = record

    @property
    def name(self) -> str:
        return self.paths.name

    @property
    def pid(self) -> int:
        return self.record.init_pid

    def enter_argv(self, argv: Sequence[str]) -> list[str]:
        """argv run as root inside the lab, with a clean environment."""
        return [
            command.which("nsenter"), "-t", str(self.pid), "-a", "-r", "-w", "--",
            "/usr/bin/env", "-i", f"PATH={LAB_PATH}", "HOME=/root", "LANG=C.UTF-8",
            f"TERM={os.environ.get('TERM', 'dumb')}", *argv,
        ]  # fmt: skip

    def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float = 120.0,
        input: str | bytes | None = None,
        check: bool = True,
    ) -> command.Result:
        return command.run(self.enter_argv(argv), timeout=timeout, input=input, check=check)

    def sh(self, script: str, *, timeout: float = 120.0, check: bool = True) -> command.Result:
        return self.run(["/bin/sh", "-c", script], timeout=timeout, check=check)

    def configure_sshd(self, path: str, text: str | None) -> None:
        """Write (or with None, remove) an sshd_config drop-in and make sshd read it.

        A restart, not a reload: `systemctl reload` sends SIGHUP and returns while sshd
        re-executes itself, and a login in that window is refused; a restart waits for
        sshd's readiness (Type=notify) and keeps open sessions (KillMode=process)."""
        if text is None:
            self.run(["rm", "-f", path])
        else:
            self.run(["tee", path], input=text)
        self.run(["systemctl", "restart", "ssh"])

    def reboot(self, *, timeout: float = BOOT_TIMEOUT) -> float:
        """Reboot the lab as a host reboots (see `reboot`); this object follows the new
        boot. The seconds the boot took."""
        self.record = reboot(self.name, timeout=timeout, base=self.paths.base).record
        return self.record.boot_seconds

    def add_account(self, user: str) -> None:
        """A local account in the lab that root's key there can log in as over SSH."""
        self.run(["useradd", "--badname", "--create-home", "--shell", "/bin/bash", user])
        self.authorize_key(user)

    def authorize_key(self, user: str) -> None:
        """A key pair in root's lab home whose public half `user` accepts (root included)."""
        key = f"{KEY_DIR}/{user}"
        self.run(["mkdir", "-p", "-m", "700", KEY_DIR])
        self.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", user, "-f", key])
        ssh_dir = f"{self.home(user)}/.ssh"
        # The user's primary group, whatever its name (`users` for directory users).
        self.run(["install", "-d", "-m", "700", "-o", user, "-g", f"{self.gid(user)}", ssh_dir])
        self.run(["install", "-m", "600", "-o", user, "-g", f"{self.gid(user)}", f"{key}.pub",
                  f"{ssh_dir}/authorized_keys"])  # fmt: skip

    def gid(self, user: str) -> int:
        lookup = "import pwd, sys; print(pwd.getpwnam(sys.argv[1]).pw_gid)"
        return int(self.run(["python3", "-c", lookup, user]).stdout)

    def home(self, user: str) -> str:
        # By name only: `getent passwd 1002` would read a name of digits as a uid.
        lookup = "import pwd, sys; print(pwd.getpwnam(sys.argv[1]).pw_dir)"
        return self.run(["python3", "-c", lookup, user]).stdout.strip()

    def ssh_argv(self, user: str, remote: str, *, tty: bool = False) -> list[str]:
        """A real SSH login (key, lab loopback) running `remote` through the user's shell;
        with tty, on a terminal as an interactive session would be."""
        return [
            "ssh", *(["-tt"] if tty else []), "-i", f"{KEY_DIR}/{user}", "-o", "BatchMode=yes",
            "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
            "-o", "LogLevel=ERROR", f"{user}@127.0.0.1", "--", remote,
        ]  # fmt: skip

    def ssh(
        self,
        user: str,
        remote: str,
        *,
        timeout: float = 120.0,
        input: str | bytes | None = None,
        check: bool = True,
        tty: bool = False,
    ) -> command.Result:
        argv = self.ssh_argv(user, remote, tty=tty)
        return self.run(argv, timeout=timeout, input=input, check=check)


class VmLab(Lab):
    """A running VM lab (tests/lab/vm.py): commands reach it over SSH as root, from qemu's
    network namespace, through one connection kept open in the lab's cgroups (a new SSH
    handshake costs seconds under emulation; `down` ends it with the lab)."""

    def enter_argv(self, argv: Sequence[str]) -> list[str]:
        self._connect()
        remote = shlex.join(
            [
                "/usr/bin/env",
                "-i",
                f"PATH={LAB_PATH}",
                "HOME=/root",
                "LANG=C.UTF-8",
                f"TERM={os.environ.get('TERM', 'dumb')}",
                *argv,
            ]
        )
        return [*self._ssh("-o", "ControlMaster=no"), "--", f"cd / && exec {remote}"]

    def _ssh(self, *options: str) -> list[str]:
        files = vm.VmPaths(self.paths)
        return [
            command.which("nsenter"), "-t", str(self.pid), "-n", "--",
            command.which("ssh"), "-q", "-i", str(files.key), "-p", str(vm.SSH_PORT),
            "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
            "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
            "-o", "ConnectTimeout=5", "-o", f"ControlPath={files.control}", *options,
            "root@127.0.0.1",
        ]  # fmt: skip

    def _connect(self) -> None:
        """The shared connection, unless it is open; while the guest's sshd does not answer
        yet, commands connect on their own."""
        check = subprocess.run([*self._ssh("-O", "check")], capture_output=True, check=False)
        if check.returncode == 0:
            return
        vm.VmPaths(self.paths).control.unlink(missing_ok=True)  # the last boot's
        # No pipes: the master, gone to the background, would hold them open.
        with contextlib.suppress(subprocess.TimeoutExpired):
            subprocess.run(
                [*self._ssh("-o", "ControlMaster=yes", "-o", "ControlPersist=yes", "-f", "-N")],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                check=False, timeout=30, preexec_fn=lambda: boot.join_cgroups(self.paths),
            )  # fmt: skip


def _lab(paths: LabPaths, record: LabRecord) -> Lab:
    return VmLab(paths, record) if record.kind == "vm" else Lab(paths, record)


def open_lab(name: str) -> Lab:
    paths = LabPaths(check_name(name))
    record = _read_record(paths)
    if record is None or not _is_alive(record):
        raise LabError(f"lab {name!r} is not running (see `python3 -m tests.lab list`)")
    return _lab(paths, record)


def up(
    name: str,
    *,
    timeout: float = BOOT_TIMEOUT,
    base: Path = LAB_ROOT,
    binds: Sequence[Path] = (),
    kind: str = "container",
    disk_fs: str = "ext4",
) -> Lab:
    """Boot a lab: a container on this machine's kernel, or (kind "vm") a virtual machine
    with a kernel of its own (tests/lab/vm.py) whose disk has the filesystem `disk_fs`."""
    paths = LabPaths(check_name(name), base)
    record = _read_record(paths)
    if record is not None and _is_alive(record):
        raise LabError(
            f"lab {name!r} is already up (pid {record.init_pid}); "
            f"`python3 -m tests.lab down {name}` first"
        )
    if paths.state.exists() or any(d.exists() for d in _cgroup_dirs(paths)):
        _clean_up(paths)  # the remains of a lab that crashed or was killed
    started = time.monotonic()
    paths.state.mkdir(parents=True, mode=0o700)
    resolved = [str(Path(b).resolve()) for b in binds]
    paths.binds.write_text(json.dumps(resolved))
    if kind == "vm":
        try:
            vm.prepare(vm.VmPaths(paths), f"lab-{name}", resolved, disk_fs)
        except (DtenantError, OSError) as exc:
            _clean_up(paths)
            raise LabError(f"lab {name}: cannot prepare its virtual machine: {exc}") from exc
        return _boot(paths, started, timeout, kind)
    paths.root.mkdir()
    paths.scratch.mkdir()
    # The lab's disk: held by the real machine, so that it outlives the lab's namespaces.
    command.run([command.which("mount"), "-t", "tmpfs", "-o", "mode=755", "tmpfs",
                 str(paths.scratch)])  # fmt: skip
    return _boot(paths, started, timeout, kind)


def reboot(name: str, *, timeout: float = BOOT_TIMEOUT, base: Path = LAB_ROOT) -> Lab:
    """Reboot a lab as a host reboots: systemd shuts down cleanly (every unit stopped),
    the lab's disk (/etc, /var, Docker's data) stays, and the next boot is the same as the
    first: new namespaces (so a fresh /run, /tmp and network links), systemd as PID 1."""
    paths = LabPaths(check_name(name), base)
    record = _read_record(paths)
    if record is None or not _is_alive(record):
        raise LabError(f"lab {name!r} is not running (see `python3 -m tests.lab list`)")
    lab = _lab(paths, record)
    lab.run(["systemctl", "reboot"], check=False, timeout=30)
    deadline = time.monotonic() + SHUTDOWN_TIMEOUT
    while _is_alive(lab.record) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _is_alive(lab.record):
        print(f"lab {name}: no clean shutdown within {SHUTDOWN_TIMEOUT:.0f} s; killed",
              file=sys.stderr)  # fmt: skip
    _kill_all(paths, lab.record)  # when PID 1 is gone the kernel killed the rest
    with contextlib.suppress(ChildProcessError):
        os.waitpid(lab.record.launcher_pid, os.WNOHANG)  # ours when `up` ran here
    _remove_cgroups(paths)  # a booting host has none of the last boot's cgroups
    return _boot(paths, time.monotonic(), timeout, record.kind)


def _boot(paths: LabPaths, started: float, timeout: float, kind: str) -> Lab:
    name = paths.name
    base = paths.base
    _create_cgroups(paths)
    launcher = _spawn(paths, "tests.lab.vm" if kind == "vm" else "tests.lab.boot")
    init_pid = _wait_for_init(paths, launcher)
    record = LabRecord(
        name=name,
        launcher_pid=launcher.pid,
        init_pid=init_pid,
        namespaces={kind: _namespace_id(init_pid, kind) or "" for kind in NAMESPACES},
        started_at=time.time(),
        kind=kind,
    )
    paths.record.write_text(json.dumps(asdict(record)))
    lab = _lab(paths, record)
    try:
        _wait_until_booted(lab, launcher, started + timeout)
    except LabError:
        down(name, base=base)
        raise
    record = LabRecord(**{**asdict(record), "boot_seconds": round(time.monotonic() - started, 2)})
    paths.record.write_text(json.dumps(asdict(record)))
    return _lab(paths, record)


def _spawn(paths: LabPaths, stages: str) -> subprocess.Popen[bytes]:
    package_parent = str(Path(__file__).resolve().parents[2])
    with paths.boot_log.open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-B", "-m", stages, "launch", paths.name,
             str(paths.base)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True, cwd="/",
            env={"PATH": ":".join(command.SEARCH_PATH), "PYTHONPATH": package_parent},
        )  # fmt: skip


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


# unshare(CLONE_NEWNET) waits while the kernel tears down earlier network namespaces; a
# lab that had a thousand bridges keeps it busy for a minute.
NAMESPACE_TIMEOUT = 180.0


def _wait_for_init(paths: LabPaths, launcher: subprocess.Popen[bytes]) -> int:
    deadline = time.monotonic() + NAMESPACE_TIMEOUT
    while time.monotonic() < deadline:
        children = _children(launcher.pid)
        if children:
            return children[0]
        if launcher.poll() is not None:
            break
        time.sleep(0.02)
    launcher.kill()
    code = launcher.wait()
    _clean_up(paths, keep_log=True)
    raise LabError(
        f"lab {paths.name}: the namespaces did not come up (launcher exit status {code})\n"
        f"{_log_tail(paths)}"
    )


def _log_tail(paths: LabPaths, lines: int = 40) -> str:
    try:
        text = paths.boot_log.read_text(errors="replace")
    except OSError:
        return "(no boot log)"
    return "\n".join(text.splitlines()[-lines:])


def _wait_until_booted(lab: Lab, launcher: subprocess.Popen[bytes], deadline: float) -> None:
    state = "unknown"
    while time.monotonic() < deadline:
        if launcher.poll() is not None:
            raise LabError(f"lab {lab.name}: PID 1 exited during boot\n{_log_tail(lab.paths)}")
        try:
            result = lab.run(["systemctl", "is-system-running"], check=False, timeout=10)
        except command.CommandError:  # a VM lab's sshd is not answering yet
            continue
        state = result.stdout.strip()
        if state == "running":
            return
        if state == "degraded":
            failed = lab.run(["systemctl", "--failed", "--no-legend", "--plain"], check=False)
            print(f"lab {lab.name} is degraded; failed units:\n{failed.stdout}", file=sys.stderr)
            return
        time.sleep(0.1)
    journal = lab.run(["journalctl", "-b", "--no-pager", "-n", "80"], check=False, timeout=20)
    raise LabError(
        f"lab {lab.name}: not booted after the time limit (system state: {state})\n"
        f"{journal.stdout}\n{_log_tail(lab.paths)}"
    )


def down(name: str, *, base: Path = LAB_ROOT) -> bool:
    """Tear a lab down; True when there was something to tear down."""
    paths = LabPaths(check_name(name), base)
    if not paths.state.exists() and not any(d.exists() for d in _cgroup_dirs(paths)):
        return False
    _clean_up(paths)
    return True


def _lab_pids(paths: LabPaths, record: LabRecord | None) -> set[int]:
    """Every process in the lab's namespaces or cgroups."""
    pids: set[int] = set()
    namespaces = dict(record.namespaces) if record else {}
    for directory in _cgroup_dirs(paths):
        for procs in directory.rglob("cgroup.procs"):
            try:
                pids.update(int(p) for p in procs.read_text().split())
            except OSError:
                continue
    if not namespaces:
        # No record (crash during `up`): learn the namespaces from the lab's processes.
        for pid in pids:
            mnt = _namespace_id(pid, "mnt")
            if mnt and mnt != _namespace_id(os.getpid(), "mnt"):
                namespaces["mnt"] = mnt
    mine = {kind: _namespace_id(os.getpid(), kind) for kind in NAMESPACES}
    wanted = {kind: ns for kind, ns in namespaces.items() if ns and ns != mine.get(kind)}
    for pid in _pids():
        if any(_namespace_id(pid, kind) == ns for kind, ns in wanted.items()):
            pids.add(pid)
    pids.discard(os.getpid())
    return pids


def _kill_all(paths: LabPaths, record: LabRecord | None) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        pids = _lab_pids(paths, record)
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)
    survivors = sorted(_lab_pids(paths, record))
    raise LabError(f"lab {paths.name}: processes survived SIGKILL: {survivors}")


def _remove_cgroups(paths: LabPaths) -> None:
    deadline = time.monotonic() + 10
    for top in _cgroup_dirs(paths):
        while top.exists():
            try:
                for directory, _subdirs, _files in os.walk(top, topdown=False):
                    Path(directory).rmdir()
            except OSError as exc:
                if time.monotonic() > deadline:
                    raise LabError(f"lab {paths.name}: cannot remove cgroup {top}: {exc}") from exc
                time.sleep(0.05)


def _clean_up(paths: LabPaths, *, keep_log: bool = False) -> None:
    record = _read_record(paths)
    _kill_all(paths, record)
    _remove_cgroups(paths)
    if any(m.mount_point == str(paths.scratch) for m in mountinfo.read()):
        command.run([command.which("umount"), str(paths.scratch)])  # the lab's disk
    leftovers = mountinfo.under(mountinfo.read(), str(paths.state))
    if leftovers:
        where = ", ".join(m.mount_point for m in leftovers)
        raise LabError(f"lab {paths.name}: still mounted on the real machine: {where}; kept")
    if paths.state.exists() and not keep_log:
        # Tenants' data is in there too, shaped as they liked (deep, wide, looping).
        removed = treewalk.remove_tree(str(paths.state))
        if removed.error_count:
            raise LabError(f"lab {paths.name}: cannot delete {paths.state}: {removed.summary()}")


def list_labs(base: Path = LAB_ROOT) -> list[LabStatus]:
    if not base.is_dir():
        return []
    statuses = []
    for state in sorted(base.iterdir()):
        record = _read_record(LabPaths(state.name, base))
        alive = record is not None and _is_alive(record)
        statuses.append(
            LabStatus(
                name=state.name,
                state="running" if alive else "dead",
                init_pid=record.init_pid if record else None,
                boot_seconds=record.boot_seconds if record else None,
            )
        )
    return statuses
