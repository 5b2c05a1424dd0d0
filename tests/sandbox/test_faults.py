"""Faults and bad input: in every case a login still succeeds within the hook's time limit,
the journal names the cause, nothing a user had is lost, and the next login after the
fault is gone converges."""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterator

import pytest

from tests import testimage
from tests.lab import host
from tests.sandbox.conftest import Journal, load_image

IMAGE = testimage.IMAGE
TIME_LIMIT = 10.0  # hook.time_limit's default
_numbers = itertools.count()


def new_user(lab: host.Lab, prefix: str = "fault") -> str:
    user = f"{prefix}{next(_numbers)}"
    lab.add_account(user)
    return user


def login(lab: host.Lab, user: str) -> float:
    """An SSH login that must succeed within the time limit (plus SSH itself)."""
    started = time.monotonic()
    assert lab.ssh(user, "echo in", timeout=60).stdout.strip() == "in"
    elapsed = time.monotonic() - started
    assert elapsed < TIME_LIMIT + 5, elapsed
    return elapsed


def provisioned(lab: host.Lab, user: str) -> bool:
    return lab.run(["test", "-S", f"/run/docker-{user}.sock"], check=False).returncode == 0


def converges(lab: host.Lab, user: str) -> None:
    """The next login after the fault: provisioned, and docker works."""
    login(lab, user)
    assert provisioned(lab, user)
    assert lab.ssh(user, "docker info --format '{{.DockerRootDir}}'").stdout.strip()


@pytest.fixture
def dropin(lab: host.Lab) -> Iterator[str]:
    path = "/etc/dtenant/dtenant.toml.d/70-fault.toml"
    lab.run(["mkdir", "-p", "/etc/dtenant/dtenant.toml.d"])
    yield path
    lab.run(["rm", "-f", path])


def test_logind_stopped(lab: host.Lab, tenants: tuple[str, ...]) -> None:
    user = new_user(lab)
    lab.run(["systemctl", "mask", "--runtime", "--now", "systemd-logind"])
    try:
        login(lab, user)
        assert provisioned(lab, user)  # provisioning does not need logind
        decisions = json.loads(lab.run(["dtenant", "reap", "--dry-run", "--json"]).stdout)
        running = [d for d in decisions if d["action"] != "skip"]
        assert running
        assert all(d["action"] == "keep" for d in running)  # nobody's sessions are known
        assert all("sessions unknown" in " ".join(d["reasons"]) for d in running)
    finally:
        lab.run(["systemctl", "unmask", "--runtime", "systemd-logind"])
        lab.run(["systemctl", "start", "systemd-logind"])
    converges(lab, user)


def test_networkd_stopped(lab: host.Lab) -> None:
    user = new_user(lab)
    units = ["systemd-networkd.socket", "systemd-networkd.service"]
    lab.run(["systemctl", "mask", "--runtime", "--now", *units])
    try:
        login(lab, user)
        assert provisioned(lab, user)  # the bridge is made without networkd
        load_image(lab, user)
        assert lab.ssh(user, f"docker run --rm {IMAGE} echo up").stdout.strip() == "up"
    finally:
        lab.run(["systemctl", "unmask", "--runtime", *units])
        lab.run(["systemctl", "start", *units])
    converges(lab, user)


def test_the_hosts_containerd_stopped(lab: host.Lab) -> None:
    user = new_user(lab)
    login(lab, user)
    load_image(lab, user)
    system = lab.run(["systemctl", "is-active", "docker.service"], check=False).stdout.strip()
    lab.run(["systemctl", "stop", f"docker@{user}.service", "containerd.service"])
    try:
        # A tenant's daemon runs a containerd of its own: the host's is not needed.
        assert lab.ssh(user, f"docker run --rm {IMAGE} echo up").stdout.strip() == "up"
        state = lab.run(["systemctl", "is-active", "containerd"], check=False).stdout.strip()
        assert state == "inactive"
    finally:  # the host as it was: its containerd, and the system daemon bound to it
        lab.run(["systemctl", "start", "containerd.service"])
        if system == "active":
            lab.run(["systemctl", "restart", "docker.service"])


def test_a_tenant_daemon_restart_leaves_the_hosts_docker0_alone(lab: host.Lab) -> None:
    user = new_user(lab)
    login(lab, user)
    load_image(lab, user)
    lab.run(["systemctl", "start", "docker.service"])
    assert lab.run(["ip", "link", "show", "docker0"], check=False).returncode == 0
    for _ in range(2):  # dockerd deletes docker0 at a restart when live-restore is off
        lab.run(["systemctl", "restart", f"docker@{user}.service"])
    assert lab.run(["ip", "link", "show", "docker0"], check=False).returncode == 0


def test_registry_locked_longer_than_the_time_limit(lab: host.Lab) -> None:
    user = new_user(lab)
    journal = Journal(lab)
    hold = ("import sqlite3, time; db = sqlite3.connect('/var/lib/dtenant/registry.sqlite3', "
            "isolation_level=None); db.execute('BEGIN IMMEDIATE'); time.sleep(25)")  # fmt: skip
    lab.run(["systemd-run", "--unit=hold-registry", "/usr/bin/python3", "-c", hold])
    try:
        time.sleep(0.5)
        login(lab, user)
        assert "locked" in journal.since("locked")
        assert not provisioned(lab, user)
    finally:
        lab.run(["systemctl", "stop", "hold-registry"], check=False)
    converges(lab, user)


def test_corrupt_registry_is_detected_and_rebuilt(lab: host.Lab, tenants: tuple[str, ...]) -> None:
    # A removed tenant whose data stays, and whose slot the next tenant is given: its
    # files on disk must not take the slot back in a rebuild.
    gone = new_user(lab, "keptdata")
    login(lab, gone)
    lab.run(["dtenant", "remove", gone], timeout=180)
    reuser = new_user(lab, "reuser")
    login(lab, reuser)
    before = {r["user"]: (r["slot"], r["subnet"])
              for r in json.loads(lab.run(["dtenant", "status", "--json"]).stdout)}  # fmt: skip
    user = new_user(lab)
    journal = Journal(lab)
    lab.run(["sh", "-c", "cd /var/lib/dtenant && rm -f registry.sqlite3-wal registry.sqlite3-shm"
             " && head -c 8192 /dev/urandom > registry.sqlite3"])  # fmt: skip
    login(lab, "alice")  # a provisioned tenant: the hot path needs no registry
    assert lab.ssh("alice", "docker ps -q").returncode == 0
    login(lab, user)
    said = journal.since("corrupt")
    assert "corrupt" in said
    assert "dtenant registry rebuild" in said
    status = lab.run(["dtenant", "status"], check=False)
    assert status.returncode == 1
    assert "is corrupt" in status.stderr
    assert "Traceback" not in status.stderr
    rebuilt = lab.run(["dtenant", "registry", "rebuild"], check=False)
    assert "moved to /var/lib/dtenant/registry.sqlite3.broken-" in rebuilt.stdout
    kept = [line for line in rebuilt.stdout.splitlines() if "data kept by `dtenant remove`" in line]
    assert kept and gone in kept[0].split(": ", 1)[1].split(", "), rebuilt.stdout
    after = {r["user"]: (r["slot"], r["subnet"])
             for r in json.loads(lab.run(["dtenant", "status", "--json"]).stdout)}  # fmt: skip
    assert {u: v for u, v in after.items() if u in before} == before
    converges(lab, user)
    assert lab.run(["dtenant", "registry", "check"]).returncode == 0
    # Each tenant got its own container ids back, not those of a tenant of 0.1.
    report = json.loads(lab.run(["dtenant", "verify", "--json"], check=False).stdout)
    assert not [f for f in report["findings"] if f["check"] == "ids" and f["tenant"] in before]


def test_disk_full_on_the_state_directory(lab: host.Lab) -> None:
    user = new_user(lab)
    journal = Journal(lab)
    full = ("mkdir -p /run/full && mount -t tmpfs -o size=2M tmpfs /run/full"
            " && cp -a /var/lib/dtenant/registry.sqlite3* /run/full/"
            " && (head -c 4M /dev/zero > /run/full/filler || true)"
            " && mount --bind /run/full /var/lib/dtenant")  # fmt: skip
    lab.sh(full)
    try:
        login(lab, user)
        said = journal.since("provisioning failed")
        assert "no space left on /var/lib/dtenant" in said, said
        assert not provisioned(lab, user)
    finally:
        lab.sh("umount /var/lib/dtenant; umount /run/full")
    converges(lab, user)


def test_disk_full_on_run(lab: host.Lab) -> None:
    user = new_user(lab)
    journal = Journal(lab)
    lab.run(["mount", "-t", "tmpfs", "-o", "size=4k,nr_inodes=1", "tmpfs", "/run/dtenant/locks"])
    try:
        login(lab, user)
        assert "No space left on device" in journal.since("No space left")
    finally:
        lab.run(["umount", "/run/dtenant/locks"])
    converges(lab, user)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("[hook\n", ["70-fault.toml", "not valid TOML"]),
        ("[hook]\ntime_limt = 3\n", ["70-fault.toml", "hook.time_limt", "unknown key"]),
        ('[network]\nbridge_prefix = "24"\n', ["70-fault.toml", "network.bridge_prefix",
                                               "must be an integer"]),
    ],
)  # fmt: skip
def test_malformed_configuration(lab: host.Lab, dropin: str, text: str, words: list[str]) -> None:
    user = new_user(lab)
    journal = Journal(lab)
    lab.run(["tee", dropin], input=text)
    login(lab, user)
    login(lab, "alice")  # provisioned users: their stamp is older than the config now
    assert lab.ssh("alice", "docker ps -q").returncode == 0
    said = journal.since("configuration error")
    for word in words:
        assert word in said, said
    shown = lab.run(["dtenant", "config"], check=False)
    assert shown.returncode == 1
    assert all(word in shown.stderr for word in words)
    assert "Traceback" not in shown.stderr
    lab.run(["rm", "-f", dropin])
    converges(lab, user)


def test_hook_killed_in_the_middle_of_provisioning(lab: host.Lab) -> None:
    users = [new_user(lab, "killed") for _ in range(5)]
    for index, user in enumerate(users):
        unit = f"provision-{user}"
        lab.run(["systemd-run", f"--unit={unit}", f"--setenv=PAM_USER={user}",
                 "--setenv=PAM_TYPE=open_session",
                 "/usr/lib/dtenant/provision-at-login"])  # fmt: skip
        time.sleep(0.03 + 0.05 * index)
        lab.run(["systemctl", "kill", "--signal=KILL", unit], check=False)
    # Killed on purpose: their failed state is not the host's.
    lab.run(["systemctl", "reset-failed", *(f"provision-{user}" for user in users)], check=False)
    for user in users:
        converges(lab, user)
    assert lab.run(["dtenant", "registry", "check"]).returncode == 0
    report = json.loads(lab.run(["dtenant", "verify", "--json"], check=False).stdout)
    assert [f for f in report["findings"] if f["tenant"] in users] == []


def test_crash_looping_daemon_tells_its_user_what_to_do(lab: host.Lab) -> None:
    user = new_user(lab)
    login(lab, user)
    lab.run(["systemctl", "stop", f"docker@{user}.service"])
    lab.run(["tee", f"/var/lib/dtenant/tenants/{user}/daemon.json"],
            input='{"bridge": "none", "not-an-option": true}')  # fmt: skip
    said = ""
    deadline = time.monotonic() + 30
    while "Error response from daemon: dtenant:" not in said and time.monotonic() < deadline:
        said = lab.ssh(user, "docker ps", check=False).stderr
        time.sleep(1)
    assert "your Docker daemon cannot start" in said
    assert "Ask your administrator" in said
    assert "not-an-option" in said or "refusing" in said, said
    assert lab.ssh("alice", "docker ps -q").returncode == 0  # nobody else noticed
    lab.run(["dtenant", "provision", user])  # the administrator puts it right
    assert lab.ssh(user, "docker ps -q").returncode == 0


def test_dockerd_killed_with_containers_running(lab: host.Lab) -> None:
    user = new_user(lab)
    login(lab, user)
    load_image(lab, user)
    lab.ssh(user, f"docker run -d --name keep --restart always {IMAGE} sleep 600")
    before = lab.ssh(user, "docker inspect -f '{{.State.Pid}}' keep").stdout.strip()
    lab.run(["systemctl", "kill", "--kill-who=main", "--signal=KILL", f"docker@{user}.service"])
    time.sleep(1)
    assert lab.run(["test", "-S", f"/run/docker-{user}.sock"]).returncode == 0
    # The daemon's own containerd and shims went with it; the daemon comes back and its
    # restart policy brings the container back (a new process: no live-restore).
    deadline = time.monotonic() + 30
    while lab.ssh(user, "docker ps --format '{{.Names}}'").stdout.split() != ["keep"]:
        assert time.monotonic() < deadline, "the container did not come back"
        time.sleep(1)
    assert lab.ssh(user, "docker inspect -f '{{.State.Pid}}' keep").stdout.strip() != before
    assert len(lab.run(["pgrep", "-f", "sleep 600"], check=False).stdout.split()) == 1


def _log_out_everywhere(lab: host.Lab, user: str) -> None:
    """No process of the user left (logind ends its user manager asynchronously), as
    userdel and usermod -l require."""
    lab.run(["loginctl", "terminate-user", user], check=False)
    deadline = time.monotonic() + 20
    while lab.run(["pgrep", "-u", user], check=False).returncode == 0:
        assert time.monotonic() < deadline, f"processes of {user} survive"
        lab.run(["pkill", "-KILL", "-u", user], check=False)
        time.sleep(0.2)


def test_a_deleted_user(lab: host.Lab) -> None:
    user = new_user(lab)
    login(lab, user)
    lab.ssh(user, "docker volume create kept-volume")
    _log_out_everywhere(lab, user)
    lab.run(["userdel", user])
    report = json.loads(lab.run(["dtenant", "verify", "--json"], check=False).stdout)
    assert any(f["tenant"] == user and "no longer exists" in f["problem"]
               for f in report["findings"])  # fmt: skip
    assert lab.ssh("alice", "docker ps -q").returncode == 0
    assert user in lab.run(["dtenant", "status"]).stdout
    lab.run(["dtenant", "remove", user])
    assert lab.run(["test", "-d", f"/var/lib/dtenant/tenants/{user}/docker"]).returncode == 0


def _uid(lab: host.Lab, user: str) -> int:
    return int(lab.run(["id", "-u", user]).stdout)


def _rename_account(lab: host.Lab, old: str, new: str, *options: str) -> None:
    """usermod -l (and whatever else `options` change), with old's SSH key for new."""
    _log_out_everywhere(lab, old)
    lab.run(["usermod", "-l", new, *options, old])
    lab.run(["cp", f"/root/.ssh/dtenant-lab/{old}", f"/root/.ssh/dtenant-lab/{new}"])


def _registered_home(lab: host.Lab, user: str) -> str:
    script = ("from dtenant_session.registry import Registry\n"
              f"print(Registry().get({user!r}).home)")  # fmt: skip
    return lab.run(["python3", "-c", script]).stdout.strip()


def test_a_renamed_user_keeps_everything(lab: host.Lab) -> None:
    """Same uid, same home, old name gone: a certain rename, carried over at login."""
    old = new_user(lab, "before")
    login(lab, old)
    load_image(lab, old)
    lab.ssh(old, "docker volume create renamed-volume")
    slot = json.loads(lab.run(["dtenant", "status", old, "--json"]).stdout)[0]["slot"]
    # A tenant of version 0.1 recorded no home: its next provisioning records it.
    lab.run(["python3", "-c", "from dtenant_session.registry import Registry\n"
             f"Registry().set_home({old!r}, '')"])  # fmt: skip
    lab.run(["rm", f"/run/dtenant/stamps/{old}"])
    login(lab, old)
    assert _registered_home(lab, old) == f"/home/{old}"
    new = old.replace("before", "after")
    _rename_account(lab, old, new)  # the home stays /home/before...
    converges(lab, new)
    assert "renamed-volume" in lab.ssh(new, "docker volume ls -q").stdout
    assert lab.ssh(new, f"docker images -q {IMAGE}").stdout.strip()
    rows = json.loads(lab.run(["dtenant", "status", "--json"]).stdout)
    assert [r["slot"] for r in rows if r["user"] == new] == [slot]
    assert not [r for r in rows if r["user"] == old]


def _recycle_uid(lab: host.Lab, old: str, uid: int, new: str) -> None:
    """old logged out, deleted (her daemon and containers left running), and her uid
    given to a new account."""
    lab.run(["loginctl", "terminate-user", old], check=False)
    deadline = time.monotonic() + 20
    while lab.run(["systemctl", "is-active", f"user@{uid}.service"], check=False).returncode == 0:
        assert time.monotonic() < deadline, f"user@{uid}.service survives"
        time.sleep(0.2)
    lab.run(["userdel", "-f", old])  # -f: whatever still runs with her uid
    lab.run(["useradd", "-u", str(uid), "--badname", "-m", "-s", "/bin/bash", new])
    lab.authorize_key(new)


def test_a_recycled_uid_gets_nothing_of_the_deleted_user(lab: host.Lab) -> None:
    """userdel without `dtenant remove`, then a new account with the same uid: it logs in
    to a tenant of its own; the old tenant is orphaned, unreachable, kept and reported."""
    carol = new_user(lab, "carol")
    uid = _uid(lab, carol)
    login(lab, carol)
    load_image(lab, carol)
    lab.ssh(carol, "docker volume create carols-volume")
    lab.ssh(carol, f"docker run -d --name carols-container {IMAGE} sleep 600")
    dave = carol.replace("carol", "dave")
    _recycle_uid(lab, carol, uid, dave)
    journal = Journal(lab)
    converges(lab, dave)
    assert "carols-volume" not in lab.ssh(dave, "docker volume ls -q").stdout
    assert "carols-container" not in lab.ssh(dave, "docker ps -a --format '{{.Names}}'").stdout
    assert lab.ssh(dave, f"docker -H unix:///run/docker-{carol}.sock ps -a",
                   check=False).returncode != 0  # fmt: skip
    said = journal.since("dtenant rename")
    assert f"{carol!r} (uid {uid})" in said and f"{dave!r} (uid {uid})" in said, said
    assert f"dtenant rename {carol} NEW" in said and f"dtenant remove {carol}" in said, said
    # Even a socket started by hand cannot start the old daemon for the new account.
    refused = lab.run(["/usr/lib/dtenant/check-tenant", carol], check=False)
    assert refused.returncode == 1 and "no longer exists" in refused.stderr, refused.stderr
    report = json.loads(lab.run(["dtenant", "verify", "--json"], check=False).stdout)
    found = [f for f in report["findings"] if f["tenant"] == carol and f["check"] == "account"]
    assert found and dave in found[0]["problem"], report["findings"]
    assert f"dtenant rename {carol} NEW" in found[0]["advice"]
    # Kept, for the administrator to decide.
    assert lab.run(["test", "-d", f"/var/lib/dtenant/tenants/{carol}/docker"]).returncode == 0
    lab.run(["dtenant", "remove", carol, "--purge", "--yes"])


def test_the_reaper_isolates_an_orphan_before_its_new_account_logs_in(lab: host.Lab) -> None:
    old = new_user(lab, "early")
    uid = _uid(lab, old)
    login(lab, old)
    assert lab.ssh(old, "docker ps -q").returncode == 0  # her daemon runs
    new = old.replace("early", "late")
    _recycle_uid(lab, old, uid, new)
    planned = json.loads(lab.run(["dtenant", "reap", "--dry-run", "--json"]).stdout)
    assert [d["action"] for d in planned if d["user"] == old] == ["isolate"]
    assert provisioned(lab, old)  # a dry run changes nothing
    journal = Journal(lab)
    lab.run(["dtenant", "reap"])
    assert not provisioned(lab, old)
    assert f"{new!r} (uid {uid})" in journal.since("is orphaned")
    enabled = lab.run(["systemctl", "is-enabled", f"docker@{old}.socket"], check=False)
    assert enabled.stdout.strip() == "disabled"
    deadline = time.monotonic() + 30
    while lab.run(["systemctl", "is-active", f"docker@{old}.service"], check=False).returncode == 0:
        assert time.monotonic() < deadline, "the orphan's daemon still runs"
        time.sleep(0.5)
    # Found once: the next pass leaves it alone.
    again = json.loads(lab.run(["dtenant", "reap", "--dry-run", "--json"]).stdout)
    assert [d for d in again if d["user"] == old and d["action"] == "isolate"] == []
    converges(lab, new)  # and the new account gets a tenant of its own
    assert lab.ssh(new, f"docker -H unix:///run/docker-{old}.sock ps", check=False).returncode != 0
    lab.run(["dtenant", "remove", old, "--purge", "--yes"])


def test_a_rename_with_another_home_needs_the_administrator(lab: host.Lab) -> None:
    """Same uid but a new home: not certainly the same person, so a fresh tenant; then
    `dtenant rename OLD NEW` carries the data over."""
    old = new_user(lab, "moving")
    login(lab, old)
    load_image(lab, old)
    lab.ssh(old, "docker volume create moved-volume")
    slot = json.loads(lab.run(["dtenant", "status", old, "--json"]).stdout)[0]["slot"]
    new = old.replace("moving", "moved")
    _rename_account(lab, old, new, "-d", f"/home/{new}", "-m")
    converges(lab, new)
    assert "moved-volume" not in lab.ssh(new, "docker volume ls -q").stdout
    refused = lab.run(["dtenant", "rename", old, new], check=False)
    assert refused.returncode == 1
    assert f"dtenant remove {new} --purge" in refused.stderr, refused.stderr
    lab.run(["dtenant", "remove", new, "--purge", "--yes"])
    lab.run(["dtenant", "rename", old, new])
    converges(lab, new)
    assert "moved-volume" in lab.ssh(new, "docker volume ls -q").stdout
    assert lab.ssh(new, f"docker images -q {IMAGE}").stdout.strip()
    rows = json.loads(lab.run(["dtenant", "status", "--json"]).stdout)
    assert [r["slot"] for r in rows if r["user"] == new] == [slot]
    assert not [r for r in rows if r["user"] == old]
    assert _registered_home(lab, new) == f"/home/{new}"


def test_rename_refuses_what_is_not_a_rename(lab: host.Lab) -> None:
    lab.ssh("alice", "true")
    for argv, words in (
        (["alice", "bob"], "alice is still an account"),
        (["alice", "nosuchuser"], "no such user"),
        (["nosuchtenant", "bob"], "not a registered tenant"),
    ):
        refused = lab.run(["dtenant", "rename", *argv], check=False)
        assert refused.returncode == 1 and words in refused.stderr, refused.stderr
    assert lab.ssh("alice", "docker ps -q").returncode == 0


def test_system_users_are_never_provisioned(lab: host.Lab) -> None:
    lab.run(["useradd", "--system", "--create-home", "--shell", "/bin/bash", "sysacct"],
            check=False)  # fmt: skip
    lab.run(["su", "-", "sysacct", "-c", "true"])
    lab.run(["su", "-", "root", "-c", "true"])
    for account in ("sysacct", "root"):
        assert not provisioned(lab, account)
        assert account not in lab.run(["dtenant", "status"]).stdout.split()
    checked = lab.run(["dtenant", "check-login", "sysacct"]).stdout
    assert "outside eligibility.min_uid..max_uid" in checked
    assert "DOCKER_HOST: (not set)" in checked


def test_an_exhausted_pool_is_named_and_leaves_nothing_half_done(
    lab: host.Lab, dropin: str
) -> None:
    lab.run(["tee", dropin], input='[network]\nbridge_pool = "10.90.0.0/24"\n')
    first, second = new_user(lab, "pool"), new_user(lab, "pool")
    journal = Journal(lab)
    login(lab, first)
    assert provisioned(lab, first)
    login(lab, second)
    said = journal.since("has no free")
    assert "address pool network.bridge_pool = 10.90.0.0/24 has no free /24" in said
    assert not provisioned(lab, second)
    assert second not in lab.run(["dtenant", "status"]).stdout
    assert lab.run(["test", "-e", f"/var/lib/dtenant/tenants/{second}"],
                   check=False).returncode == 1  # fmt: skip


def test_check_login_reports_what_a_login_does(lab: host.Lab) -> None:
    user = new_user(lab)
    report = json.loads(lab.run(["dtenant", "check-login", user, "--json"]).stdout)
    assert report["eligible"] is True
    assert report["session_opened"] is True
    assert report["docker_host"] == f"unix:///run/docker-{user}.sock"
    assert report["provisioned"] is True


def test_remove_keeps_data_unless_purged_after_confirmation(lab: host.Lab) -> None:
    user = new_user(lab, "gone")
    login(lab, user)
    state = f"/var/lib/dtenant/tenants/{user}"
    refused = lab.run(["dtenant", "remove", user, "--purge"], input="not-the-name\n", check=False)
    assert refused.returncode == 1
    assert "not confirmed" in refused.stdout
    assert user in lab.run(["dtenant", "status"]).stdout  # nothing happened
    lab.run(["dtenant", "remove", user, "--purge", "--yes"])
    assert lab.run(["test", "-e", state], check=False).returncode == 1
    assert not provisioned(lab, user)
    assert f"docker@{user}.socket" not in lab.run(
        ["systemctl", "list-unit-files", "docker@*"]).stdout  # fmt: skip
    report = json.loads(lab.run(["dtenant", "verify", "--json"], check=False).stdout)
    assert [f for f in report["findings"] if user in f["problem"]] == []
