"""A user's name is only a name: never read as a uid by systemd or Docker, never a Docker
keyword; each such user has a daemon of its own, and nobody else reaches it."""

from __future__ import annotations

import json

from tests import testimage
from tests.lab import host
from tests.sandbox.conftest import load_image

IMAGE = testimage.IMAGE


def _uid(lab: host.Lab, user: str) -> int:
    return int(lab.run(["id", "-u", user]).stdout)


def _container_root(lab: host.Lab, user: str) -> int:
    lab.ssh(user, f"docker rm -f cr >/dev/null 2>&1; docker run -d --name cr {IMAGE} sleep 300")
    try:
        pid = lab.ssh(user, "docker inspect -f '{{.State.Pid}}' cr").stdout.strip()
        return int(lab.run(["stat", "-c", "%u", f"/proc/{pid}"]).stdout)
    finally:
        lab.ssh(user, "docker rm -f cr", check=False)


def _twice_with_a_restart(lab: host.Lab, user: str) -> None:
    """Two logins with a daemon restart between: the mapping holds each time."""
    load_image(lab, user)
    lab.run(["systemctl", "restart", f"docker@{user}.service"])
    assert lab.ssh(user, f"docker run --rm {IMAGE} echo ok").stdout.strip() == "ok"


def test_a_user_named_like_another_users_uid(lab: host.Lab, tenants: tuple[str, ...]) -> None:
    bob = _uid(lab, "bob")
    digits = str(bob)  # a user *named* "1002" (its own uid is another)
    lab.add_account(digits)
    own = _uid(lab, digits)
    assert own != bob
    _twice_with_a_restart(lab, digits)
    # The socket is the digit user's, not bob's.
    socket = f"/run/docker-{digits}.sock"
    assert int(lab.run(["stat", "-c", "%u", socket]).stdout) == own
    denied = lab.ssh("bob", f"docker -H unix://{socket} ps", check=False)
    assert denied.returncode != 0 and "permission denied" in denied.stderr
    # Neither container root is the other's uid, nor anyone's login.
    digit_root, bob_root = _container_root(lab, digits), _container_root(lab, "bob")
    assert len({digit_root, bob_root, own, bob}) == 4
    assert lab.run(["getent", "passwd", str(digit_root)]).stdout.startswith("_dtenant")
    # useradd gave the digit user a range keyed "1002": verify names it.
    report = json.loads(lab.run(["dtenant", "verify", "--json"], check=False).stdout)
    problems = " ".join(f["problem"] for f in report["findings"])
    assert f"user named '{digits}'" in problems
    # As verify advises: the entries keyed by their owner's uid, and verify is content.
    lab.run(["sed", "-i", f"s/^{digits}:/{own}:/", "/etc/subuid", "/etc/subgid"])
    report = json.loads(lab.run(["dtenant", "verify", "--json"], check=False).stdout)
    assert f"user named '{digits}'" not in " ".join(f["problem"] for f in report["findings"])


def test_a_user_named_default(lab: host.Lab, tenants: tuple[str, ...]) -> None:
    lab.add_account("default")
    _twice_with_a_restart(lab, "default")
    # Docker's keyword never reached it: no dockremap account, container root is the
    # tenant's own account.
    assert lab.run(["getent", "passwd", "dockremap"], check=False).returncode != 0
    root = _container_root(lab, "default")
    assert lab.run(["getent", "passwd", str(root)]).stdout.startswith("_dtenant")
    daemon = json.loads(lab.run(["cat", "/var/lib/dtenant/tenants/default/daemon.json"]).stdout)
    assert daemon["userns-remap"].startswith("_dtenant")
    assert lab.run(["test", "-S", "/run/docker-default.sock"]).returncode == 0
