"""A lab (`python3 -m tests.lab`) leaves nothing on the real machine, even after a crash."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dtenant_session import command, mountinfo
from tests import testimage
from tests.lab import host
from tests.lab.paths import LabPaths
from tests.sandbox import leftovers
from tests.sandbox.conftest import CHECKOUT, LAB_NAME, VM_BOOT_TIMEOUT, for_users

NAME = f"{LAB_NAME}-lifecycle"  # beside the session lab; checkouts side by side


@pytest.fixture
def clean_machine() -> Iterator[leftovers.Snapshot]:
    """The real machine before the test's lab exists, where a lab could change it."""
    host.down(NAME)
    yield leftovers.take()
    host.down(NAME)


def _left_behind(lab: leftovers.Footprint, before: leftovers.Snapshot) -> dict[str, list[str]]:
    return leftovers.left_behind(lab, before, leftovers.take())


def _lab(*args: str, cwd: Path = CHECKOUT) -> subprocess.CompletedProcess[str]:
    """`python3 -m tests.lab ARGS` run from the checkout at `cwd`."""
    return subprocess.run(
        [sys.executable, "-m", "tests.lab", *args],
        capture_output=True, text=True, timeout=300, check=False, cwd=cwd,
    )  # fmt: skip


def _wait_until_dead() -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(
        s.state == "running" for s in host.list_labs() if s.name == NAME
    ):
        time.sleep(0.05)
    assert [s.state for s in host.list_labs() if s.name == NAME] == ["dead"]


def test_down_leaves_nothing_behind(clean_machine: leftovers.Snapshot) -> None:
    lab = host.up(NAME)
    # Give the lab things to leave behind: a bridge, a running container, a service, files.
    lab.run(["ip", "link", "add", "leak0", "type", "bridge"])
    lab.run(testimage.import_argv(), input=testimage.build())
    lab.run(["docker", "run", "-d", testimage.IMAGE, "sleep", "1000"])
    lab.run(["systemd-run", "--unit=lingering", "/bin/sleep", "1000"])
    lab.run(["touch", *leftovers.MARKERS])
    footprint = leftovers.footprint(lab)
    assert len(footprint.namespaces) == len(leftovers.NAMESPACE_KINDS)  # none the host's
    assert "leak0" in footprint.links
    assert leftovers.outside_its_cgroups(footprint) == []
    assert _lab("down", NAME).returncode == 0
    assert not LabPaths(NAME).state.exists()
    assert _left_behind(footprint, clean_machine) == {}


def test_a_vm_lab_uses_loop_devices_of_its_own_and_leaves_nothing_behind(
    clean_machine: leftovers.Snapshot,
) -> None:
    lab = host.up(NAME, kind="vm", timeout=VM_BOOT_TIMEOUT)
    assert lab.run(["uname", "-r"]).stdout.strip() != os.uname().release  # its own kernel
    # Loop devices, attached and mounted in the guest: the real machine's /dev, modules
    # and mounts do not change (leftovers compares them).
    lab.sh("truncate -s 64M /var/tmp/fs.img && mkfs.ext4 -q /var/tmp/fs.img"
           " && mkdir -p /mnt/fs && mount -o loop /var/tmp/fs.img /mnt/fs"
           " && for i in $(seq 0 9); do losetup -f /var/tmp/fs.img; done", timeout=300)  # fmt: skip
    assert len(lab.run(["losetup", "-n", "-l"]).stdout.splitlines()) == 11
    lab.run(["touch", *leftovers.MARKERS])
    footprint = leftovers.footprint(lab)
    assert {n.split(":")[0] for n in footprint.namespaces} == {"mnt", "net"}  # qemu's own
    assert leftovers.outside_its_cgroups(footprint) == []
    assert _lab("down", NAME).returncode == 0
    assert not LabPaths(NAME).state.exists()
    assert _left_behind(footprint, clean_machine) == {}


@pytest.mark.parametrize("kind", ["uts", "ipc", "cgroup"])
def test_down_kills_what_entered_any_of_its_namespaces(
    clean_machine: leftovers.Snapshot, kind: str
) -> None:
    """A process that joined only one of the lab's namespaces (nsenter from the host) is
    neither in its cgroups nor in its pid, mount or network namespace; it is the lab's."""
    lab = host.up(NAME)
    footprint = leftovers.footprint(lab)
    nsenter = [command.which("nsenter"), "-t", str(lab.pid), f"--{kind}", "sleep", "600"]
    joined = subprocess.Popen(nsenter, start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        while Path(f"/proc/{joined.pid}/comm").read_text().strip() != "sleep":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert _lab("down", NAME).returncode == 0
        assert _left_behind(footprint, clean_machine) == {}
    finally:
        joined.kill()
        joined.wait()


def test_crashed_lab_is_cleaned_by_next_down(clean_machine: leftovers.Snapshot) -> None:
    lab = host.up(NAME)
    footprint = leftovers.footprint(lab)
    os.kill(lab.record.launcher_pid, signal.SIGKILL)
    os.kill(lab.pid, signal.SIGKILL)
    _wait_until_dead()
    result = _lab("down", NAME)
    assert result.returncode == 0, result.stderr
    assert _left_behind(footprint, clean_machine) == {}


def test_crashed_lab_is_cleaned_by_next_up(clean_machine: leftovers.Snapshot) -> None:
    lab = host.up(NAME)
    first = leftovers.footprint(lab)
    os.kill(lab.pid, signal.SIGKILL)
    _wait_until_dead()
    again = host.up(NAME)
    second = leftovers.footprint(again)
    assert again.run(["systemctl", "is-system-running"], check=False).stdout.strip() in (
        "running", "degraded")  # fmt: skip
    host.down(NAME)
    assert _left_behind(first, clean_machine) == {}
    assert _left_behind(second, clean_machine) == {}


def test_cli_verbs(clean_machine: leftovers.Snapshot) -> None:
    up = _lab("up", NAME)
    assert up.returncode == 0, up.stderr
    assert "booted in" in up.stdout
    listed = _lab("list")
    assert any(line.split()[:2] == [NAME, "running"] for line in listed.stdout.splitlines())
    ran = _lab("exec", NAME, "--", "hostname")
    assert ran.stdout.strip() == f"lab-{NAME}"
    twice = _lab("up", NAME)
    assert twice.returncode == 1
    assert "already up" in twice.stderr
    assert "Traceback" not in twice.stderr
    assert _lab("down", NAME).returncode == 0
    gone = _lab("exec", NAME, "--", "true")
    assert gone.returncode == 1
    assert "not running" in gone.stderr


def _host(*argv: str, check: bool = True) -> None:
    """A command on the real machine."""
    command.run([command.which(argv[0]), *argv[1:]], check=check)


def test_other_work_on_the_machine_is_no_leftover_but_the_labs_own_is(
    clean_machine: leftovers.Snapshot,
) -> None:
    """A shared machine is busy meanwhile: someone else's process, file in /tmp and link
    are not the lab's. What a faulty `down` would leave still counts: a process in the
    lab's cgroup, the cgroup, a mount in its state dir, a link by a name it had."""
    lab = host.up(NAME)
    lab.run(["ip", "link", "add", "leak0", "type", "bridge"])
    footprint = leftovers.footprint(lab)
    paths = LabPaths(NAME)
    others = subprocess.Popen(["sleep", "600"], start_new_session=True)
    theirs = Path(tempfile.mkstemp(prefix="someone-else-", dir="/tmp")[1])
    kept = subprocess.Popen(["sleep", "600"], start_new_session=True)
    try:
        _host("ip", "link", "add", "other0", "type", "bridge")
        running = _left_behind(footprint, clean_machine)
        assert {"processes", "state", "cgroups"} <= set(running), running
        assert f"{others.pid} sleep 600" not in running["processes"]
        host.down(NAME)
        # What a faulty `down` would have left of the lab.
        # One hierarchy is enough (a new v1 cpuset has no CPUs: nothing could join it).
        hierarchy = next(c for c in mountinfo.cgroup_mounts(mountinfo.read())
                         if "cpuset" not in c.controllers)  # fmt: skip
        cgroup = Path(hierarchy.mount_point) / paths.cgroup_name
        cgroup.mkdir()
        (cgroup / "cgroup.procs").write_text(f"{kept.pid}\n")
        (paths.state / "rw").mkdir(parents=True)
        _host("mount", "-t", "tmpfs", "tmpfs", str(paths.state / "rw"))
        _host("ip", "link", "add", "leak0", "type", "bridge")
        report = _left_behind(footprint, clean_machine)
        assert report.pop("processes") == [f"{kept.pid} sleep 600"]
        assert report.pop("state") == [str(paths.state)]
        assert report.pop("cgroups") == [str(cgroup)]
        assert report.pop("mounts") == [f"('{paths.state}/rw', 'tmpfs', 'tmpfs')"]
        assert report.pop("links") == ["leak0"]
        assert report == {}
    finally:
        for process in (others, kept):
            process.kill()
            process.wait()
        theirs.unlink()
        _host("umount", str(paths.state / "rw"), check=False)
        for link in ("leak0", "other0"):
            _host("ip", "link", "del", link, check=False)
        host.down(NAME)


def _copy_of_the_checkout(to: Path) -> Path:
    ignore = shutil.ignore_patterns(".git", ".venv", "dist", "__pycache__", ".*_cache")
    shutil.copytree(CHECKOUT, to, ignore=ignore)
    return to


@pytest.mark.parametrize(
    "where", ["/tmp/{unique} dt checkout/dtenant", "/root/{unique}/dt checkout"]
)
def test_a_checkout_anywhere_is_seen_inside(clean_machine: leftovers.Snapshot, where: str) -> None:
    """The quick start from a checkout in /tmp (the lab mounts its own /tmp), below root's
    0700 home, in a path with a space: the lab tool runs from it, install.sh runs inside,
    and tests give users a copy of what they run (the checkout may be unreadable to them)."""
    checkout = Path(where.format(unique=f"{NAME}-{os.getpid()}"))
    top = Path(*checkout.parts[:3])
    top.mkdir(mode=0o700)
    try:
        _copy_of_the_checkout(checkout)
        up = _lab("up", NAME, "--bind", str(checkout), cwd=checkout)
        assert up.returncode == 0, up.stderr
        installed = _lab("exec", NAME, "--", f"{checkout}/packaging/install.sh", cwd=checkout)
        assert installed.returncode == 0, installed.stderr
        lab = host.open_lab(NAME)
        assert lab.run(["dtenant", "--version"]).stdout.strip()
        as_nobody = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "cat"]
        readable = lab.run([*as_nobody, for_users(lab, checkout / "tests/sandbox/rawapi.py")])
        assert "def " in readable.stdout
        if where.startswith("/root"):
            hidden = lab.run([*as_nobody, f"{checkout}/tests/sandbox/rawapi.py"], check=False)
            assert "Permission denied" in hidden.stderr
        footprint = leftovers.footprint(lab)
        assert _lab("down", NAME, cwd=checkout).returncode == 0
        assert _left_behind(footprint, clean_machine) == {}
    finally:
        host.down(NAME)
        shutil.rmtree(top)
