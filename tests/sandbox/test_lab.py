"""A lab is a real systemd host: the services dtenant relies on run in it for real."""

from __future__ import annotations

import json
import re
import time

from tests import testimage
from tests.lab import host

BRIDGE_NETDEV = "[NetDev]\nName=labtest0\nKind=bridge\n"
BRIDGE_NETWORK = (
    "[Match]\nName=labtest0\n\n[Network]\nAddress=10.123.45.1/24\nConfigureWithoutCarrier=yes\n"
)


# Units the tests make fail on purpose, in the session's lab: tenants' daemons, their
# containers' scopes, mounts of a capped tenant's disk the lab cannot make.
TENANTS_UNITS = re.compile(r"^(docker@|dtenant-|docker-[0-9a-f]{64}\.scope|var-lib-dtenant-)")


def test_systemd_reports_running(lab: host.Lab) -> None:
    """The host the lab makes runs: none of its own units failed."""
    failed = lab.run(["systemctl", "--failed", "--no-legend", "--plain"]).stdout.splitlines()
    hosts = [line for line in failed if line.split() and not TENANTS_UNITS.match(line.split()[0])]
    assert hosts == [], failed
    state = lab.run(["systemctl", "is-system-running"], check=False).stdout.strip()
    assert state == "running" or (state == "degraded" and failed), state


def test_core_services_are_active(lab: host.Lab) -> None:
    units = [
        "systemd-journald", "dbus", "systemd-logind", "systemd-udevd", "systemd-networkd",
        "containerd", "docker", "ssh",
    ]  # fmt: skip
    states = lab.run(["systemctl", "is-active", *units], check=False).stdout.split()
    assert dict(zip(units, states, strict=True)) == dict.fromkeys(units, "active")


def test_networkd_configures_a_bridge(lab: host.Lab) -> None:
    lab.run(["tee", "/etc/systemd/network/50-labtest0.netdev"], input=BRIDGE_NETDEV)
    lab.run(["tee", "/etc/systemd/network/50-labtest0.network"], input=BRIDGE_NETWORK)
    lab.run(["networkctl", "reload"])
    deadline = time.monotonic() + 20
    setup = ""
    while time.monotonic() < deadline:
        status = json.loads(lab.run(["networkctl", "--json=short", "list"]).stdout)
        setup = next(
            (i.get("AdministrativeState", "") for i in status["Interfaces"]
             if i["Name"] == "labtest0"), "")  # fmt: skip
        if setup == "configured":
            break
        time.sleep(0.2)
    assert setup == "configured"
    addresses = json.loads(lab.run(["ip", "-j", "-4", "addr", "show", "labtest0"]).stdout)
    assert addresses[0]["addr_info"][0]["local"] == "10.123.45.1"


def test_dockerd_runs_a_container_with_an_address(lab: host.Lab) -> None:
    output = lab.run(
        ["docker", "run", "--rm", testimage.IMAGE, "ip", "-4", "-o", "addr", "show", "eth0"]
    ).stdout
    assert " inet " in output


def test_account_logs_in_over_ssh_and_gets_a_logind_session(lab: host.Lab) -> None:
    result = lab.ssh("alice", 'id -un; loginctl show-session "$XDG_SESSION_ID" -p Name -p Remote')
    lines = result.stdout.split()
    assert lines[0] == "alice"
    assert "Name=alice" in lines
    assert "Remote=yes" in lines
