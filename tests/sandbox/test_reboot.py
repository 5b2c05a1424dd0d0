"""A host's real life (issue 16): it reboots, and a system docker.service runs beside.

The lab reboots as a host does (host.reboot: a clean shutdown, the disk kept, the same boot
path again). Right after the boot, before anyone logs in, the host is looked at once
(`after_boot`); the tests then check what that showed and what logins see.
"""

from __future__ import annotations

import json
import shlex
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests import testimage
from tests.lab import host
from tests.sandbox.conftest import Journal, load_image, make_outside
from tests.sandbox.test_network import (
    BLOCKED,
    UPLINK,
    _address,
    _fetch_in_container,
    _from_outside,
)

IMAGE = testimage.IMAGE
HELLO = "hello from dtenant"
# alice's containers: name -> restart policy; each runs until stopped.
RESTARTING = {"web": "always", "db": "unless-stopped", "job": "on-failure"}
NOT_RESTARTING = {"plain": "no", "done": "on-failure"}  # `done` exits 0: finished
IDLE = ("bob", "rbcarol")  # rbcarol's only container is unless-stopped but stopped by her
BOOT_LIMIT = 30.0  # seconds from userspace to multi-user.target: no 2-minute wait


def _run(lab: host.Lab, user: str, name: str, flags: str, cmd: str = "sleep 100000") -> None:
    lab.ssh(user, f"docker rm -f {name} >/dev/null 2>&1; docker run -d --name {name} {flags} "
            f"{IMAGE} {cmd} >/dev/null")  # fmt: skip


def _as_root(lab: host.Lab, user: str, args: str) -> str:
    """docker as root on the tenant's socket (no login; it would start a stopped daemon)."""
    return lab.sh(f"docker -H unix:///run/docker-{user}.sock {args}").stdout.strip()


def _property(lab: host.Lab, unit: str, name: str) -> str:
    """A property of unit (of the manager when unit is empty)."""
    return lab.run(["systemctl", "show", "-p", name, "--value", *([unit] if unit else [])]
                   ).stdout.strip()  # fmt: skip


def _microseconds(lab: host.Lab, unit: str, timestamp: str) -> int:
    """A timestamp on the monotonic clock (0: never)."""
    return int(_property(lab, unit, f"{timestamp}Monotonic") or 0)


@dataclass(frozen=True)
class AfterBoot:
    """The host right after the reboot, before any login."""

    boot_seconds: float
    sessions: str
    daemons: dict[str, str]  # user -> ActiveState of docker@USER.service
    sockets: dict[str, str]
    running: list[str]  # alice's running containers
    firewall_at: int  # monotonic µs when dtenant-firewall.service finished starting
    daemon_started_at: int  # ... and when alice's daemon started
    multi_user_at: int  # ... and when multi-user.target was reached
    userspace_at: int
    blame: str
    status: list[dict[str, object]]


@pytest.fixture(scope="module")
def after_boot(lab: host.Lab, tenants: tuple[str, ...]) -> Iterator[AfterBoot]:
    lab.add_account("rbcarol")
    load_image(lab, "rbcarol")
    lab.ssh("alice", "docker volume create avol >/dev/null")
    for name, policy in RESTARTING.items():
        _run(lab, "alice", name, f"--restart={policy} -v avol:/data")
    lab.ssh("alice", "docker stop db >/dev/null && docker start db >/dev/null")  # still wanted
    _run(lab, "alice", "web", "--restart=always -p 8080:80", "httpd -f -p 80 -h /var/www")
    _run(lab, "alice", "plain", "")
    _run(lab, "alice", "done", "--restart=on-failure", "true")
    _run(lab, "rbcarol", "stopped", "--restart=unless-stopped")
    lab.ssh("rbcarol", "docker stop -t 1 stopped >/dev/null")
    # The system daemon beside, with a published port, as before dtenant came. Started
    # afresh: earlier tests of the session simulate boots without it (test_network).
    lab.run(["systemctl", "restart", "docker.service"])
    lab.sh(f"docker rm -f sysweb >/dev/null 2>&1; docker run -d --restart=always --name sysweb"
           f" -p 8090:80 {IMAGE} httpd -f -p 80 -h /var/www >/dev/null")  # fmt: skip
    lab.sh("echo kept > /etc/dtenant-reboot-mark; echo gone > /run/dtenant-reboot-mark")
    boot_seconds = lab.reboot()
    users = ("alice", *IDLE)
    seen = AfterBoot(
        boot_seconds=boot_seconds,
        sessions=lab.run(["loginctl", "list-sessions", "--no-legend"]).stdout.strip(),
        daemons={u: _property(lab, f"docker@{u}.service", "ActiveState") for u in users},
        sockets={u: _property(lab, f"docker@{u}.socket", "ActiveState") for u in users},
        running=[],
        firewall_at=_microseconds(lab, "dtenant-firewall.service", "ExecMainExitTimestamp"),
        daemon_started_at=_microseconds(lab, "docker@alice.service", "ExecMainStartTimestamp"),
        multi_user_at=_microseconds(lab, "multi-user.target", "ActiveEnterTimestamp"),
        userspace_at=_microseconds(lab, "", "UserspaceTimestamp"),
        blame=lab.run(["systemd-analyze", "blame", "--no-pager"], check=False).stdout,
        status=json.loads(lab.run(["dtenant", "status", "--json"]).stdout),
    )
    if seen.daemons["alice"] == "active":
        # The daemon restarts its containers just after it starts.
        lab.sh("for i in $(seq 100); do [ $(docker -H unix:///run/docker-alice.sock ps -q"
               " | wc -l) -ge 3 ] && break; sleep 0.2; done")  # fmt: skip
        names = _as_root(lab, "alice", "ps --format '{{.Names}}'").split()
        seen = AfterBoot(**{**seen.__dict__, "running": sorted(names)})
    make_outside(lab)
    yield seen
    lab.ssh("alice", "docker rm -f web db job plain done; docker volume rm avol", check=False)
    lab.ssh("rbcarol", "docker rm -f stopped", check=False)
    lab.sh("docker rm -f sysweb; rm -f /etc/dtenant-reboot-mark", check=False)


def test_a_reboot_keeps_the_disk_and_starts_with_a_fresh_run(
    lab: host.Lab, after_boot: AfterBoot
) -> None:
    assert lab.run(["cat", "/etc/dtenant-reboot-mark"]).stdout == "kept\n"
    assert lab.run(["test", "-e", "/run/dtenant-reboot-mark"], check=False).returncode == 1


def test_nobody_has_logged_in_when_the_host_is_looked_at(after_boot: AfterBoot) -> None:
    assert after_boot.sessions == ""


def test_the_boot_waits_for_no_network_it_does_not_manage(after_boot: AfterBoot) -> None:
    """networkd manages dtenant's bridges only (the uplink is not its): the boot must not
    wait for systemd-networkd-wait-online's 2-minute timeout (docker.service wants
    network-online.target)."""
    seconds = (after_boot.multi_user_at - after_boot.userspace_at) / 1e6
    assert 0 < seconds < BOOT_LIMIT, after_boot.blame
    assert "wait-online" not in after_boot.blame, after_boot.blame


def _bridges_without_address(lab: host.Lab, rows: list[dict[str, object]]) -> dict[str, str]:
    """user -> what the host shows of the tenant's bridge, for those lacking its address
    (networkd may be reconfiguring a link for a moment: a few looks)."""
    wanted = {str(r["user"]): (str(r["bridge"]), str(r["subnet"]).rsplit(".", 1)[0] + ".1")
              for r in rows}  # fmt: skip
    missing: dict[str, str] = {}
    for _ in range(25):
        shown = lab.run(["ip", "-br", "-4", "addr"]).stdout.splitlines()
        by_link = {line.split()[0]: line for line in shown if line.split()}
        missing = {user: by_link.get(bridge, f"{bridge}: no such link")
                   for user, (bridge, gateway) in wanted.items()
                   if f" {gateway}/" not in by_link.get(bridge, "")}  # fmt: skip
        if not missing:
            break
        time.sleep(0.2)
    return missing


def _networkd_of(lab: host.Lab, bridges: list[str]) -> str:
    """What networkd says of these links, for a failure's message."""
    shown = lab.run(["networkctl", "status", "--no-pager", "-n", "20", *bridges[:3]],
                    check=False)  # fmt: skip
    return shown.stdout + shown.stderr


def test_every_tenants_bridge_is_up_with_its_address(lab: host.Lab,
                                                     after_boot: AfterBoot) -> None:  # fmt: skip
    assert {row["user"] for row in after_boot.status} >= {"alice", *IDLE}
    missing = _bridges_without_address(lab, after_boot.status)
    assert not missing, (missing, _networkd_of(lab, [v.split()[0] for v in missing.values()]))


def test_the_firewall_is_loaded_before_any_tenant_daemon_starts(after_boot: AfterBoot) -> None:
    assert after_boot.daemons["alice"] == "active"
    assert 0 < after_boot.firewall_at < after_boot.daemon_started_at


def test_restart_policy_containers_run_again_without_a_login(after_boot: AfterBoot) -> None:
    assert after_boot.running == sorted(RESTARTING)


def test_idle_tenants_get_no_daemon_at_boot_but_listen(after_boot: AfterBoot) -> None:
    for user in IDLE:
        assert after_boot.daemons[user] == "inactive", user
        assert after_boot.sockets[user] == "active", user


def test_the_reaper_keeps_a_daemon_that_runs_them(lab: host.Lab, after_boot: AfterBoot) -> None:
    """Even where the administrator lets the reaper stop daemons with containers after an
    hour without activity: the boot started this one, and the hour counts from then."""
    lab.sh("mkdir -p /etc/dtenant/dtenant.toml.d && printf '[reap]\\nstop_running_after = "
           "3600\\n' > /etc/dtenant/dtenant.toml.d/90-test-reboot.toml")  # fmt: skip
    try:
        decisions = json.loads(lab.run(["dtenant", "reap", "--dry-run", "--json", "alice"]).stdout)
    finally:
        lab.run(["rm", "-f", "/etc/dtenant/dtenant.toml.d/90-test-reboot.toml"])
    assert [d["action"] for d in decisions] == ["keep"], decisions


def test_isolation_and_nat_hold_for_them(lab: host.Lab, after_boot: AfterBoot) -> None:
    assert _from_outside(lab, f"http://{UPLINK}:8080/") == HELLO  # published
    web = _as_root(lab, "alice", "inspect -f '{{.NetworkSettings.IPAddress}}' web")
    assert _fetch_in_container(lab, "alice", "", "http://198.51.100.2:80/") == "outside-ok"
    assert _fetch_in_container(lab, "bob", "", f"http://{web}:80/") == BLOCKED
    assert _fetch_in_container(lab, "alice", "", f"http://{web}:80/") == HELLO


def test_every_login_finds_all_images_containers_and_volumes(
    lab: host.Lab, after_boot: AfterBoot
) -> None:
    names = lab.ssh("alice", "docker ps -a --format '{{.Names}}'").stdout.split()
    assert sorted(names) == sorted({**RESTARTING, **NOT_RESTARTING})
    assert "avol" in lab.ssh("alice", "docker volume ls -q").stdout.split()
    assert lab.ssh("alice", "docker exec db ls /data", check=False).returncode == 0
    for user in ("alice", *IDLE):
        images = lab.ssh(user, "docker images --format '{{.Repository}}:{{.Tag}}'").stdout
        assert IMAGE in images.split(), (user, images)
        assert lab.ssh(user, f"docker run --rm {IMAGE} echo ok").stdout.strip() == "ok"
    assert lab.ssh("rbcarol", "docker ps -a --format '{{.Names}}'").stdout.split() == ["stopped"]


# --- The system docker.service beside ---------------------------------------------------


def _system_publishes(lab: host.Lab) -> str:
    return _from_outside(lab, f"http://{UPLINK}:8090/")


def test_the_system_daemons_published_container_works_after_the_reboot(
    lab: host.Lab, after_boot: AfterBoot
) -> None:
    assert _system_publishes(lab) == HELLO


@pytest.mark.parametrize(
    "restart",
    ["systemctl restart docker.service", "systemctl restart docker@alice.service",
     "systemctl restart nftables.service && systemctl start dtenant-firewall.service"],
)  # fmt: skip
def test_restarting_either_daemon_or_nftables_breaks_neither(
    lab: host.Lab, after_boot: AfterBoot, restart: str
) -> None:
    lab.sh(restart)
    lab.sh("for i in $(seq 100); do docker ps -q | grep -q . &&"
           " [ $(docker -H unix:///run/docker-alice.sock ps -q | wc -l) -ge 3 ] && break;"
           " sleep 0.2; done")  # fmt: skip
    assert _system_publishes(lab) == HELLO
    assert _from_outside(lab, f"http://{UPLINK}:8080/") == HELLO
    web = _address(lab, "alice", "web")
    assert _fetch_in_container(lab, "alice", "", "http://198.51.100.2:80/") == "outside-ok"
    assert _fetch_in_container(lab, "bob", "", f"http://{web}:80/") == BLOCKED
    system = lab.run(["docker", "inspect", "-f", "{{.NetworkSettings.IPAddress}}", "sysweb"]
                     ).stdout.strip()  # fmt: skip
    assert _fetch_in_container(lab, "alice", "", f"http://{system}:80/") == BLOCKED


# --- docker.io and containerd updates -------------------------------------------------


def _outdated(lab: host.Lab) -> dict[str, list[str]]:
    rows = json.loads(lab.run(["dtenant", "status", "--json"]).stdout)
    return {str(r["user"]): list(r.get("outdated", ["(not shown)"])) for r in rows}


def _replace_binary(lab: host.Lab, path: str) -> None:
    """What dpkg does to a binary it updates: a new file renamed over the old one."""
    lab.sh(f"cp -p {path} {path}.dpkg-new && mv {path}.dpkg-new {path}")


def test_an_update_shows_and_moves_outdated_daemons(lab: host.Lab, after_boot: AfterBoot) -> None:
    """The idle daemon stops (its socket starts the new dockerd); the one running
    containers moves without stopping them (test_move.py looks closer)."""
    lab.ssh("bob", "docker ps -q")  # bob's daemon runs, with no container
    assert _outdated(lab)["bob"] == []
    _replace_binary(lab, "/usr/sbin/dockerd")
    _replace_binary(lab, "/usr/bin/containerd")
    outdated = _outdated(lab)
    assert outdated["bob"] == ["containerd", "dockerd"]
    assert outdated["alice"] == ["containerd", "dockerd"]
    assert "outdated containerd, dockerd" in lab.run(["dtenant", "status"]).stdout
    moved = lab.run(["dtenant", "restart", "--outdated"]).stdout
    assert _property(lab, "docker@bob.service", "ActiveState") == "inactive", moved
    assert _property(lab, "docker@alice.service", "ActiveState") == "active", moved
    assert "alice: moved" in moved
    assert len(_as_root(lab, "alice", "ps -q").split()) == len(RESTARTING)
    assert _outdated(lab)["alice"] == []
    assert lab.ssh("bob", f"docker run --rm {IMAGE} echo ok").stdout.strip() == "ok"
    assert _outdated(lab)["bob"] == []


def test_a_dpkg_trigger_moves_them(lab: host.Lab, after_boot: AfterBoot) -> None:
    installed = lab.run(["dpkg-query", "-W", "-f", "${Status}", "dtenant"], check=False)
    if "installed" not in installed.stdout:
        pytest.skip("dtenant installed by install.sh: no dpkg trigger")
    lab.ssh("rbcarol", "docker ps -q")
    _replace_binary(lab, "/usr/sbin/dockerd")
    assert _outdated(lab)["rbcarol"] == ["dockerd"]
    lab.sh("dpkg-trigger --no-await /usr/sbin/dockerd && dpkg --triggers-only --pending")
    assert _property(lab, "docker@rbcarol.service", "ActiveState") == "inactive"


def test_tenant_bridges_come_up_at_boot_without_networkd(
    lab: host.Lab, after_boot: AfterBoot
) -> None:
    """A host whose networkd is masked (its network is NetworkManager's, say), or a link
    networkd left unconfigured: the boot makes every tenant's bridge itself, and a daemon
    its socket alone starts (no login to make the bridge) finds it."""
    units = ["systemd-networkd.socket", "systemd-networkd.service"]
    lab.run(["systemctl", "mask", *units])
    try:
        journal = Journal(lab)
        lab.reboot()
        rows = json.loads(lab.run(["dtenant", "status", "--json"]).stdout)
        assert _bridges_without_address(lab, rows) == {}
        said = journal.since("networkd had not made it")
        bob = next(r for r in rows if r["user"] == "bob")
        assert f"bridge {bob['bridge']} created with " in said, said
        version = _as_root(lab, "bob", "version --format '{{.Server.Version}}'")
        assert version and _property(lab, "docker@bob.service", "ActiveState") == "active"
    finally:
        lab.run(["systemctl", "unmask", *units])
        lab.run(["systemctl", "start", *units])
        make_outside(lab)


def test_the_lab_reboots_with_its_units_stopped_cleanly(lab: host.Lab) -> None:
    """The lab's reboot is a clean shutdown: units' ExecStop= run, as on a host."""
    lab.sh("mkdir -p /etc/systemd/system && printf '[Service]\\nType=oneshot\\n"
           "RemainAfterExit=yes\\nExecStart=/bin/true\\nExecStop=/bin/sh -c \"date +%%s >"
           " /var/tmp/stopped-cleanly\"\\n[Install]\\nWantedBy=multi-user.target\\n' >"
           " /etc/systemd/system/lab-stop-probe.service && systemctl daemon-reload"
           " && systemctl enable --now lab-stop-probe.service"
           " && rm -f /var/tmp/stopped-cleanly")  # fmt: skip
    try:
        lab.reboot()
        assert lab.run(["cat", "/var/tmp/stopped-cleanly"], check=False).returncode == 0
    finally:
        lab.sh("systemctl disable --now lab-stop-probe.service; rm -f "
               + shlex.join(["/etc/systemd/system/lab-stop-probe.service",
                             "/var/tmp/stopped-cleanly"]), check=False)  # fmt: skip
        make_outside(lab)
