"""Root reads only configuration root wrote, and daemon.extra cannot change how a tenant's
daemon runs containers (issue 11, finding 3): a drop-in a user could write, or `runtimes`
from anyone, once made the next daemon start run the user's program as uid 0. And what
dtenant keeps for each tenant is root's alone (finding 7)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.lab import host
from tests.sandbox.conftest import Journal

DROPINS = "/etc/dtenant/dtenant.toml.d"
# What the finding planted: every tenant's containers run by a program of alice's, as root.
RUNTIMES = (
    '[daemon.extra]\n"default-runtime" = "evil"\n'
    'runtimes = { evil = { path = "/home/{user}/evil" } }\n'
)


def _fresh(lab: host.Lab, user: str) -> str:
    """A new account, logged in once: provisioned, its stamp older than any drop-in."""
    lab.add_account(user)
    lab.ssh(user, "true")
    assert lab.run(["test", "-S", f"/run/docker-{user}.sock"], check=False).returncode == 0
    return user


def _daemon_json(lab: host.Lab, user: str) -> str:
    return lab.run(["cat", f"/var/lib/dtenant/tenants/{user}/daemon.json"]).stdout


@pytest.fixture
def dropin(lab: host.Lab) -> Iterator[str]:
    path = f"{DROPINS}/50-planted.toml"
    lab.run(["mkdir", "-p", DROPINS])
    yield path
    lab.run(["rm", "-f", path])


def _plant(lab: host.Lab, how: str, path: str, user: str) -> str:
    """The drop-in as a user could have left it; returns why it must be refused."""
    text = RUNTIMES.replace("{user}", user)
    if how == "symlink to the user's file":
        lab.ssh(user, "cat > ~/evil.toml", input=text)
        lab.run(["ln", "-s", f"/home/{user}/evil.toml", path])
        return f"{path}: is a symlink"
    lab.run(["tee", path], input=text)
    if how == "owned by the user":
        lab.run(["chown", f"{user}:{user}", path])
        return f"{path}: is owned by {user} (uid "
    mode, who = {
        "world-writable": ("0666", "group and others"),
        "group-writable": ("0664", "group"),
    }[how]
    lab.run(["chmod", mode, path])
    return f"{path}: is writable by {who} (mode {mode})"


@pytest.mark.parametrize(
    ("how", "user"),
    [("owned by the user", "plantown"), ("world-writable", "plantworld"),
     ("group-writable", "plantgroup"), ("symlink to the user's file", "plantlink")],
)  # fmt: skip
def test_a_dropin_a_user_could_write_is_refused(
    lab: host.Lab, dropin: str, how: str, user: str
) -> None:
    _fresh(lab, user)
    before = _daemon_json(lab, user)
    why = _plant(lab, how, dropin, user)
    journal = Journal(lab)
    lab.ssh(user, "true")  # the drop-in is newer than the stamp: the hook provisions
    logged = journal.since(why)
    assert why in logged, logged
    assert "not provisioned" in logged and "only root may write" in logged, logged
    assert _daemon_json(lab, user) == before  # nothing of it reached the daemon
    shown = lab.run(["dtenant", "config"], check=False)
    assert shown.returncode == 1
    assert shown.stderr.startswith(f"dtenant: {why}"), shown.stderr
    assert len(shown.stderr.strip().splitlines()) == 1, shown.stderr


def test_runtimes_are_refused_even_from_root(lab: host.Lab, dropin: str) -> None:
    user = _fresh(lab, "planted")
    before = _daemon_json(lab, user)
    lab.run(["tee", dropin], input=RUNTIMES.replace("{user}", user))  # root's own, 0644
    shown = lab.run(["dtenant", "config"], check=False)
    assert shown.returncode == 1
    refusal = f"dtenant: {dropin}: daemon.extra.default-runtime: not allowed: daemon.extra takes"
    assert shown.stderr.startswith(f"{refusal} only debug, "), shown.stderr
    assert len(shown.stderr.strip().splitlines()) == 1, shown.stderr
    journal = Journal(lab)
    lab.ssh(user, "true")
    assert "daemon.extra.default-runtime" in journal.since("daemon.extra.default-runtime")
    assert _daemon_json(lab, user) == before
    assert "runtimes" not in before


def test_an_allowed_extra_reaches_the_daemon(lab: host.Lab, dropin: str) -> None:
    user = _fresh(lab, "extra")
    lab.run(["tee", dropin], input='[daemon.extra]\n"max-concurrent-downloads" = 7\n')
    lab.ssh(user, "true")
    assert '"max-concurrent-downloads": 7' in _daemon_json(lab, user)
    lab.run(["rm", dropin])
    lab.ssh(user, "true")
    assert "max-concurrent-downloads" not in _daemon_json(lab, user)


def test_what_dtenant_keeps_for_a_tenant_is_root_s_alone(lab: host.Lab) -> None:
    user = _fresh(lab, "private")
    other = _fresh(lab, "nosy")
    lab.ssh(user, "docker version >/dev/null")  # the daemon ran: registry, stamps, activity
    tenant = f"/var/lib/dtenant/tenants/{user}"
    private = [f"{tenant}/daemon.json", f"{tenant}/docker/.dtenant-owner",
               "/var/lib/dtenant/registry.sqlite3", f"/run/dtenant/stamps/{user}",
               f"/run/dtenant/tenants/{user}/activity"]  # fmt: skip
    private += lab.sh("ls /var/lib/dtenant/registry.sqlite3-* 2>/dev/null || true").stdout.split()
    modes = lab.run(["stat", "-c", "%n %a %U:%G", *private]).stdout.splitlines()
    assert modes == [f"{path} 600 root:root" for path in private]
    peek = lab.ssh(other, f"cat {tenant}/daemon.json", check=False)
    assert peek.returncode != 0 and "Permission denied" in peek.stderr


def test_setup_narrows_what_earlier_versions_left_readable(lab: host.Lab) -> None:
    user = _fresh(lab, "upgraded")
    tenant = f"/var/lib/dtenant/tenants/{user}"
    earlier = [f"{tenant}/daemon.json", f"{tenant}/docker/.dtenant-owner",
               "/var/lib/dtenant/registry.sqlite3"]  # fmt: skip
    lab.run(["chmod", "0644", *earlier])  # as every version before this one wrote them
    said = lab.run(["dtenant", "setup"]).stdout
    assert "tenant files made readable by root only" in said
    assert lab.run(["stat", "-c", "%a", *earlier]).stdout.split() == ["600"] * len(earlier)
