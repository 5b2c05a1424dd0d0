"""The administrator's tools on a live host: status, logs, restart, disable and enable,
and clear errors for users who do not exist."""

from __future__ import annotations

import json
import time

import pytest

from tests import testimage
from tests.lab import host

IMAGE = testimage.IMAGE


@pytest.fixture(scope="module")
def alice(lab: host.Lab, tenants: tuple[str, ...]) -> str:
    return "alice"


@pytest.mark.parametrize(
    ("argv", "words"),
    [(["status", "nosuchuser"], "'nosuchuser' is not a registered tenant"),
     (["check-login", "nosuchuser"], "no such user 'nosuchuser'"),
     (["logs", "nosuchuser"], "'nosuchuser' is not a registered tenant"),
     (["restart", "nosuchuser"], "'nosuchuser' is not a registered tenant"),
     (["disable", "nosuchuser"], "nosuchuser"),
     (["enable", "alice"], "'alice' is not disabled")],
)  # fmt: skip
def test_unknown_users_get_one_clear_line_and_a_failure(
    lab: host.Lab, alice: str, argv: list[str], words: str
) -> None:
    result = lab.run(["dtenant", *argv], check=False)
    assert result.returncode == 1, result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0], result.stderr


def test_status_shows_memory_and_cpu_of_the_tenants_slice(lab: host.Lab, alice: str) -> None:
    lab.ssh("alice", f"docker run --rm {IMAGE} true")
    deadline = time.monotonic() + 20
    while True:  # systemd accounts a slice's CPU time once the slice has used some
        (row,) = json.loads(lab.run(["dtenant", "status", "alice", "--json"]).stdout)
        if row["cpu_seconds"] is not None or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert row["daemon_state"] == "running"
    assert row["cpu_seconds"] is not None and row["cpu_seconds"] >= 0
    unified = "memory" in lab.run(["cat", "/sys/fs/cgroup/cgroup.controllers"],
                                  check=False).stdout  # fmt: skip
    if unified:  # systemd accounts memory on the unified hierarchy (Debian 12's default)
        assert row["memory_bytes"] > 20 << 20  # dockerd and its containerd at least
    table = lab.run(["dtenant", "status", "alice"]).stdout.splitlines()
    assert "MEMORY" in table[0] and "CPU" in table[0]


def test_logs_show_the_daemon_and_what_dtenant_did(lab: host.Lab, alice: str) -> None:
    logs = lab.run(["dtenant", "logs", "alice", "-n", "2000"]).stdout
    assert "dockerd" in logs or "level=info" in logs, logs[-2000:]
    assert "dtenant" in logs


def test_restart_brings_back_containers_with_restart_policies(lab: host.Lab, alice: str) -> None:
    lab.ssh("alice", f"docker rm -f keeper >/dev/null 2>&1; docker run -d --name keeper "
            f"--restart=always {IMAGE} sleep 600")  # fmt: skip
    before = lab.run(["systemctl", "show", "-p", "MainPID", "--value", "docker@alice.service"])
    try:
        lab.run(["dtenant", "restart", "alice"], timeout=180)
        after = lab.run(["systemctl", "show", "-p", "MainPID", "--value", "docker@alice.service"])
        assert after.stdout.strip() not in ("0", before.stdout.strip())
        state = lab.ssh("alice", "docker inspect -f '{{.State.Running}}' keeper").stdout.strip()
        assert state == "true"
    finally:
        lab.ssh("alice", "docker rm -f keeper", check=False)


def test_a_disabled_user_stays_out_across_logins_and_learns_why(lab: host.Lab, alice: str) -> None:
    lab.ssh("alice", "docker volume create keptvol >/dev/null")
    try:
        lab.run(["dtenant", "disable", "alice", "--reason", "over quota, see the wiki"],
                timeout=180)  # fmt: skip
        assert lab.run(["systemctl", "is-active", "docker@alice.service"],
                       check=False).stdout.strip() != "active"  # fmt: skip
        said, deadline = "", time.monotonic() + 30
        while "over quota, see the wiki" not in said and time.monotonic() < deadline:
            refused = lab.ssh("alice", "docker ps", check=False)  # a login each time
            assert refused.returncode != 0
            said = refused.stderr
            time.sleep(1)
        assert "the administrator disabled this tenant (over quota, see the wiki" in said
        assert lab.run(["systemctl", "is-active", "docker@alice.service"],
                       check=False).stdout.strip() != "active"  # fmt: skip
    finally:
        lab.run(["dtenant", "enable", "alice"], timeout=180)
    assert "keptvol" in lab.ssh("alice", "docker volume ls -q").stdout  # data kept
    lab.ssh("alice", "docker volume rm keptvol", check=False)


def test_remove_says_how_to_keep_a_user_out(lab: host.Lab) -> None:
    lab.add_account("leaver")
    lab.ssh("leaver", "true")
    out = lab.run(["dtenant", "remove", "leaver"], timeout=180).stdout
    assert "`dtenant disable leaver` keeps them out" in out
