"""The idle reaper and data-root exclusivity verification, on real daemons in a lab."""

from __future__ import annotations

import json
import shlex
import time
from collections.abc import Iterator

import pytest

from tests import testimage
from tests.lab import host
from tests.sandbox.conftest import load_image

IMAGE = testimage.IMAGE
SHORT_REAP = "/etc/dtenant/dtenant.toml.d/50-test-reap.toml"


def _state(lab: host.Lab, unit: str) -> str:
    return lab.run(["systemctl", "is-active", unit], check=False).stdout.strip()


def _reap(lab: host.Lab, user: str, *flags: str) -> dict[str, object]:
    (decision,) = json.loads(lab.run(["dtenant", "reap", user, "--json", *flags]).stdout)
    assert isinstance(decision, dict)
    return decision


@pytest.fixture(scope="module")
def idler(lab: host.Lab) -> str:
    """A tenant with an image, a stopped container and a volume."""
    lab.add_account("idler")
    load_image(lab, "idler")
    lab.ssh("idler", f"docker create --name keepme {IMAGE} true && docker volume create keepvol")
    return "idler"


@pytest.fixture
def short_idle_timeout(lab: host.Lab) -> Iterator[None]:
    lab.run(["mkdir", "-p", "/etc/dtenant/dtenant.toml.d"])
    lab.run(["tee", SHORT_REAP], input="[reap]\nidle_timeout = 1\nstop_running_after = 0\n")
    time.sleep(1.5)  # longer than idle_timeout since the last activity
    yield
    lab.run(["rm", "-f", SHORT_REAP])


def test_idle_daemon_is_stopped_and_comes_back_intact(
    lab: host.Lab, idler: str, short_idle_timeout: None
) -> None:
    assert _state(lab, "docker@idler.service") == "active"
    dry = _reap(lab, idler, "--dry-run")
    assert dry["action"] == "stop"
    assert dry["done"] is False
    assert _state(lab, "docker@idler.service") == "active"  # --dry-run changed nothing

    reaped = _reap(lab, idler)
    assert (reaped["action"], reaped["done"]) == ("stop", True)
    assert _state(lab, "docker@idler.service") == "inactive"
    assert _state(lab, "docker@idler.socket") == "active"
    journal = lab.run(["journalctl", "-t", "dtenant", "DTENANT_USER=idler", "-o", "cat"]).stdout
    assert "reaper stopped the idle daemon" in journal

    seen = lab.ssh(idler, "docker images -q dtenant/busybox; docker ps -aq -f name=keepme;"
                   " docker volume ls -q").stdout.split()  # fmt: skip
    assert len(seen) == 3
    assert "keepvol" in seen
    assert _state(lab, "docker@idler.service") == "active"


def test_a_running_container_keeps_the_daemon(
    lab: host.Lab, idler: str, short_idle_timeout: None
) -> None:
    lab.ssh(idler, f"docker run -d --name busy {IMAGE} sleep 600")
    time.sleep(1.5)
    try:
        decision = _reap(lab, idler)
        assert decision["action"] == "keep"
        assert "1 running container(s)" in decision["reasons"]  # type: ignore[operator]
        assert _state(lab, "docker@idler.service") == "active"
    finally:
        lab.ssh(idler, "docker rm -f busy")


def test_an_open_session_keeps_the_daemon(
    lab: host.Lab, idler: str, short_idle_timeout: None
) -> None:
    lab.ssh(idler, "docker ps >/dev/null")  # the daemon runs
    session = shlex.join(lab.ssh_argv(idler, "sleep 30"))
    lab.run(["sh", "-c", f"{session} >/dev/null 2>&1 &"])
    time.sleep(2)
    try:
        decision = _reap(lab, idler)
        assert decision["action"] == "keep"
        assert "1 login session(s)" in decision["reasons"]  # type: ignore[operator]
    finally:
        lab.run(["pkill", "-u", idler, "-x", "sleep"], check=False)


def _sessions_gone(lab: host.Lab, user: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while user in lab.run(["loginctl", "list-sessions", "--no-legend"]).stdout:
        assert time.monotonic() < deadline, f"{user} still has a logind session"
        time.sleep(0.2)


def test_a_session_seen_by_a_pass_is_activity_after_the_logout(
    lab: host.Lab, idler: str, short_idle_timeout: None
) -> None:
    """Logouts are not hooked (root would run with the user's PAM environment): the
    last pass that saw a session marks the activity, and idle time counts from there."""
    lab.run(["tee", SHORT_REAP], input="[reap]\nidle_timeout = 60\nstop_running_after = 0\n")
    lab.ssh(idler, "docker ps >/dev/null")  # the daemon runs
    activity = f"/run/dtenant/tenants/{idler}/activity"
    lab.run(["touch", "-d", "-1 hour", activity])  # its last API use, long ago
    session = shlex.join(lab.ssh_argv(idler, "sleep 30"))
    lab.run(["sh", "-c", f"{session} >/dev/null 2>&1 &"])
    time.sleep(2)
    try:
        assert "1 login session(s)" in _reap(lab, idler)["reasons"]  # type: ignore[operator]
    finally:
        lab.run(["pkill", "-u", idler, "-x", "sleep"], check=False)
    _sessions_gone(lab, idler)
    decision = _reap(lab, idler)
    assert decision["action"] == "keep", decision
    assert decision["idle_for"] is not None and decision["idle_for"] < 60  # type: ignore[operator]
    assert _state(lab, "docker@idler.service") == "active"


def test_stop_running_after_stops_containers_and_honours_restart_policies(
    lab: host.Lab, idler: str, short_idle_timeout: None
) -> None:
    lab.run(["tee", SHORT_REAP], input="[reap]\nidle_timeout = 1\nstop_running_after = 1\n")
    lab.ssh(idler, f"docker run -d --name always --restart always {IMAGE} sleep 600 &&"
            f" docker run -d --name once {IMAGE} sleep 600")  # fmt: skip
    time.sleep(1.5)
    try:
        decision = _reap(lab, idler)
        assert (decision["action"], decision["done"]) == ("stop-containers", True)
        assert _state(lab, "docker@idler.service") == "inactive"
        running = lab.ssh(idler, "docker ps --format '{{.Names}}'").stdout.split()
        assert running == ["always"]
        settings = json.loads(lab.run(["cat", "/var/lib/dtenant/tenants/idler/daemon.json"]).stdout)
        assert settings["live-restore"] is True  # as provisioning wrote it
    finally:
        lab.ssh(idler, "docker rm -f always once", check=False)


def test_a_pass_over_many_tenants_starts_no_daemon(lab: host.Lab) -> None:
    fake = (
        "from dtenant_session.config import load\n"
        "from dtenant_session.registry import Registry\n"
        "network = load().network\n"
        "with Registry() as r:\n"
        "    for i in range(1000):\n"
        "        r.allocate(f'ghost{i}', 200000 + i, network, [])\n"
    )
    active_before = lab.run(["systemctl", "list-units", "--state=active", "--no-legend",
                             "--plain", "docker@*.service"]).stdout  # fmt: skip
    lab.run(["python3", "-c", fake], timeout=300)
    try:
        decisions = json.loads(lab.run(["dtenant", "reap", "--dry-run", "--json"]).stdout)
        ghosts = [d for d in decisions if d["user"].startswith("ghost")]
        assert len(ghosts) == 1000
        assert {d["action"] for d in ghosts} == {"skip"}
        active_after = lab.run(["systemctl", "list-units", "--state=active", "--no-legend",
                                "--plain", "docker@*.service"]).stdout  # fmt: skip
        assert active_after == active_before
    finally:
        lab.run(
            [
                "python3",
                "-c",
                "import sqlite3; db = sqlite3.connect('/var/lib/dtenant/registry.sqlite3');"
                " db.execute(\"DELETE FROM tenants WHERE user LIKE 'ghost%'\"); db.commit()",
            ]
        )


# -- verify -----------------------------------------------------------------------------


def _verify(lab: host.Lab, *args: str) -> tuple[int, list[dict[str, object]]]:
    result = lab.run(["dtenant", "verify", "--json", *args], check=False)
    return result.returncode, json.loads(result.stdout)["findings"]


def _refusal(lab: host.Lab, user: str) -> str:
    """Try to use the tenant's daemon; return what its unit said about refusing."""
    failed = lab.ssh(user, "docker ps", check=False)
    assert failed.returncode != 0
    return lab.run(["journalctl", "-u", f"docker@{user}.service", "-o", "cat", "--no-pager"]).stdout


def _reset(lab: host.Lab, user: str) -> None:
    """As the administrator puts a refused tenant right: the explainer that holds the
    socket meanwhile gives it back."""
    lab.run(["systemctl", "stop", f"dtenant-daemon-failed@{user}.service"], check=False)
    lab.run(["systemctl", "reset-failed", f"docker@{user}.service", f"docker@{user}.socket"],
            check=False)  # fmt: skip
    lab.run(["systemctl", "start", f"docker@{user}.socket"])


def test_a_clean_host_verifies(lab: host.Lab, tenants: tuple[str, ...]) -> None:
    result = lab.run(["dtenant", "verify"], check=False)
    assert result.returncode == 0, result.stdout
    assert result.stdout.strip().endswith("0 problems")


@pytest.fixture
def victim(lab: host.Lab) -> str:
    user = "victim"
    if lab.run(["id", user], check=False).returncode != 0:
        lab.add_account(user)
    lab.ssh(user, "docker volume rm vv >/dev/null 2>&1; docker volume create vv >/dev/null")
    lab.run(["systemctl", "stop", f"docker@{user}.service"])
    return user


def test_a_stray_dockerd_on_a_data_root_is_named_and_blocks_the_tenant(
    lab: host.Lab, victim: str
) -> None:
    # In a network namespace of its own: a dockerd with --bridge=none deletes the host's
    # docker0 at start (libnetwork), which the system daemon's containers need.
    lab.run(["systemd-run", "--unit=stray-dockerd", "--property=PrivateNetwork=yes",
             "/usr/sbin/dockerd",
             f"--data-root=/var/lib/dtenant/tenants/{victim}/docker", "--exec-root=/run/stray",
             "--pidfile=/run/stray.pid", "-H", "unix:///run/stray.sock", "--bridge=none",
             "--iptables=false", "--containerd=/run/containerd/containerd.sock",
             "--containerd-namespace=stray",
             "--containerd-plugins-namespace=stray-plugins"])  # fmt: skip
    try:
        pid = lab.run(["systemctl", "show", "-p", "MainPID", "--value", "stray-dockerd"]).stdout
        findings: list[dict[str, object]] = []
        deadline = time.monotonic() + 30
        while not findings and time.monotonic() < deadline:
            code, findings = _verify(lab, "--tenant", victim)
            time.sleep(0.5)
        assert code == 1
        holders = {json.dumps(f["holder"]) for f in findings if f["check"] == "lock"}
        assert holders
        assert all(f'"pid": {pid.strip()}' in h and "stray-dockerd.service" in h for h in holders)
        refusal = _refusal(lab, victim)
        assert f"refusing to start the daemon of {victim}" in refusal
        assert f"locked by pid {pid.strip()}" in refusal
    finally:
        lab.run(["systemctl", "stop", "stray-dockerd"], check=False)
        _reset(lab, victim)
    assert lab.ssh(victim, "docker volume ls -q").stdout.split() == ["vv"]


def test_two_tenants_on_one_data_root_are_reported(lab: host.Lab) -> None:
    for user in ("twin1", "twin2"):
        if lab.run(["id", user], check=False).returncode != 0:
            lab.add_account(user)
        lab.ssh(user, "true")
    root = "/var/lib/dtenant/tenants"
    lab.run(["mv", f"{root}/twin2/docker", f"{root}/twin2/docker.own"])
    try:
        lab.run(["ln", "-s", f"{root}/twin1/docker", f"{root}/twin2/docker"])
        code, findings = _verify(lab)
        assert code == 1
        assert any(f["check"] == "distinct" and "same directory" in str(f["problem"])
                   for f in findings)  # fmt: skip
        refusal = _refusal(lab, "twin2")
        assert "belongs to tenant 'twin1'" in refusal
        lab.run(["rm", f"{root}/twin2/docker"])
        lab.run(["mkdir", f"{root}/twin2/docker"])
        lab.run(["mount", "--bind", f"{root}/twin1/docker", f"{root}/twin2/docker"])
        try:
            code, findings = _verify(lab)
            assert code == 1
            assert any(f["check"] == "distinct" for f in findings)
        finally:
            lab.run(["umount", f"{root}/twin2/docker"])
        lab.run(["rmdir", f"{root}/twin2/docker"])
    finally:
        lab.run(["sh", "-c", f"rm -f {root}/twin2/docker 2>/dev/null; "
                 f"mv {root}/twin2/docker.own {root}/twin2/docker"])  # fmt: skip
        _reset(lab, "twin2")
    assert lab.ssh("twin2", "docker ps -q").returncode == 0


def test_a_foreign_stamp_is_reported_and_refused(lab: host.Lab, victim: str) -> None:
    stamp = f"/var/lib/dtenant/tenants/{victim}/docker/.dtenant-owner"
    original = lab.run(["cat", stamp]).stdout
    foreign = json.loads(original) | {"machine_id": "0" * 32, "hostname": "elsewhere"}
    lab.run(["tee", stamp], input=json.dumps(foreign))
    try:
        code, findings = _verify(lab, "--tenant", victim)
        assert code == 1
        assert any("belongs to host 'elsewhere'" in str(f["problem"]) for f in findings)
        assert "belongs to host 'elsewhere'" in _refusal(lab, victim)
    finally:
        lab.run(["tee", stamp], input=original)
        _reset(lab, victim)
    assert lab.ssh(victim, "docker ps -q").returncode == 0


def _next_elapse(lab: host.Lab) -> str:
    """The timer's next elapse, once no pass is running (while one runs, systemd shows
    none: the next is computed from its end)."""
    deadline = time.monotonic() + 120
    while _state(lab, "dtenant-reap.service") == "activating" and time.monotonic() < deadline:
        time.sleep(0.5)
    return lab.run(["systemctl", "show", "-p", "NextElapseUSecMonotonic", "--value",
                    "dtenant-reap.timer"]).stdout.strip()  # fmt: skip


def test_the_timer_alone_stops_an_idle_daemon(lab: host.Lab, idler: str) -> None:
    """The reaper is the timer's job: no `dtenant reap` by hand. Armed after `dtenant
    setup` and after a daemon-reload, it elapses at the configured interval."""
    lab.run(["mkdir", "-p", "/etc/dtenant/dtenant.toml.d"])
    lab.run(["tee", SHORT_REAP], input="[reap]\ninterval = 10\nidle_timeout = 1\n")
    try:
        lab.run(["dtenant", "setup"])
        lab.run(["systemctl", "daemon-reload"])
        assert _next_elapse(lab) not in ("", "0", "infinity")
        lab.ssh(idler, "docker ps -q")
        assert _state(lab, "docker@idler.service") == "active"
        deadline = time.monotonic() + 120
        while _state(lab, "docker@idler.service") == "active":
            assert time.monotonic() < deadline, "the timer never stopped the idle daemon"
            time.sleep(2)
        runs = lab.run(["journalctl", "-q", "-u", "dtenant-reap.service", "-o", "cat"]).stdout
        assert "idler" in runs or "Finished" in runs, runs
        assert _next_elapse(lab) not in ("", "0", "infinity")  # and it stays armed
    finally:
        lab.run(["rm", "-f", SHORT_REAP])
        lab.run(["dtenant", "setup"])


def test_deliberate_stops_never_lock_the_user_out(
    lab: host.Lab, idler: str, short_idle_timeout: None
) -> None:
    """Five reaper stops in well under a minute, each followed by a docker command (a
    socket activation): more than the daemon's start limit (3 a minute), yet every
    command works."""
    for _ in range(5):
        assert lab.ssh(idler, "docker ps -q", check=False).returncode == 0
        time.sleep(1.2)  # idle for longer than idle_timeout
        reaped = _reap(lab, idler)
        assert (reaped["action"], reaped["done"]) == ("stop", True), reaped
    assert lab.ssh(idler, "docker ps -q", check=False).returncode == 0
