"""A docker.io or containerd update moves a busy daemon to the new binaries without
stopping its containers (issue 16; dtenant_session/move.py), as live-restore does for a
plain docker.service; a later stop still stops them and leaves nothing behind."""

from __future__ import annotations

import json
import shlex
import time
from collections.abc import Iterator

import pytest

from tests import testimage
from tests.lab import host
from tests.sandbox.conftest import Journal
from tests.sandbox.test_network import UPLINK, _from_outside

IMAGE = testimage.IMAGE
HELLO = "hello from dtenant"
PORT = 8181
USER = "alice"


def _replace_binary(lab: host.Lab, path: str) -> None:
    """What dpkg does to a binary it updates: a new file renamed over the old one."""
    lab.sh(f"cp -p {path} {path}.dpkg-new && mv {path}.dpkg-new {path}")


def _update(lab: host.Lab) -> None:
    _replace_binary(lab, "/usr/sbin/dockerd")
    _replace_binary(lab, "/usr/bin/containerd")


def _outdated(lab: host.Lab) -> list[str]:
    rows = json.loads(lab.run(["dtenant", "status", "--json"]).stdout)
    return next(list(r.get("outdated", ["(not shown)"])) for r in rows if r["user"] == USER)


def _docker(lab: host.Lab, args: str, *, check: bool = True) -> str:
    """docker as root on the tenant's socket (no login on the way)."""
    return lab.sh(f"docker -H unix:///run/docker-{USER}.sock {args}", check=check).stdout.strip()


def _state(lab: host.Lab, name: str) -> tuple[bool, int, str]:
    template = "{{.State.Running}} {{.State.Pid}} {{.State.StartedAt}}"
    running, pid, started = _docker(lab, f"inspect -f '{template}' {name}").split()
    return running == "true", int(pid), started


def _slice_processes(lab: host.Lab) -> list[str]:
    """Every process left in the tenant's slice, with its cgroup, but its authorization
    plugin's (a unit of its own, which stays)."""
    group = lab.run(["systemctl", "show", "-p", "ControlGroup", "--value",
                     f"dtenant-{USER}.slice"]).stdout.strip()  # fmt: skip
    found = lab.sh(
        f"for d in /sys/fs/cgroup/systemd{group} /sys/fs/cgroup/unified{group}"
        f" /sys/fs/cgroup{group}; do [ -d $d ] || continue; find $d -name cgroup.procs"
        ' | while read f; do for p in $(cat $f); do echo "$p $(cat /proc/$p/comm'
        ' 2>/dev/null) $f"; done; done; break; done'
    ).stdout.split("\n")[:-1]
    return [line for line in found if "dtenant-authz@" not in line]


@pytest.fixture
def busy(lab: host.Lab, tenants: tuple[str, ...], outside: str) -> Iterator[None]:
    """alice's daemon runs two containers that no restart policy would bring back: one
    with a published port."""
    lab.ssh(USER, "docker rm -f keep web >/dev/null 2>&1; "
            f"docker run -d --restart=no --name keep {IMAGE}"
            " sh -c 'echo kept-log; exec sleep 100000' >/dev/null && "
            f"docker run -d --restart=no --name web -p {PORT}:80 {IMAGE} "
            "httpd -f -p 80 -h /var/www >/dev/null")  # fmt: skip
    yield
    lab.ssh(USER, "docker rm -f keep web later >/dev/null 2>&1", check=False)


def test_an_update_moves_a_busy_daemon_without_stopping_its_containers(
    lab: host.Lab, busy: None
) -> None:
    before = {name: _state(lab, name) for name in ("keep", "web")}
    assert all(running for running, _pid, _at in before.values())
    assert _from_outside(lab, f"http://{UPLINK}:{PORT}/") == HELLO
    _update(lab)
    assert _outdated(lab) == ["containerd", "dockerd"]

    moved = lab.run(["dtenant", "restart", "--outdated"]).stdout
    assert f"{USER}: moved" in moved, moved
    assert {name: _state(lab, name) for name in before} == before, moved
    assert _outdated(lab) == []
    assert _docker(lab, "exec keep echo exec-ok") == "exec-ok"
    assert _from_outside(lab, f"http://{UPLINK}:{PORT}/") == HELLO
    assert _docker(lab, "logs keep") == "kept-log"
    assert lab.ssh(USER, f"docker run --rm {IMAGE} echo new-ok").stdout.strip() == "new-ok"

    # A second update: the container started since moves too, with the first two.
    lab.ssh(USER, f"docker run -d --restart=no --name later {IMAGE} sleep 100000 >/dev/null")
    before["later"] = _state(lab, "later")
    _update(lab)
    moved = lab.run(["dtenant", "restart", "--outdated"]).stdout
    assert f"{USER}: moved" in moved, moved
    assert {name: _state(lab, name) for name in before} == before, moved
    assert _docker(lab, "exec later echo exec-ok") == "exec-ok"

    # A stop is still a stop: every container, every held shim, nothing left (of its own:
    # other tenants' moved daemons of the session may hold theirs).
    lab.run(["systemctl", "stop", f"docker@{USER}.service"])
    assert _slice_processes(lab) == []
    held = lab.run(["systemctl", "list-units", "--all", "--no-legend", f"dtenant-moved-{USER}-*"])
    assert held.stdout.strip() == ""
    assert _docker(lab, "ps -q") == ""  # the socket starts the daemon again
    assert _docker(lab, "inspect -f '{{.State.Running}}' keep web later").split() == ["false"] * 3


def test_a_moved_daemon_that_crashes_leaves_nothing_behind(lab: host.Lab, busy: None) -> None:
    """As after any crash, its containers stop (their shims are no longer its own); the
    held ones too, and the daemon that comes back starts afresh."""
    _update(lab)
    moved = lab.run(["dtenant", "restart", "--outdated"]).stdout
    assert f"{USER}: moved" in moved, moved
    lab.sh(f"kill -9 $(systemctl show -p MainPID --value docker@{USER}.service)")
    lab.sh(f"for i in $(seq 100); do systemctl is-active -q docker@{USER}.service"
           f" && [ -z \"$(systemctl list-units --all --no-legend 'dtenant-moved-{USER}-*')\" ]"
           " && break; sleep 0.2; done")  # fmt: skip
    assert lab.run(["systemctl", "list-units", "--all", "--no-legend", f"dtenant-moved-{USER}-*"]
                   ).stdout.strip() == ""  # fmt: skip
    assert _docker(lab, "ps -q") == ""
    assert lab.ssh(USER, f"docker run --rm {IMAGE} echo new-ok").stdout.strip() == "new-ok"
    daemon = lab.run(["systemctl", "show", "-p", "MainPID", "--value",
                      f"docker@{USER}.service"]).stdout.strip()  # fmt: skip
    assert (
        lab.sh(f"readlink /proc/{daemon}/ns/mnt").stdout != lab.sh("readlink /proc/1/ns/mnt").stdout
    )


def test_a_daemon_that_cannot_move_safely_is_named_and_kept(lab: host.Lab, busy: None) -> None:
    """Anything unexpected before the stop leaves the daemon and its containers as they
    were, and says so (here: live-restore off in its daemon.json)."""
    config = f"/var/lib/dtenant/tenants/{USER}/daemon.json"
    original = lab.run(["cat", config]).stdout
    before = {name: _state(lab, name) for name in ("keep", "web")}
    pid = lab.run(["systemctl", "show", "-p", "MainPID", "--value",
                   f"docker@{USER}.service"]).stdout.strip()  # fmt: skip
    journal = Journal(lab)
    lab.run(["python3", "-c", "import json, sys; p = sys.argv[1]; s = json.load(open(p)); "
             "s['live-restore'] = False; json.dump(s, open(p, 'w'))", config])  # fmt: skip
    try:
        _update(lab)
        moved = lab.run(["dtenant", "restart", "--outdated"]).stdout
    finally:
        lab.run(["tee", config], input=original)
    assert f"{USER}: kept" in moved and "live-restore is off" in moved, moved
    assert "not moved from the outdated" in journal.since("not moved from the outdated")
    assert lab.run(["systemctl", "show", "-p", "MainPID", "--value",
                    f"docker@{USER}.service"]).stdout.strip() == pid  # fmt: skip
    assert {name: _state(lab, name) for name in before} == before
    assert _outdated(lab) == ["containerd", "dockerd"]


def test_a_daemon_stop_gives_its_containers_their_sigterm(lab: host.Lab, tenants: object) -> None:
    """As `docker stop` and a host shutdown with docker.service do: the daemon stops its
    containers through its containerd, which must still be there (not killed with it)."""
    trap = "trap 'echo got-term; exit 0' TERM; while :; do sleep 0.2; done"
    lab.ssh(USER, f"docker rm -f trap >/dev/null 2>&1; docker run -d --name trap {IMAGE}"
            f" sh -c {shlex.quote(trap)} >/dev/null")  # fmt: skip
    try:
        started = time.monotonic()
        lab.run(["systemctl", "stop", f"docker@{USER}.service"])
        seconds = time.monotonic() - started
        assert _docker(lab, "logs trap") == "got-term"
        assert _docker(lab, "inspect -f '{{.State.ExitCode}}' trap") == "0"
        assert seconds < 8, seconds  # not docker's 10 s wait, then SIGKILL
    finally:
        lab.ssh(USER, "docker rm -f trap >/dev/null 2>&1", check=False)
