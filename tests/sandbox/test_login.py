"""Login provisioning end to end: real SSH logins, real daemons, real networks."""

from __future__ import annotations

import ipaddress
import json
import shlex
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests import testimage
from tests.lab import host
from tests.sandbox.conftest import Journal, container_root

IMAGE = testimage.IMAGE


def _status(lab: host.Lab) -> dict[str, dict[str, object]]:
    rows = json.loads(lab.run(["dtenant", "status", "--json"]).stdout)
    return {row["user"]: row for row in rows}


def test_first_login_then_docker_with_no_flags(lab: host.Lab) -> None:
    lab.add_account("carol")
    script = (
        "systemctl is-active docker@carol.service;"
        f" {shlex.join(testimage.import_argv())} >/dev/null"
        f" && docker run --rm {IMAGE} echo hi;"
        " systemctl is-active docker@carol.service"
    )
    result = lab.ssh("carol", script, input=testimage.build(), check=False)
    # The login provisioned the socket but did not start the daemon; `docker` did.
    assert result.stdout.split() == ["inactive", "hi", "active"], result.stderr


def test_each_account_has_its_own_daemon_and_data_root(
    lab: host.Lab, tenants: tuple[str, ...]
) -> None:
    roots = {
        user: lab.ssh(user, "docker info --format '{{.DockerRootDir}}'").stdout.strip()
        for user in tenants
    }
    for user in tenants:
        root = container_root(lab, user)
        # userns-remap keeps a remapped daemon's state in DATA-ROOT/UID.GID of its root
        assert roots[user] == f"/var/lib/dtenant/tenants/{user}/docker/{root}.{root}"
    assert len(set(roots.values())) == len(tenants)


def test_accounts_cannot_see_each_others_objects(lab: host.Lab, tenants: tuple[str, ...]) -> None:
    lab.ssh("alice", f"docker create --name alice-secret {IMAGE} true")
    lab.ssh("alice", "docker volume create alice-vol && docker tag dtenant/busybox alice/private:1")
    listing = "docker ps -a --format '{{.Names}}'; docker volume ls -q; docker images"
    try:
        assert lab.ssh("alice", listing).stdout.count("alice") == 3
        assert "alice" not in lab.ssh("bob", listing).stdout
    finally:
        lab.ssh("alice", "docker rm alice-secret; docker volume rm alice-vol; "
                "docker rmi alice/private:1", check=False)  # fmt: skip


def test_another_account_cannot_use_the_socket(lab: host.Lab, tenants: tuple[str, ...]) -> None:
    result = lab.ssh("bob", "docker -H unix:///run/docker-alice.sock ps", check=False)
    assert result.returncode != 0
    assert "permission denied" in result.stderr.lower()


def test_root_gets_no_docker_host(lab: host.Lab) -> None:
    lab.authorize_key("root")
    over_ssh = lab.ssh("root", 'echo "DOCKER_HOST=${DOCKER_HOST:-unset}"').stdout.strip()
    via_su = lab.run(["su", "-", "root", "-c", 'echo "DOCKER_HOST=${DOCKER_HOST:-unset}"'])
    assert over_ssh == "DOCKER_HOST=unset"
    assert via_su.stdout.strip() == "DOCKER_HOST=unset"


def test_every_way_in_reaches_the_own_daemon(lab: host.Lab, tenants: tuple[str, ...]) -> None:
    root = container_root(lab, "alice")
    expected = f"/var/lib/dtenant/tenants/alice/docker/{root}.{root}"
    fmt = "--format '{{.DockerRootDir}}'"
    non_interactive = lab.ssh("alice", f"docker info {fmt}").stdout.strip()
    interactive = lab.ssh("alice", f"docker info {fmt}", tty=True).stdout.strip()
    via_su = lab.run(["su", "-", "alice", "-c", f"docker info {fmt}"]).stdout.strip()
    sdk = lab.ssh(
        "alice", "python3 -c 'import docker; print(docker.from_env().info()[\"DockerRootDir\"])'"
    ).stdout.strip()
    assert [non_interactive, interactive, via_su, sdk] == [expected] * 4


def _container_ip(lab: host.Lab, user: str, name: str) -> str:
    return lab.ssh(
        user, f"docker inspect -f '{{{{.NetworkSettings.IPAddress}}}}' {name}"
    ).stdout.strip()


BLOCKED = "blocked"


def _fetch_from_container(lab: host.Lab, user: str, address: str) -> str:
    """The page at address:80 as seen from a new container of user; BLOCKED when the
    connection hangs (dropped packets); an error for anything else."""
    # An explicit port: the static busybox cannot look up "http" (no NSS in the image).
    # timeout(1), not wget -T (Debian 12's static busybox wget crashes with -T), under sh:
    # as PID 1 of the container, wget would ignore timeout's SIGTERM.
    url = f"http://{address}:80/"
    script = f"timeout 3 wget -qO- {url}; echo rc=$?"
    result = lab.ssh(user, f"docker run --rm {IMAGE} sh -c '{script}'")
    page, _, code = result.stdout.strip().rpartition("rc=")
    if code == "0":
        return page.strip()
    if code == "143":  # SIGTERM from timeout: no answer at all
        return BLOCKED
    raise AssertionError(f"fetching {url} as {user} failed (rc={code}): {result.stderr}")


@pytest.fixture
def alice_web(lab: host.Lab, tenants: tuple[str, ...]) -> Iterator[str]:
    lab.ssh("alice", "docker rm -f web >/dev/null 2>&1; "
            f"docker run -d --name web -p 8080:80 {IMAGE} httpd -f -p 80 -h /var/www")  # fmt: skip
    yield _container_ip(lab, "alice", "web")
    lab.ssh("alice", "docker rm -f web", check=False)


def test_strict_isolation_between_tenants(lab: host.Lab, alice_web: str, outside: str) -> None:
    from_host = lab.run(["timeout", "3", "wget", "-qO-", "http://127.0.0.1:8080/"], check=False)
    assert from_host.stdout.strip() == "hello from dtenant"
    assert _fetch_from_container(lab, "alice", alice_web) == "hello from dtenant"
    assert _fetch_from_container(lab, "bob", alice_web) == BLOCKED
    assert _fetch_from_container(lab, "alice", outside) == "outside-ok"


def test_open_isolation_routes_between_tenants(lab: host.Lab, alice_web: str) -> None:
    dropin = "/etc/dtenant/dtenant.toml.d/50-open.toml"
    lab.run(["mkdir", "-p", "/etc/dtenant/dtenant.toml.d"])
    lab.run(["tee", dropin], input='[network]\nisolation = "open"\n')
    try:
        lab.run(["dtenant", "firewall", "sync"])
        assert _fetch_from_container(lab, "bob", alice_web) == "hello from dtenant"
    finally:
        lab.run(["rm", "-f", dropin])
        lab.run(["dtenant", "firewall", "sync"])
    assert _fetch_from_container(lab, "bob", alice_web) == BLOCKED


def test_restarting_another_daemon_changes_nothing_for_a_tenant(
    lab: host.Lab, alice_web: str, outside: str
) -> None:
    lab.run(["systemctl", "restart", "docker@bob.service"])
    lab.run(["systemctl", "stop", "docker@bob.service"])
    lab.ssh("bob", "docker ps >/dev/null")  # back through the socket
    from_host = lab.run(["timeout", "3", "wget", "-qO-", "http://127.0.0.1:8080/"], check=False)
    assert from_host.stdout.strip() == "hello from dtenant"
    assert _fetch_from_container(lab, "alice", outside) == "outside-ok"
    assert _fetch_from_container(lab, "bob", alice_web) == BLOCKED


def test_user_defined_networks_get_disjoint_subnets(
    lab: host.Lab, tenants: tuple[str, ...]
) -> None:
    subnets = {}
    for user in tenants:
        lab.ssh(user, "docker network rm mynet >/dev/null 2>&1; docker network create mynet")
        subnets[user] = ipaddress.IPv4Network(lab.ssh(
            user, "docker network inspect -f '{{(index .IPAM.Config 0).Subnet}}' mynet"
        ).stdout.strip())  # fmt: skip
    status = _status(lab)
    for user, subnet in subnets.items():
        assert subnet.subnet_of(ipaddress.IPv4Network(str(status[user]["networks"])))
    assert not subnets["alice"].overlaps(subnets["bob"])


def test_user_defined_networks_are_isolated_too(lab: host.Lab, tenants: tuple[str, ...]) -> None:
    lab.ssh("alice", "docker network rm webnet >/dev/null 2>&1; docker network create webnet")
    lab.ssh(
        "alice", f"docker run -d --name web2 --network webnet {IMAGE} httpd -f -p 80 -h /var/www"
    )
    try:
        ip = lab.ssh(
            "alice", "docker inspect -f '{{.NetworkSettings.Networks.webnet.IPAddress}}' web2"
        ).stdout.strip()
        assert _fetch_from_container(lab, "alice", ip) == "hello from dtenant"
        assert _fetch_from_container(lab, "bob", ip) == BLOCKED
    finally:
        lab.ssh("alice", "docker rm -f web2; docker network rm webnet", check=False)


ODD_NAMES = ("a.b", "x-y", "Upper", "9lives", "abcdefghijklmnopqrstuvwxyz012345")


def test_unusual_user_names_are_provisioned(lab: host.Lab) -> None:
    for name in ODD_NAMES:
        lab.add_account(name)
        socket = lab.ssh(name, f"test -S /run/docker-{name}.sock && echo $DOCKER_HOST").stdout
        assert socket.strip() == f"unix:///run/docker-{name}.sock"
    status = _status(lab)
    for name in ODD_NAMES:
        bridge = str(status[name]["bridge"])
        assert len(bridge) <= 15
        assert lab.run(["ip", "link", "show", bridge]).returncode == 0
    reply = lab.ssh("x-y", "docker version --format '{{.Server.Version}}'").stdout
    assert reply.strip()


def test_concurrent_first_logins(lab: host.Lab) -> None:
    accounts = [f"crowd{i}" for i in range(10)]
    for account in accounts:
        lab.add_account(account)
    logins = accounts * 2
    with ThreadPoolExecutor(max_workers=20) as pool:
        results = list(pool.map(
            lambda user: lab.ssh(user, f"test -S /run/docker-{user}.sock && echo ok", check=False),
            logins,
        ))  # fmt: skip
    journal = lab.run(["journalctl", "-t", "dtenant", "--no-pager", "-o", "cat"]).stdout
    assert [r.stdout.strip() for r in results] == ["ok"] * len(logins), (results, journal)
    status = _status(lab)
    crowd = [status[a] for a in accounts]
    assert len({row["bridge"] for row in crowd}) == len(accounts)
    assert len({row["subnet"] for row in crowd}) == len(accounts)
    assert lab.run(["dtenant", "registry", "check"]).returncode == 0


def _reloads(lab: host.Lab) -> int:
    """How many times systemd has reloaded its units in this boot."""
    lines = lab.run(["journalctl", "-b", "_PID=1", "--no-pager", "-o", "cat"]).stdout
    return sum(line.startswith("Reloading") for line in lines.splitlines())


def test_a_first_login_reloads_no_unit(lab: host.Lab) -> None:
    """A new tenant's units were never loaded: systemd reads their drop-ins when they are
    first used. A reload at each first login would make every other login and unit
    operation of the host wait (50 first logins at once queued on them)."""
    lab.add_account("dora")
    before = _reloads(lab)
    result = lab.ssh("dora", "docker version --format '{{.Server.Version}}'", check=False)
    assert result.returncode == 0, result.stderr
    uid = lab.run(["id", "-u", "dora"]).stdout.strip()
    owner = lab.run(["stat", "-c", "%u %a", "/run/docker-dora.sock"]).stdout.split()
    assert owner == [uid, "600"]
    # ... and its units have their drop-ins all the same: systemd read them at first use.
    shown = lab.run(["systemctl", "show", "-p", "DropInPaths", "-p", "BindPaths", "--value",
                     "docker@dora.service"]).stdout  # fmt: skip
    assert "docker@dora.service.d/" in shown and "/home/dora" in shown
    time.sleep(1)  # journald writes asynchronously
    assert _reloads(lab) == before


def test_a_changed_unit_of_a_running_tenant_is_reloaded(
    lab: host.Lab, tenants: tuple[str, ...]
) -> None:
    """Its units are loaded: a new drop-in (bind roots changed, then provisioned again)
    reaches systemd at once."""
    lab.run(["mkdir", "-p", "/etc/dtenant/dtenant.toml.d", "/scratch/alice"])
    lab.run(["chown", "alice:", "/scratch/alice"])
    dropin = "/etc/dtenant/dtenant.toml.d/60-test-reload.toml"
    lab.run(["tee", dropin], input='[policy]\nbind_roots = ["{home}", "/scratch/{user}"]\n')
    try:
        lab.run(["dtenant", "provision", "alice"])  # as her next login does
        shown = lab.run(["systemctl", "show", "-p", "BindPaths", "--value",
                         "docker@alice.service"]).stdout  # fmt: skip
        assert "/scratch/alice" in shown
    finally:
        lab.run(["rm", "-f", dropin])
        lab.run(["dtenant", "provision", "alice"])
    after = lab.run(["systemctl", "show", "-p", "BindPaths", "--value", "docker@alice.service"])
    assert "/scratch/alice" not in after.stdout


def test_login_survives_an_unwritable_registry(lab: host.Lab) -> None:
    lab.add_account("dave")
    journal = Journal(lab)
    lab.run(["mount", "--bind", "-o", "ro", "/var/lib/dtenant", "/var/lib/dtenant"])
    try:
        assert lab.ssh("dave", "echo in").stdout.strip() == "in"
    finally:
        lab.run(["umount", "/var/lib/dtenant"])
    said = journal.since("provisioning failed")
    assert "provisioning failed" in said
    assert "registry" in said
    lab.ssh("dave", "true")  # the next login converges
    assert "dave" in _status(lab)


def test_login_survives_a_stopped_bus(lab: host.Lab) -> None:
    lab.add_account("erin")
    journal = Journal(lab)
    lab.run(["systemctl", "stop", "dbus.socket", "dbus.service"])
    try:
        assert lab.ssh("erin", "echo in", timeout=60).stdout.strip() == "in"
    finally:
        lab.run(["systemctl", "start", "dbus.socket", "dbus.service"])
        lab.run(["systemctl", "restart", "systemd-logind.service"])
    assert "system bus" in journal.since("system bus")
    lab.ssh("erin", "true")
    assert _status(lab)["erin"]["socket_state"] == "listening"
