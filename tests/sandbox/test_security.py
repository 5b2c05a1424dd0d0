"""The escape suite: every vector as the tenant over SSH, each denied with a clear message
and no effect on the host; and the everyday work that must keep working."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dtenant_session import testimage
from dtenant_session.lab import host
from tests.sandbox.conftest import load_image

IMAGE = testimage.IMAGE
RAWAPI = Path(__file__).with_name("rawapi.py")
DENIED = "authorization denied by plugin dtenant-alice: dtenant:"


def _denied(lab: host.Lab, command: str, *words: str) -> None:
    result = lab.ssh("alice", command, check=False)
    assert result.returncode != 0, result.stdout
    assert DENIED in result.stderr, result.stderr
    for word in words:
        assert word in result.stderr, result.stderr


@pytest.fixture(scope="module")
def alice(lab: host.Lab, tenants: tuple[str, ...]) -> str:
    lab.ssh("alice", "mkdir -p ~/data && ln -sfn /etc ~/etc-link")
    return "alice"


@pytest.mark.parametrize(
    ("flags", "words"),
    [
        ("--privileged", ["--privileged"]),
        ("--userns=host", ["--userns=host"]),
        ("--pid=host", ["--pid=host"]),
        ("--net=host", ["--network=host"]),
        ("--ipc=host", ["--ipc=host"]),
        ("--uts=host", ["--uts=host"]),
        ("-v /:/host", ["bind mount of /"]),
        ("-v /etc:/x", ["bind mount of /etc"]),
        ("-v /home/bob:/x", ["bind mount of /home/bob"]),
        ("-v /home/alice/etc-link:/x", ["really /etc"]),
        ("--mount type=volume,dst=/x,volume-driver=local,volume-opt=type=none,"
         "volume-opt=o=bind,volume-opt=device=/", ["driver options", "device=/"]),
        ("--cap-add SYS_ADMIN", ["SYS_ADMIN"]),
        ("--device /dev/null", ["--device"]),
        ("--security-opt seccomp=unconfined", ["seccomp=unconfined"]),
        ("--security-opt apparmor=unconfined", ["apparmor=unconfined"]),
        ("--security-opt no-new-privileges=false", ["no-new-privileges=false"]),
        ("--security-opt systempaths=unconfined", ["systempaths"]),
        ("--cgroup-parent=/", ["--cgroup-parent"]),
        ("--device-cgroup-rule='b 8:* rmw'", ["--device-cgroup-rule"]),
        ("-p 80:8080", ["host port 80"]),
        ("--runtime=io.containerd.runc.v2", ["runtime"]),
        ("--log-driver=syslog", ["log driver 'syslog'"]),
    ],
)  # fmt: skip
def test_docker_run_vectors_are_denied(lab: host.Lab, alice: str, flags: str,
                                       words: list[str]) -> None:  # fmt: skip
    _denied(lab, f"docker run --rm {flags} {IMAGE} true", *words)


def test_a_denied_bind_creates_nothing_on_the_host(lab: host.Lab, alice: str) -> None:
    _denied(lab, f"docker run --rm -v /etc/dtenant-probe:/x {IMAGE} true", "/etc/dtenant-probe")
    assert lab.run(["test", "-e", "/etc/dtenant-probe"], check=False).returncode == 1


def test_privileged_exec_is_denied(lab: host.Lab, alice: str) -> None:
    lab.ssh("alice", f"docker rm -f ex >/dev/null 2>&1; docker run -d --name ex {IMAGE} sleep 300")
    try:
        _denied(lab, "docker exec --privileged ex id", "docker exec --privileged")
    finally:
        lab.ssh("alice", "docker rm -f ex", check=False)


@pytest.mark.parametrize(
    ("command", "words"),
    [
        ("docker plugin install --grant-all-permissions vieux/sshfs", ["managing plugins"]),
        ("docker swarm init", ["swarm mode"]),
        ("docker network create -d macvlan -o parent=eth0 mv", ["'macvlan'"]),
        ("docker network create -o com.docker.network.bridge.name=dtenant2 steal",
         ["com.docker.network.bridge.name"]),
        ("docker network create --subnet 10.96.1.0/24 squat", ["outside this tenant's range"]),
        ("docker volume create -o type=none -o o=bind -o device=/etc etcvol", ["driver options"]),
    ],
)  # fmt: skip
def test_other_vectors_are_denied(lab: host.Lab, alice: str, command: str,
                                  words: list[str]) -> None:  # fmt: skip
    _denied(lab, command, *words)


def test_a_build_with_the_host_network_is_denied(lab: host.Lab, alice: str) -> None:
    lab.ssh("alice", f"mkdir -p ~/hb && echo 'FROM {IMAGE}' > ~/hb/Dockerfile")
    _denied(lab, "DOCKER_BUILDKIT=0 docker build --network=host ~/hb", "host network")


@pytest.mark.parametrize(
    ("case", "words"),
    [
        ("lowercase", ["--privileged"]),
        ("duplicate", ["duplicate key"]),
        ("charset", ["--privileged"]),
        # Whether the daemon shows the plugin a chunked body depends on its version
        # (CVE-2024-41110): either way the request is denied.
        ("chunked", []),
        ("zero-length", ["without a body"]),
        ("lowercase-bind", ["bind mount of /"]),
    ],
)
def test_raw_api_tricks_are_denied(lab: host.Lab, alice: str, case: str,
                                   words: list[str]) -> None:  # fmt: skip
    reply = lab.ssh("alice", f"python3 {RAWAPI} {case}").stdout
    status, _, body = reply.partition("\n")
    assert " 403 " in status, reply
    assert "authorization denied by plugin dtenant-alice" in body
    for word in words:
        assert word in body, body


def _plugin_pid(lab: host.Lab) -> str:
    return lab.run(["systemctl", "show", "-p", "MainPID", "--value",
                    "dtenant-authz@alice.service"]).stdout.strip()  # fmt: skip


def test_a_crashed_plugin_comes_back_by_socket_activation(lab: host.Lab, alice: str) -> None:
    lab.ssh("alice", "docker ps -q")
    before = _plugin_pid(lab)
    lab.run(["systemctl", "kill", "--signal=KILL", "dtenant-authz@alice.service"])
    time.sleep(0.5)
    assert lab.ssh("alice", "docker ps -q").returncode == 0
    assert _plugin_pid(lab) not in ("0", before)


def test_a_plugin_that_cannot_start_means_denied(lab: host.Lab, alice: str) -> None:
    service = "dtenant-authz@alice.service"
    lab.ssh("alice", "docker ps -q")
    lab.run(["systemctl", "mask", "--runtime", service])
    try:
        lab.run(["systemctl", "kill", "--signal=KILL", service])
        # Docker retries the plugin for about 30 s, then fails the request: closed.
        failed = lab.ssh("alice", f"docker run --rm {IMAGE} true", check=False, timeout=180)
        assert failed.returncode != 0
        # The docker CLI shows either the plugin error or, when its first request (_ping)
        # fails, a bare 500.
        assert "plugin dtenant-alice failed" in failed.stderr or " 500 " in failed.stderr
    finally:
        lab.run(["systemctl", "unmask", "--runtime", service])
        lab.run(["systemctl", "reset-failed", "dtenant-authz@alice.socket", service], check=False)
        lab.run(["systemctl", "start", "dtenant-authz@alice.socket"])
    assert lab.ssh("alice", "docker ps -q").returncode == 0


def test_the_socket_cannot_be_replaced_by_its_user(lab: host.Lab, alice: str) -> None:
    listing = lab.run(["stat", "-c", "%U %a", "/run", "/run/docker-alice.sock"]).stdout.split()
    assert listing == ["root", "755", "alice", "600"]
    moved = lab.ssh("alice", "mv /run/docker-alice.sock /run/x; rm -f /run/docker-alice.sock",
                    check=False)  # fmt: skip
    assert moved.returncode != 0
    assert lab.run(["test", "-S", "/run/docker-alice.sock"]).returncode == 0


# -- user namespaces ------------------------------------------------------------------------


def _host_uid(lab: host.Lab, pid: str) -> str:
    """The uid the host's ps shows for pid (ps prints uids above 2^31 as negative)."""
    return lab.run(["stat", "-c", "%u", f"/proc/{pid}"]).stdout.strip()


def test_container_root_is_the_user_on_the_host(lab: host.Lab, alice: str) -> None:
    uid = lab.run(["id", "-u", "alice"]).stdout.strip()
    lab.ssh("alice", f"rm -f ~/data/made-by-root; docker run --rm -v ~/data:/d {IMAGE} "
            "touch /d/made-by-root")  # fmt: skip
    owner = lab.run(["stat", "-c", "%u", "/home/alice/data/made-by-root"]).stdout.strip()
    assert owner == uid
    lab.ssh(
        "alice", f"docker rm -f ps1 >/dev/null 2>&1; docker run -d --name ps1 {IMAGE} sleep 300"
    )
    try:
        pid = lab.ssh("alice", "docker inspect -f '{{.State.Pid}}' ps1").stdout.strip()
        assert lab.run(["ps", "-o", "uid=", "-p", pid]).stdout.strip() == uid  # host's ps
    finally:
        lab.ssh("alice", "docker rm -f ps1", check=False)


def test_other_container_uids_are_in_the_users_range(lab: host.Lab, alice: str) -> None:
    ranges = [line.split(":") for line in lab.run(["cat", "/etc/subuid"]).stdout.splitlines()
              if line.startswith("alice:")]  # fmt: skip
    subordinate = [(int(start), int(count)) for _, start, count in ranges if count != "1"]
    lab.ssh("alice", f"docker rm -f ps2 >/dev/null 2>&1; docker run -d --name ps2 --user 1000 "
            f"{IMAGE} sleep 300")  # fmt: skip
    try:
        pid = lab.ssh("alice", "docker inspect -f '{{.State.Pid}}' ps2").stdout.strip()
        host_uid = int(_host_uid(lab, pid))
        start, count = subordinate[0]
        assert host_uid == start + 999
        assert start <= host_uid < start + count
    finally:
        lab.ssh("alice", "docker rm -f ps2", check=False)


def test_a_directory_user_gets_a_range_from_the_registry(lab: host.Lab) -> None:
    lab.add_account("ldapuser")
    lab.run(["sed", "-i", "/^ldapuser:/d", "/etc/subuid", "/etc/subgid"])  # as SSSD users have
    load_image(lab, "ldapuser")
    subuid = [line for line in lab.run(["cat", "/etc/subuid"]).stdout.splitlines()
              if line.startswith("ldapuser:")]  # fmt: skip
    uid = lab.run(["id", "-u", "ldapuser"]).stdout.strip()
    assert subuid[0] == f"ldapuser:{uid}:1"
    start = int(subuid[1].split(":")[1])
    assert start >= 3_000_000_000
    lab.ssh("ldapuser", f"docker run -d --name rr --user 5 {IMAGE} sleep 300")
    try:
        pid = lab.ssh("ldapuser", "docker inspect -f '{{.State.Pid}}' rr").stdout.strip()
        assert int(_host_uid(lab, pid)) == start + 4
    finally:
        lab.ssh("ldapuser", "docker rm -f rr", check=False)


# -- everyday work and limits ---------------------------------------------------------------


def test_everyday_work_still_works(lab: host.Lab, alice: str) -> None:
    script = f"""
        set -e
        docker rm -f web daily >/dev/null 2>&1 || true
        docker volume create daily-vol >/dev/null
        docker network create daily-net >/dev/null
        docker run --rm -v daily-vol:/v {IMAGE} sh -c 'echo kept > /v/f'
        docker run -d --name daily --network daily-net -v daily-vol:/v {IMAGE} sleep 300 >/dev/null
        docker exec daily cat /v/f
        docker run -d --name web -p 8080:80 -v ~/data:/var/www:ro {IMAGE} httpd -f -p 80 -h /var/www
        mkdir -p ~/proj && printf 'FROM {IMAGE}\\nRUN echo built > /built\\n' > ~/proj/Dockerfile
        DOCKER_BUILDKIT=0 docker build -q -t daily-build ~/proj >/dev/null
        docker run --rm daily-build cat /built
    """
    lab.run(["sh", "-c", "echo page > /home/alice/data/index.html"])
    try:
        result = lab.ssh("alice", script)
        lines = result.stdout.split()
        assert lines[0] == "kept"
        assert lines[-1] == "built"
        time.sleep(0.5)
        page = lab.run(["timeout", "5", "wget", "-qO-", "http://127.0.0.1:8080/"], check=False)
        assert page.stdout.strip() == "page"
    finally:
        lab.ssh("alice", "docker rm -f web daily; docker network rm daily-net; "
                "docker volume rm daily-vol; docker rmi daily-build", check=False)  # fmt: skip


@pytest.fixture
def small_memory_limit(lab: host.Lab) -> Iterator[None]:
    dropin = "/etc/dtenant/dtenant.toml.d/60-test-limits.toml"
    lab.run(["mkdir", "-p", "/etc/dtenant/dtenant.toml.d"])
    lab.run(["tee", dropin], input='[limits]\nmemory_max = "256M"\n')
    lab.run(["dtenant", "setup"])
    yield
    lab.run(["rm", "-f", dropin])
    lab.run(["dtenant", "setup"])


def test_the_tenant_memory_limit_is_enforced(lab: host.Lab, alice: str,
                                             small_memory_limit: None) -> None:  # fmt: skip
    limit = lab.run(["systemctl", "show", "-p", "MemoryMax", "--value", "dtenant-alice.slice"])
    assert limit.stdout.strip() == str(256 * 1024 * 1024)
    grab = 'x=$(head -c 400000000 /dev/zero | tr "\\0" a); echo survived'
    hog = f"docker run --rm {IMAGE} sh -c '{grab}'"
    result = lab.ssh("alice", hog, check=False, timeout=300)
    assert "survived" not in result.stdout
    assert result.returncode == 137
    assert lab.run(["systemctl", "is-system-running"], check=False).stdout.strip() in (
        "running", "degraded")  # fmt: skip
    assert lab.ssh("alice", "docker ps -q").returncode == 0  # the tenant's daemon lives on
    assert lab.ssh("bob", "docker ps -q").returncode == 0  # and nobody else noticed
