"""Operations for real: the reaper racing a user, users told why their daemon stopped,
`runuser -l`, metrics for monitoring, and a broken configuration that stops nothing
silently. Over SSH and as the users themselves, in a lab."""

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
DROPIN = "/etc/dtenant/dtenant.toml.d/50-test-operations.toml"


def _state(lab: host.Lab, unit: str) -> str:
    return lab.run(["systemctl", "is-active", unit], check=False).stdout.strip()


@pytest.fixture(scope="module")
def racer(lab: host.Lab) -> str:
    lab.add_account("racer")
    load_image(lab, "racer")
    return "racer"


@pytest.fixture
def short_idle(lab: host.Lab) -> Iterator[None]:
    lab.run(["mkdir", "-p", "/etc/dtenant/dtenant.toml.d"])
    lab.run(["tee", DROPIN], input="[reap]\nidle_timeout = 1\n")
    yield
    lab.run(["rm", "-f", DROPIN])


def as_user_without_session(user: str, script: str) -> list[str]:
    """`script` run as user with DOCKER_HOST and no login session (a cron job, a CI
    runner): no logind session keeps the reaper away, so it really races the commands."""
    return ["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups", "--",
            "/usr/bin/env", "-i", f"HOME=/home/{user}", "PATH=/usr/bin:/bin",
            f"DOCKER_HOST=unix:///run/docker-{user}.sock", "/bin/bash", "-c", script]  # fmt: skip


RACE_SECONDS = 60


def test_a_reap_loop_never_fails_a_users_commands(
    lab: host.Lab, racer: str, short_idle: None
) -> None:
    """For a minute, `dtenant reap racer` in a loop against racer's own loop of `docker run
    --rm`, with pauses of 0 to 2.5 s between commands: the daemon is stopped many times
    (pauses longer than idle_timeout), and commands start at every moment around a stop.
    Not one may fail."""
    reaps = (f"end=$((SECONDS+{RACE_SECONDS})); while [ $SECONDS -lt $end ]; do "
             f"dtenant reap {racer} --json | tr -d '\\n'; echo; "
             f"done > /tmp/reaps.json 2>&1")  # fmt: skip
    commands = (f"ok=0; failed=0; end=$((SECONDS+{RACE_SECONDS})); "
                f"while [ $SECONDS -lt $end ]; do "
                f"if docker run --rm {IMAGE} true >/dev/null 2>>/tmp/race-errors; "
                f"then ok=$((ok+1)); else failed=$((failed+1)); fi; "
                f"r=$((RANDOM % 250)); sleep $((r / 100)).$((r / 10 % 10))$((r % 10)); done; "
                f"echo $ok $failed")  # fmt: skip
    lab.run(["rm", "-f", "/tmp/race-errors", "/tmp/reaps.json"])
    user_loop = shlex.join(as_user_without_session(racer, commands))
    result = lab.run(["bash", "-c", f"({reaps}) & {user_loop}; wait"], timeout=RACE_SECONDS + 120)
    ok, failed = (int(n) for n in result.stdout.split()[-2:])
    errors = lab.run(["cat", "/tmp/race-errors"], check=False).stdout
    passes = lab.run(["cat", "/tmp/reaps.json"]).stdout.splitlines()
    decisions = [json.loads(line)[0] for line in passes if line.startswith("[")]
    stops = sum(1 for d in decisions if d["action"] == "stop" and d["done"])
    assert failed == 0, f"{failed} of {ok + failed} commands failed ({stops} stops):\n{errors}"
    assert ok >= 10, result.stdout
    assert stops >= 3, f"the reaper never raced the user ({len(decisions)} passes)"


def _wake(lab: host.Lab, user: str, script: str = "docker ps -q") -> str:
    return lab.run(as_user_without_session(user, script)).stdout


# Runs as root in the lab: the reaper's own stop of racer's idle daemon, with a command
# sent right after its last look found the daemon idle and given two seconds to finish.
LATE_COMMAND = """
import json, subprocess, sys
from dtenant_session import lifecycle, reaper
from dtenant_session.registry import Registry

user, argv = sys.argv[1], sys.argv[2:]
with Registry(read_only=True) as registry:
    (allocation,) = [a for a in registry.all() if a.user == user]
late = []

def still_idle(daemon):
    idle = reaper.untouched(allocation, 1, daemon)
    late.append(subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    try:
        late[0].wait(2)  # a daemon that still accepts serves it meanwhile
    except subprocess.TimeoutExpired:
        pass
    return idle

stopped = lifecycle.stop_idle_daemon(allocation, still_idle)
out, err = late[0].communicate(timeout=120)
print(json.dumps({"stopped": stopped, "returncode": late[0].returncode, "stderr": err}))
"""


def test_a_command_right_after_the_last_look_is_served_by_the_next_daemon(
    lab: host.Lab, racer: str, short_idle: None
) -> None:
    """The moment between the reaper's last look and its stop, stretched to two seconds:
    `docker create --rm` arrives just after the look found the daemon idle. It waits in
    the socket's queue and the next daemon serves it whole: the container is there. A
    daemon that served it just before its stop would leave a created --rm container,
    which its successor removes as it starts (dockerd's restore): the user's
    `docker run --rm` then fails with "No such container"."""
    _wake(lab, racer, "docker rm -f late >/dev/null 2>&1; true")
    time.sleep(1.5)  # idle for longer than idle_timeout
    create = as_user_without_session(racer, f"docker create --rm --name late {IMAGE} true")
    ran = lab.run(["python3", "-c", LATE_COMMAND, racer, *create], timeout=300)
    result = json.loads(ran.stdout.splitlines()[-1])
    try:
        assert result["stopped"] is True, result
        assert result["returncode"] == 0, result["stderr"]
        seen = _wake(lab, racer, "docker container inspect -f '{{.HostConfig.AutoRemove}}' late")
        assert seen.strip() == "true"
    finally:
        _wake(lab, racer, "docker rm -f late >/dev/null 2>&1; true")


def test_an_idle_stop_is_a_clean_stop(lab: host.Lab, racer: str, short_idle: None) -> None:
    """Stopped outright, the idle daemon's unit is inactive with no failure: not
    restarted by systemd (Restart=), no start limit counted, no failure told the user."""
    unit = f"docker@{racer}.service"
    _wake(lab, racer)
    time.sleep(1.5)
    (decision,) = json.loads(lab.run(["dtenant", "reap", racer, "--json"]).stdout)
    assert (decision["action"], decision["done"]) == ("stop", True), decision
    time.sleep(3)  # beyond RestartSec=
    shown = lab.run(["systemctl", "show", "-p", "ActiveState", "-p", "Result", unit]).stdout
    assert sorted(shown.split()) == ["ActiveState=inactive", "Result=success"], shown
    assert "failed" not in lab.ssh(racer, "bash -lc true").stderr


def test_a_daemon_killed_outright_leaves_no_pid_file(lab: host.Lab, racer: str) -> None:
    """Killed outright (the reaper's idle stop, the OOM killer), dockerd leaves its pid
    file; by its next start that pid may be anyone's, and dockerd refuses to start while
    the file names a live process ("pid file found")."""
    unit, pid_file = f"docker@{racer}.service", f"/run/dtenant/tenants/{racer}/docker.pid"
    _wake(lab, racer)
    pid = lab.run(["systemctl", "show", "-p", "MainPID", "--value", unit]).stdout.strip()
    lab.run(["kill", "-KILL", pid])
    deadline = time.monotonic() + 60
    while lab.run(["systemctl", "show", "-p", "SubState", "--value", unit]).stdout.strip() not in (
        "dead", "failed", "auto-restart"
    ):  # fmt: skip
        assert time.monotonic() < deadline, "the killed daemon's unit never settled"
        time.sleep(0.1)
    left = lab.run(["cat", pid_file], check=False).stdout.strip()
    assert left != pid, f"{pid_file} still names the killed daemon"
    assert _wake(lab, racer, "docker ps -q >/dev/null && echo answered").strip() == "answered"


def test_an_idle_stop_leaves_no_containerd_pid_for_the_next_daemon(
    lab: host.Lab, racer: str, short_idle: None
) -> None:
    """Killed with the daemon, its containerd leaves its pid file (dockerd removes it only
    at a clean shutdown). The next dockerd takes any live process holding that pid for its
    containerd "still running", waits for it in vain and fails to start: three times, and
    the start limit ends the user's commands. Here the pid is given to a process of the
    user's at once, as pid reuse does in time."""
    left = f"/run/dtenant/tenants/{racer}/exec/containerd/containerd.pid"
    unit = f"docker@{racer}.service"
    _wake(lab, racer)
    time.sleep(1.5)
    (decision,) = json.loads(lab.run(["dtenant", "reap", racer, "--json"]).stdout)
    assert (decision["action"], decision["done"]) == ("stop", True), decision
    lab.run(["systemd-run", f"--uid={racer}", "--unit=pid-holder", "sleep", "300"])
    pid = lab.run(["systemctl", "show", "-p", "MainPID", "--value", "pid-holder"]).stdout.strip()
    lab.run(["bash", "-c", f"if test -e {left}; then printf %s {pid} >{left}; fi"])
    try:
        answered = _wake(lab, racer, "timeout 40 docker ps -q >/dev/null && echo answered")
        assert answered.strip() == "answered", lab.run(["systemctl", "status", unit],
                                                      check=False).stdout[-1500:]  # fmt: skip
    finally:
        lab.run(["systemctl", "stop", "pid-holder"], check=False)
        lab.run(["systemctl", "reset-failed", unit], check=False)
        lab.run(["systemctl", "start", f"docker@{racer}.socket"], check=False)


def test_a_client_in_a_network_namespace_of_its_own_keeps_the_daemon(
    lab: host.Lab, racer: str, short_idle: None
) -> None:
    """A connection's server end belongs to its client's network namespace, so `ss` on
    the host does not list the connection of a client in a namespace of its own (a user
    namespace's, `unshare -rn`; a rootless container's): a `docker events` (or a long
    `docker load`) there must keep the daemon as any connection does, not be cut off."""
    events = ["systemd-run", f"--uid={racer}", "--unit=netns-client", "-p", "Type=exec",
              f"--setenv=DOCKER_HOST=unix:///run/docker-{racer}.sock", "--",
              "unshare", "-rn", "docker", "events"]  # fmt: skip
    _wake(lab, racer)
    lab.run(events)
    try:
        time.sleep(2)  # connected, and idle for longer than idle_timeout
        (decision,) = json.loads(lab.run(["dtenant", "reap", racer, "--json"]).stdout)
        assert not decision["done"], decision
        assert _state(lab, "netns-client.service") == "active"
        assert _state(lab, f"docker@{racer}.service") == "active"
    finally:
        lab.run(["systemctl", "stop", "netns-client"], check=False)
        lab.run(["systemctl", "reset-failed", "netns-client"], check=False)


@pytest.mark.parametrize("state", ["restarting", "paused"])
def test_a_container_between_restarts_or_paused_keeps_the_daemon(
    lab: host.Lab, racer: str, short_idle: None, state: str
) -> None:
    """Neither counts as running in the daemon's summary: a `--restart=always` container
    waiting out its back-off between two runs (no process, no scope at that moment) and a
    paused one. Both are in use, as a running one is: the daemon is kept."""
    start = {
        "restarting": f"docker run -d --name backoff --restart=always {IMAGE} true",
        "paused": f"docker run -d --name backoff {IMAGE} sleep 600 && docker pause backoff",
    }
    _wake(lab, racer, f"{start[state]} >/dev/null")  # fmt: skip
    try:
        time.sleep(1.5)
        for _ in range(4):  # at any point of the back-off
            (decision,) = json.loads(lab.run(["dtenant", "reap", racer, "--json"]).stdout)
            assert decision["action"] == "keep", decision
            time.sleep(0.4)
    finally:
        _wake(lab, racer, "docker rm -f backoff >/dev/null 2>&1; true")


def _daemon_freezer(lab: host.Lab, user: str) -> str:
    group = lab.run(["systemctl", "show", "-p", "ControlGroup", "--value",
                     f"docker@{user}.service"]).stdout.strip()  # fmt: skip
    for root in ("/sys/fs/cgroup/unified", "/sys/fs/cgroup"):
        if lab.run(["test", "-e", f"{root}{group}/cgroup.freeze"], check=False).returncode == 0:
            return f"{root}{group}/cgroup.freeze"
    raise AssertionError(f"no cgroup.freeze for {group}")


def test_a_daemon_left_frozen_by_an_interrupted_stop_is_thawed_by_the_next_pass(
    lab: host.Lab, racer: str
) -> None:
    """A reaper killed between its freeze and its thaw (its service's timeout, a reboot of
    systemd) must not leave a user's daemon hanging: the next pass thaws it."""
    _wake(lab, racer)
    freeze = _daemon_freezer(lab, racer)
    lab.run(["tee", freeze], input="1")
    lab.run(["dtenant", "reap", racer, "--json"], timeout=300)
    assert lab.run(["cat", freeze]).stdout.strip() == "0"
    answered = _wake(lab, racer, "timeout 30 docker ps -q >/dev/null && echo answered")
    assert answered.strip() == "answered"


def test_runuser_login_shells_get_docker_host(lab: host.Lab, racer: str) -> None:
    """Debian's runuser stacks include no common-session: DOCKER_HOST comes from
    /etc/profile.d for a user with a daemon of their own."""
    shell = lab.run(["runuser", "-l", racer, "-c", "echo $DOCKER_HOST; docker ps -q"],
                    check=False)  # fmt: skip
    assert shell.returncode == 0, shell.stderr
    assert shell.stdout.splitlines()[0] == f"unix:///run/docker-{racer}.sock"
    assert lab.run(["runuser", "-l", "root", "-c", "echo ${DOCKER_HOST-unset}"]
                   ).stdout.strip() == "unset"  # fmt: skip


def test_a_user_learns_why_the_reaper_stopped_their_containers(lab: host.Lab, racer: str) -> None:
    lab.run(["mkdir", "-p", "/etc/dtenant/dtenant.toml.d"])
    lab.run(["tee", DROPIN], input="[reap]\nidle_timeout = 1\nstop_running_after = 1\n")
    try:
        _wake(lab, racer, f"docker rm -f sleeper >/dev/null 2>&1; docker run -d --name sleeper "
              f"{IMAGE} sleep 600")  # fmt: skip
        time.sleep(1.5)
        (decision,) = json.loads(lab.run(["dtenant", "reap", racer, "--json"]).stdout)
        assert (decision["action"], decision["done"]) == ("stop-containers", True), decision
        first = lab.ssh(racer, "bash -lc true")  # a login shell
        assert "your Docker daemon was stopped at" in first.stderr, first.stderr
        assert "stop_running_after" in first.stderr
        assert "was stopped" not in lab.ssh(racer, "bash -lc true").stderr  # told once
    finally:
        lab.run(["rm", "-f", DROPIN])
        _wake(lab, racer, "docker rm -f sleeper >/dev/null")


def test_a_reaper_pass_writes_metrics_for_node_exporter(lab: host.Lab, racer: str) -> None:
    prom = "/var/lib/prometheus/node-exporter/dtenant.prom"
    lab.run(["mkdir", "-p", "/var/lib/prometheus/node-exporter"])
    try:
        _wake(lab, racer)
        lab.run(["systemctl", "start", "dtenant-reap.service"], timeout=300)
        text = lab.run(["cat", prom]).stdout
        assert f'dtenant_tenant_state{{user="{racer}",state="running"}} 1' in text, text
        assert f'dtenant_tenant_daemon_up{{user="{racer}"}} 1' in text
        assert "dtenant_config_broken 0" in text
        assert lab.run(["stat", "-c", "%a", prom]).stdout.strip() == "644"
    finally:
        lab.run(["rm", "-rf", "/var/lib/prometheus"])


def test_a_broken_dropin_is_named_and_the_reaper_goes_on(lab: host.Lab, racer: str) -> None:
    """The timer's pass names the file and key, fails visibly, and still stops an idle
    daemon with the last good settings (idle_timeout 1 s, from the last good pass)."""
    broken = "/etc/dtenant/dtenant.toml.d/60-broken.toml"
    lab.run(["mkdir", "-p", "/etc/dtenant/dtenant.toml.d"])
    lab.run(["tee", DROPIN], input="[reap]\nidle_timeout = 1\n")
    try:
        lab.run(["dtenant", "reap", "--dry-run"])  # a good pass: its settings are kept
        lab.run(["tee", broken], input='[reap]\nidle_timeout = "soon"\n')
        _wake(lab, racer)
        time.sleep(1.5)
        assert _state(lab, f"docker@{racer}.service") == "active"
        lab.run(["systemctl", "start", "dtenant-reap.service"], timeout=300, check=False)
        assert _state(lab, f"docker@{racer}.service") == "inactive"
        runs = lab.run(
            ["journalctl", "-u", "dtenant-reap.service", "-n", "2000", "-o", "cat"]
        ).stdout  # a pass lists every tenant of the session: many lines
        assert f"{broken}: reap.idle_timeout" in runs, runs
        assert _state(lab, "dtenant-reap.service") == "failed"  # visible in systemctl --failed
        said = lab.run(["dtenant", "config"], check=False)
        assert said.returncode == 1 and f"{broken}: reap.idle_timeout" in said.stderr
    finally:
        lab.run(["rm", "-f", DROPIN, broken])
        lab.run(["systemctl", "reset-failed", "dtenant-reap.service"], check=False)
