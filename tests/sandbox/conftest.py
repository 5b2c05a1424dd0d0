"""Sandbox tests: one lab (a real systemd host) per test session, dtenant installed in it."""

from __future__ import annotations

import os
import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest

from dtenant_session import testimage
from dtenant_session.lab import host

CHECKOUT = Path(__file__).resolve().parents[2]
LAB_NAME = "pytest"
ACCOUNTS = ("alice", "bob")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "sandbox" in item.nodeid.split("/"):
            item.add_marker(pytest.mark.sandbox)


@pytest.fixture(scope="session")
def lab() -> Iterator[host.Lab]:
    """A booted lab with dtenant installed from this checkout and test accounts."""
    if os.geteuid() != 0:
        pytest.fail("sandbox tests boot a lab and must run as root")
    booted = host.up(LAB_NAME, binds=[CHECKOUT])
    try:
        # Concurrent-login tests open 20 connections at once; sshd's default MaxStartups
        # (10:30:100) would drop some before authentication.
        booted.run(["tee", "/etc/ssh/sshd_config.d/dtenant-lab.conf"], input="MaxStartups 100\n")
        booted.run(["systemctl", "reload", "ssh"])
        booted.run([str(CHECKOUT / "packaging" / "install.sh")])
        booted.run(testimage.import_argv(), input=testimage.build())
        for account in ACCOUNTS:
            booted.add_account(account)
        yield booted
    finally:
        if os.environ.get("DTENANT_KEEP_LAB") != "1":  # keep it to look around afterwards
            host.down(LAB_NAME)


def load_image(lab: host.Lab, user: str) -> None:
    """Import the busybox test image into `user`'s own daemon, over SSH."""
    lab.ssh(user, shlex.join(testimage.import_argv()), input=testimage.build())


@pytest.fixture(scope="session")
def tenants(lab: host.Lab) -> tuple[str, ...]:
    """alice and bob, logged in once and with the test image in their own daemons."""
    for account in ACCOUNTS:
        load_image(lab, account)
    return ACCOUNTS


OUTSIDE = "198.51.100.2"  # a host "outside": a network namespace in the lab with a web server


@pytest.fixture(scope="session")
def outside(lab: host.Lab) -> str:
    """A web server beyond the lab host's uplink, reachable only through forwarding + NAT."""
    lab.sh(
        "ip netns add outside"
        " && ip link add uplink type veth peer name eth0 netns outside"
        " && ip addr add 198.51.100.1/24 dev uplink && ip link set uplink up"
        f" && ip -n outside addr add {OUTSIDE}/24 dev eth0"
        " && ip -n outside link set eth0 up && ip -n outside link set lo up"
        " && mkdir -p /srv/outside && echo outside-ok > /srv/outside/index.html"
        " && ip netns exec outside /bin/busybox httpd -p 80 -h /srv/outside"
    )
    return OUTSIDE
