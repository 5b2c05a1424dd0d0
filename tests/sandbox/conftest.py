"""Sandbox tests: one lab (a real systemd host) per test session, dtenant installed in it."""

from __future__ import annotations

import os
import shlex
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dtenant_session import authz, command
from tests import testimage
from tests.lab import host

CHECKOUT = Path(__file__).resolve().parents[2]
# DTENANT_LAB_NAME: several checkouts may run their sandbox tests side by side.
LAB_NAME = os.environ.get("DTENANT_LAB_NAME", "pytest")
ACCOUNTS = ("alice", "bob")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "sandbox" in item.nodeid.split("/"):
            item.add_marker(pytest.mark.sandbox)


def build_deb(version: str | None = None) -> Path:
    """dtenant_VERSION_ARCH.deb of this checkout, in CHECKOUT/dist (which labs can see)."""
    argv = [str(CHECKOUT / "packaging" / "build-deb")]
    if version:
        argv += ["--version", version]
    output = command.run(argv, timeout=900).stdout.strip().splitlines()
    return Path(output[-1])


def install(lab: host.Lab, how: str) -> None:
    """dtenant into a lab: from the Debian package (`deb`) or with install.sh (`script`)."""
    if how == "deb":
        lab.run(["apt-get", "install", "-y", "-q", str(build_deb())], timeout=600)
    else:
        lab.run([str(CHECKOUT / "packaging" / "install.sh")], timeout=600)


@pytest.fixture(scope="session")
def lab() -> Iterator[host.Lab]:
    """A booted lab with dtenant installed from this checkout and test accounts.

    DTENANT_INSTALL=script installs with packaging/install.sh instead of the .deb."""
    if os.geteuid() != 0:
        pytest.fail("sandbox tests boot a lab and must run as root")
    booted = host.up(LAB_NAME, binds=[CHECKOUT])
    try:
        # Concurrent-login tests open 20 connections at once; sshd's default MaxStartups
        # (10:30:100) would drop some before authentication.
        booted.configure_sshd("/etc/ssh/sshd_config.d/dtenant-lab.conf", "MaxStartups 100\n")
        install(booted, os.environ.get("DTENANT_INSTALL", "deb"))
        booted.run(testimage.import_argv(), input=testimage.build())
        for account in ACCOUNTS:
            booted.add_account(account)
        yield booted
    finally:
        if os.environ.get("DTENANT_KEEP_LAB") != "1":  # keep it to look around afterwards
            host.down(LAB_NAME)


# A VM lab emulates its CPU where KVM does not work: booting and a first login are slow.
VM_BOOT_TIMEOUT = 600.0


@pytest.fixture(scope="module", params=["ext4", "xfs"])
def vm_lab(request: pytest.FixtureRequest) -> Iterator[host.Lab]:
    """A virtual-machine lab (a kernel of its own: loop devices) on a disk of ext4, then
    of xfs, with dtenant installed as in `lab`; one per module and filesystem."""
    if os.geteuid() != 0:
        pytest.fail("sandbox tests boot a lab and must run as root")
    name = f"{LAB_NAME}-vm-{request.param}"
    booted = host.up(name, binds=[CHECKOUT], kind="vm", disk_fs=request.param,
                     timeout=VM_BOOT_TIMEOUT)  # fmt: skip
    try:
        install(booted, os.environ.get("DTENANT_INSTALL", "deb"))
        yield booted
    finally:
        if os.environ.get("DTENANT_KEEP_LAB") != "1":
            host.down(name)


# Inside a lab: copies of the checkout's files that test users run. The checkout itself
# may be where they cannot read it (below root's 0700 home, or cloned with umask 077).
USER_TOOLS = "/usr/local/lib/dtenant-tests"
RAWAPI = f"{USER_TOOLS}/rawapi.py"


def for_users(lab: host.Lab, source: Path) -> str:
    """A copy of `source` in the lab that every user can read; its path there."""
    target = f"{USER_TOOLS}/{source.name}"
    lab.run(["install", "-D", "-m", "644", "/dev/stdin", target], input=source.read_bytes())
    return target


@pytest.fixture(scope="session")
def rawapi(lab: host.Lab) -> str:
    """tests/sandbox/rawapi.py where a tenant can run it (RAWAPI)."""
    return for_users(lab, CHECKOUT / "tests" / "sandbox" / "rawapi.py")


def load_image(lab: host.Lab, user: str) -> None:
    """Import the busybox test image into `user`'s own daemon, over SSH."""
    lab.ssh(user, shlex.join(testimage.import_argv()), input=testimage.build())


@pytest.fixture(scope="session")
def tenants(lab: host.Lab) -> tuple[str, ...]:
    """alice and bob, logged in once and with the test image in their own daemons."""
    for account in ACCOUNTS:
        load_image(lab, account)
    return ACCOUNTS


def container_root(lab: host.Lab, user: str) -> int:
    """The host id of `user`'s container root: its tenant account's uid (and gid)."""
    account = lab.run(["python3", "-c", "import json, sys; print(json.load(open(sys.argv[1]))"
                       "['userns-remap'].split(':')[0])",
                       f"/var/lib/dtenant/tenants/{user}/daemon.json"]).stdout.strip()  # fmt: skip
    return int(lab.run(["id", "-u", account]).stdout)


OUTSIDE = "198.51.100.2"  # a host "outside": a network namespace in the lab with a web server


@pytest.fixture(scope="session")
def outside(lab: host.Lab) -> str:
    """A web server beyond the lab host's uplink, reachable only through forwarding + NAT."""
    return make_outside(lab)


def make_outside(lab: host.Lab) -> str:
    """The `outside` namespace and its web server, unless there (a reboot takes them)."""
    lab.sh(
        "ip link show uplink >/dev/null 2>&1 || { ip netns del outside 2>/dev/null;"
        " ip netns add outside"
        " && ip link add uplink type veth peer name eth0 netns outside"
        " && ip addr add 198.51.100.1/24 dev uplink && ip link set uplink up"
        f" && ip -n outside addr add {OUTSIDE}/24 dev eth0"
        " && ip -n outside link set eth0 up && ip -n outside link set lo up"
        " && mkdir -p /srv/outside && echo outside-ok > /srv/outside/index.html"
        " && ip netns exec outside /bin/busybox httpd -p 80 -h /srv/outside; }"
    )
    return OUTSIDE


class Journal:
    """dtenant's journal lines in a lab from now on (journalctl's --after-cursor with -t
    missed entries in labs, hence counting lines)."""

    def __init__(self, lab: host.Lab) -> None:
        self.lab = lab
        self.mark = len(self._lines())

    def _lines(self) -> list[str]:
        return self.lab.run(["journalctl", "-t", "dtenant", "--no-pager", "-o", "cat"]
                            ).stdout.splitlines()  # fmt: skip

    def since(self, expect: str, timeout: float = 10.0) -> str:
        """The new lines, waiting a little for `expect` (journald writes asynchronously)."""
        deadline = time.monotonic() + timeout
        while True:
            text = "\n".join(self._lines()[self.mark :])
            if expect in text or time.monotonic() > deadline:
                return text
            time.sleep(0.2)


def policy_in_force(changed: float) -> None:
    """Wait until the plugins decide by a configuration changed at time.monotonic()
    `changed`: a plugin looks at the configuration once a second at most, so every request
    made a second after the change is decided by it (authz.ReloadingPolicy)."""
    time.sleep(max(0.0, changed + authz.CONFIG_CHECK_EVERY + 0.2 - time.monotonic()))
