"""A tenant's root daemon fetches nothing its containers could not: not the host's
loopback, not link-local (cloud metadata), not a network the administrator lists, not
another tenant's containers, by any path (fromSrc, remote build contexts over HTTP and git,
ADD in the classic builder and in BuildKit). Registries and hosts outside keep working."""

from __future__ import annotations

import shlex
import time
from collections.abc import Iterator

import pytest

from tests import testimage
from tests.lab import host

IMAGE = testimage.IMAGE
LOOPBACK = "127.0.0.1:18080"
METADATA = "169.254.169.254"
LISTED = "198.51.100.200"  # outside, but on the administrator's list (daemon_blocked)
SECRET = "TOPSECRET-4711"  # noqa: S105 - the bait
DROPIN = "/etc/dtenant/dtenant.toml.d/50-egress-test.toml"
# The 20.10 CLI from docker.io: its built-in BuildKit client talks /session and /grpc.
BUILDKIT = "DOCKER_BUILDKIT=1 /usr/bin/docker build --progress=plain --no-cache"
CLASSIC = "DOCKER_BUILDKIT=0 /usr/bin/docker build --no-cache"


def _secret_files(directory: str) -> str:
    """Shell: the secret, a tar of it (fromSrc), a build context that prints it, a git
    repository (dumb HTTP) with the same context, and harmless files for allowed fetches."""
    return (
        f"mkdir -p {directory} && cd {directory} && echo {SECRET} > secret"
        " && tar cf secret.tar secret"
        f" && printf 'FROM {IMAGE}\\nCOPY secret /secret\\nRUN cat /secret\\n' > Dockerfile"
        " && tar cf context.tar Dockerfile secret"
        " && rm -rf repo && mkdir repo && cp Dockerfile secret repo/ && cd repo"
        " && git init -q && git add . && git -c user.name=x -c user.email=x@x commit -qm x"
        " && git clone -q --bare . ../repo.git && cd ../repo.git && git update-server-info"
        f" && cd {directory} && echo ok > ok && tar cf ok.tar ok"
    )


@pytest.fixture(scope="module")
def targets(lab: host.Lab, tenants: tuple[str, ...], outside: str) -> Iterator[dict[str, str]]:
    """Where the secret lives: root's web server on the lab's loopback; a "metadata
    service" at 169.254.169.254 and a listed address, both outside; one of bob's
    containers."""
    lab.sh(_secret_files("/srv/secret") + " && chmod 700 /srv/secret")
    lab.run(["systemd-run", "--unit=egress-secret", "--property=WorkingDirectory=/srv/secret",
             "python3", "-m", "http.server", "--bind", "127.0.0.1", "18080"])  # fmt: skip
    lab.sh(_secret_files("/srv/outside"))
    lab.sh(f"ip -n outside addr add {METADATA}/32 dev eth0 && ip -n outside addr add {LISTED}/32"
           f" dev eth0 && ip route add {METADATA}/32 via {outside}"
           f" && ip route add {LISTED}/32 via {outside}")  # fmt: skip
    lab.run(["mkdir", "-p", "/etc/dtenant/dtenant.toml.d"])
    lab.run(["tee", DROPIN], input=f'[network]\ndaemon_blocked = ["169.254.0.0/16", '
            f'"fe80::/10", "{LISTED}/32"]\n')  # fmt: skip
    if lab.run(["dtenant", "config"], check=False).returncode != 0:
        lab.run(["rm", "-f", DROPIN])  # a dtenant without the key: show what leaks there
    lab.run(["dtenant", "firewall", "sync"])
    bob = _bob_serves_the_secret(lab)
    time.sleep(0.5)
    yield {"loopback": LOOPBACK, "metadata": METADATA, "listed": LISTED, "bob": bob}
    lab.run(["rm", "-f", DROPIN])
    lab.run(["dtenant", "firewall", "sync"], check=False)
    lab.run(["systemctl", "stop", "egress-secret"], check=False)
    lab.ssh("bob", "docker rm -f egress-web", check=False)


def _bob_serves_the_secret(lab: host.Lab) -> str:
    lab.ssh("bob", _secret_files("~/www") + f" && cd && printf 'FROM {IMAGE}\\nCOPY www /www\\n'"
            f" > Dockerfile && {CLASSIC} -q -t bobweb . >/dev/null"
            " && docker rm -f egress-web >/dev/null 2>&1;"
            " docker run -d --name egress-web bobweb httpd -f -p 80 -h /www")  # fmt: skip
    return lab.ssh("bob", "docker inspect -f '{{.NetworkSettings.IPAddress}}' egress-web"
                   ).stdout.strip()  # fmt: skip


def _vectors(target: str) -> dict[str, str]:
    """Every way to have alice's daemon fetch from `target`, as alice's shell commands."""
    add = f"ADD http://{target}/secret /s"
    return {
        "fromSrc": f"docker import http://{target}/secret.tar leak-import",
        # The docker CLI fetches a remote context itself (as the user); the daemon does
        # when the API is called directly. A remote context that is plain text is read as
        # a Dockerfile: a parse error would echo its first line.
        "remote-text": _remote(f"http://{target}/secret"),
        "remote-tar": _remote(f"http://{target}/context.tar"),
        "remote-git": _remote(f"http://{target}/repo.git"),
        "classic-ADD": f"mkdir -p ~/ca && printf 'FROM {IMAGE}\\n{add}\\nRUN cat /s\\n'"
                       f" > ~/ca/Dockerfile && {CLASSIC} ~/ca",
        "buildkit-ADD": f"rm -rf ~/bk-out && mkdir -p ~/bk && printf 'FROM scratch\\n{add}\\n'"
                        f" > ~/bk/Dockerfile && {BUILDKIT} -o type=local,dest=$HOME/bk-out ~/bk"
                        " ; cat ~/bk-out/s",
    }  # fmt: skip


def _remote(url: str) -> str:
    """POST /build?remote=URL, straight to the daemon."""
    return (f"curl -sS --unix-socket /run/docker-$USER.sock -X POST"
            f" 'http://docker/v1.41/build?remote={url}&nocache=1'")  # fmt: skip


VECTORS = list(_vectors("x"))
TARGETS = ["loopback", "metadata", "listed", "bob"]


@pytest.mark.parametrize("vector", VECTORS)
@pytest.mark.parametrize("where", TARGETS)
def test_the_daemon_fetches_nothing_its_containers_could_not(
    lab: host.Lab, targets: dict[str, str], where: str, vector: str
) -> None:
    command = _vectors(targets[where])[vector]
    result = lab.ssh("alice", command, check=False, timeout=180)
    said = result.stdout + result.stderr
    assert SECRET not in said, f"{where} via {vector}: {said}"
    assert result.returncode != 0 or "error" in said, said
    # A network error naming the address, not a silent hang or a foreign one.
    assert targets[where].split(":")[0] in said, said
    refusals = ("no route to host", "operation not permitted", "Couldn't connect to server")
    assert any(w in said for w in refusals), said


def test_nothing_of_the_secret_is_in_the_tenants_data(lab: host.Lab, targets: dict[str, str]
                                                      ) -> None:  # fmt: skip
    for where in TARGETS:
        for vector in VECTORS:
            lab.ssh("alice", _vectors(targets[where])[vector], check=False, timeout=180)
    found = lab.run(["grep", "-rl", "--exclude-dir=containers", SECRET,
                     "/var/lib/dtenant/tenants/alice", "/home/alice"], check=False)  # fmt: skip
    assert found.stdout == "", found.stdout


def test_fetches_from_outside_keep_working(lab: host.Lab, targets: dict[str, str],
                                           outside: str) -> None:  # fmt: skip
    lab.ssh("alice", f"docker import http://{outside}/ok.tar allowed-import")
    lab.ssh("alice", "docker image rm allowed-import")
    add = f"ADD http://{outside}/ok /ok"
    lab.ssh("alice", f"mkdir -p ~/ok && printf 'FROM {IMAGE}\\n{add}\\nRUN cat /ok\\n'"
            f" > ~/ok/Dockerfile && {CLASSIC} -q ~/ok")  # fmt: skip
    built = lab.ssh("alice", f"rm -rf ~/okout && mkdir -p ~/okb && printf 'FROM scratch\\n{add}"
                    f"\\n' > ~/okb/Dockerfile && {BUILDKIT} -o type=local,dest=$HOME/okout ~/okb"
                    " >/dev/null 2>&1; cat ~/okout/ok")  # fmt: skip
    assert built.stdout.strip() == "ok"


def test_published_ports_and_own_containers_keep_working(lab: host.Lab, targets: dict[str, str]
                                                         ) -> None:  # fmt: skip
    lab.ssh("alice", "docker rm -f egress-own >/dev/null 2>&1; docker run -d --name egress-own"
            f" -p 127.0.0.1:18091:80 {IMAGE} sh -c 'mkdir /w && echo mine > /w/i && httpd -f"
            " -p 80 -h /w'")  # fmt: skip
    try:
        time.sleep(1)
        assert lab.ssh("alice", "wget -qO- http://127.0.0.1:18091/i").stdout.strip() == "mine"
        ip = lab.ssh("alice", "docker inspect -f '{{.NetworkSettings.IPAddress}}' egress-own"
                     ).stdout.strip()  # fmt: skip
        # The daemon may fetch from the tenant's own containers: they could anyway.
        built = lab.ssh("alice", f"{CLASSIC} http://{ip}/i", check=False)
        assert "unknown instruction: MINE" in built.stdout + built.stderr
    finally:
        lab.ssh("alice", "docker rm -f egress-own", check=False)


def test_buildkit_run_steps_get_no_host_network(lab: host.Lab, targets: dict[str, str]) -> None:
    result = lab.ssh("alice", f"mkdir -p ~/bkrun && printf 'FROM {IMAGE}\\nRUN wget -qO-"
                     f" http://{LOOPBACK}/secret\\n' > ~/bkrun/Dockerfile && {BUILDKIT} ~/bkrun",
                     check=False, timeout=180)  # fmt: skip
    assert SECRET not in result.stdout + result.stderr
    assert result.returncode != 0


def _alice_fetch_is_refused(lab: host.Lab) -> str:
    result = lab.ssh("alice", f"docker import http://{LOOPBACK}/secret.tar leak", check=False)
    said = result.stdout + result.stderr
    assert SECRET not in said and result.returncode != 0, said
    return said


def test_the_filter_follows_a_recreated_slice(lab: host.Lab, targets: dict[str, str]) -> None:
    """Stopping dtenant.slice removes its cgroup; the next one has a new id."""
    before = lab.run(["stat", "-c", "%i", _cgroup(lab, "dtenant.slice")]).stdout
    for _ in range(5):  # a socket activation meanwhile cancels the stop job: again
        if lab.run(["systemctl", "stop", "dtenant.slice"], check=False).returncode == 0:
            break
        time.sleep(1)
    else:
        raise AssertionError("dtenant.slice could not be stopped")
    lab.ssh("alice", "docker ps -q")  # the daemon starts again, in a new slice
    assert lab.run(["stat", "-c", "%i", _cgroup(lab, "dtenant.slice")]).stdout != before
    assert "no route to host" in _alice_fetch_is_refused(lab)


def test_a_lost_filter_is_loaded_again_before_the_daemon_starts(
    lab: host.Lab, targets: dict[str, str]
) -> None:
    lab.run(["systemctl", "stop", "docker@alice.service"])
    lab.run(["nft", "delete", "table", "inet", "dtenant"])
    lab.ssh("alice", "docker ps -q")
    assert "no route to host" in _alice_fetch_is_refused(lab)


def test_a_daemon_whose_traffic_cannot_be_filtered_does_not_start(
    lab: host.Lab, targets: dict[str, str]
) -> None:
    lab.run(["systemctl", "stop", "docker@alice.service"])
    lab.run(["nft", "delete", "table", "inet", "dtenant"])
    lab.sh("mount --bind /bin/false /usr/sbin/nft")
    try:
        said = ""
        for _ in range(10):  # the first client may only see the start fail
            refused = lab.ssh("alice", "docker ps -q", check=False)
            assert refused.returncode != 0
            said = refused.stderr
            if "refusing" in said:
                break
            time.sleep(0.5)
        # The user is told, on the socket (dtenant-daemon-failed@.service).
        assert "refusing to start the daemon of alice: its outgoing traffic" in said, said
    finally:
        lab.sh("umount /usr/sbin/nft")
        lab.run(["dtenant", "firewall", "sync"])
        lab.run(["systemctl", "stop", "dtenant-daemon-failed@alice.service"], check=False)
        lab.run(["systemctl", "reset-failed", "docker@alice.service", "docker@alice.socket"],
                check=False)  # fmt: skip
        lab.run(["systemctl", "start", "docker@alice.socket"])
    lab.ssh("alice", "docker ps -q")


def test_the_daemon_still_reaches_the_hosts_resolver(lab: host.Lab, targets: dict[str, str]
                                                     ) -> None:  # fmt: skip
    """DNS to the host's own addresses (systemd-resolved's 127.0.0.53) stays open."""
    lab.run(["systemd-run", "--unit=egress-dns", "python3", "-c",
             "import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
             "s.bind(('127.0.0.53', 53))\nwhile True:\n"
             "    data, peer = s.recvfrom(512)\n    s.sendto(data, peer)\n"])  # fmt: skip
    try:
        time.sleep(0.5)
        probe = (
            "import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
            "s.settimeout(3)\ns.sendto(b'q', ('127.0.0.53', 53))\nprint(s.recv(9))\n"
        )
        # --collect: the failing probe leaves no failed unit (the lab would be "degraded").
        run = ["systemd-run", "--slice=dtenant-alice.slice", "--wait", "--pipe", "--collect"]
        answer = lab.run([*run, "python3", "-c", probe])
        assert "b'q'" in answer.stdout
        other = probe.replace("53))", "54))")
        refused = lab.run([*run, "python3", "-c", other], check=False)
        assert "Operation not permitted" in refused.stdout + refused.stderr
    finally:
        lab.run(["systemctl", "stop", "egress-dns"], check=False)


def _cgroup(lab: host.Lab, group: str) -> str:
    """`group`'s directory in the lab's cgroup2 hierarchy (unified or hybrid)."""
    found = lab.sh("findmnt -n -t cgroup2 -o TARGET | head -1").stdout.strip()
    return f"{found}/{shlex.quote(group)}"
