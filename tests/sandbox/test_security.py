"""The escape suite: every vector as the tenant over SSH, each denied with a clear message
and no effect on the host; and the everyday work that must keep working."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests import testimage
from tests.lab import host
from tests.sandbox.conftest import RAWAPI, container_root, load_image, policy_in_force

IMAGE = testimage.IMAGE
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
def test_raw_api_tricks_are_denied(lab: host.Lab, alice: str, rawapi: str, case: str,
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


# -- user namespaces: container root is nobody, the user keeps her own id ------------------


def _host_uid(lab: host.Lab, pid: str) -> str:
    """The uid the host's ps shows for pid (ps prints uids above 2^31 as negative)."""
    return lab.run(["stat", "-c", "%u", f"/proc/{pid}"]).stdout.strip()


def _ids(lab: host.Lab, user: str) -> tuple[int, int]:
    uid, gid = lab.run(["id", "-u", user]).stdout.strip(), lab.run(["id", "-g", user]).stdout
    return int(uid), int(gid.strip())


def _logins(lab: host.Lab) -> dict[int, str]:
    """uid -> name of every passwd entry with a login shell."""
    entries = [line.split(":") for line in lab.run(["getent", "passwd"]).stdout.splitlines()]
    return {int(e[2]): e[0] for e in entries if not e[6].endswith(("nologin", "false"))}


def test_container_root_is_an_id_nobody_logs_in_as(lab: host.Lab, alice: str) -> None:
    lab.ssh(
        "alice", f"docker rm -f ps1 >/dev/null 2>&1; docker run -d --name ps1 {IMAGE} sleep 300"
    )
    try:
        pid = lab.ssh("alice", "docker inspect -f '{{.State.Pid}}' ps1").stdout.strip()
        root = int(_host_uid(lab, pid))
        gid = int(lab.run(["stat", "-c", "%g", f"/proc/{pid}"]).stdout)
    finally:
        lab.ssh("alice", "docker rm -f ps1", check=False)
    assert root not in _logins(lab) and root >= 65536
    groups = [line.split(":") for line in lab.run(["getent", "group"]).stdout.splitlines()]
    members = {int(g[2]): g[3] for g in groups}
    assert members.get(gid, "") == ""  # no user is in container root's group
    account = lab.run(["getent", "passwd", str(root)]).stdout.split(":")
    assert account[0].startswith("_dtenant") and account[6].strip() == "/usr/sbin/nologin"
    # and it is alice's alone: bob's container root is another id
    lab.ssh("bob", f"docker rm -f ps1 >/dev/null 2>&1; docker run -d --name ps1 {IMAGE} sleep 300")
    try:
        pid = lab.ssh("bob", "docker inspect -f '{{.State.Pid}}' ps1").stdout.strip()
        assert abs(int(_host_uid(lab, pid)) - root) >= 65536
    finally:
        lab.ssh("bob", "docker rm -f ps1", check=False)


def test_the_user_keeps_her_own_id_inside_the_container(lab: host.Lab, alice: str) -> None:
    uid, gid = _ids(lab, "alice")
    lab.ssh("alice", "mkdir -p ~/w && rm -f ~/w/mine ~/w/roots && docker run --rm "
            f"--user \"$(id -u):$(id -g)\" -v ~/w:/w {IMAGE} touch /w/mine && "
            f"docker run --rm -v ~/w:/w {IMAGE} touch /w/roots")  # fmt: skip
    mine = lab.run(["stat", "-c", "%u %g", "/home/alice/w/mine"]).stdout.split()
    assert mine == [str(uid), str(gid)]
    roots = int(lab.run(["stat", "-c", "%u", "/home/alice/w/roots"]).stdout)
    assert roots not in _logins(lab)
    # The user can still remove what container root wrote in her directory.
    lab.ssh("alice", "rm -f ~/w/roots ~/w/mine")


def test_the_host_reserves_the_block_and_the_daemon_reads_its_own_map(
    lab: host.Lab, alice: str
) -> None:
    uid, _ = _ids(lab, "alice")
    root = container_root(lab, "alice")
    subuid = lab.run(["cat", "/etc/subuid"]).stdout.splitlines()
    assert [line for line in subuid if line.startswith(f"{root}:")] == [f"{root}:{root}:65536"]
    assert f"alice:{uid}:1" not in subuid  # 0.1's line: container root was the user
    private = lab.run(["cat", "/var/lib/dtenant/tenants/alice/subuid"]).stdout.split()
    assert private == [f"{root}:{root}:{uid}", f"{root}:{uid}:1",
                       f"{root}:{root + uid + 1}:{65536 - uid - 1}"]  # fmt: skip
    assert lab.run(["getent", "passwd", str(root)]).stdout.startswith("_dtenant")


def test_the_map_survives_shadow_sorting_the_host_files(lab: host.Lab, alice: str) -> None:
    # useradd allocating a range sorts /etc/subuid by range start: the user's own uid
    # would come first and be container root if the daemon read that file.
    lab.run(["useradd", "--create-home", "sorter"], check=False)
    lab.run(["systemctl", "restart", "docker@alice.service"])
    test_container_root_is_an_id_nobody_logs_in_as(lab, alice)
    test_the_user_keeps_her_own_id_inside_the_container(lab, alice)


def _tar_with_devices() -> bytes:
    import io
    import tarfile

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, kind, major, minor in (("dev/vda", tarfile.BLKTYPE, 254, 0),
                                         ("dev/kmsg", tarfile.CHRTYPE, 1, 11)):  # fmt: skip
            info = tarfile.TarInfo(name)
            info.type, info.devmajor, info.devminor, info.mode = kind, major, minor, 0o666
            tar.addfile(info)
        fifo = tarfile.TarInfo("tmp/fifo")
        fifo.type, fifo.mode = tarfile.FIFOTYPE, 0o666
        tar.addfile(fifo)
    return buffer.getvalue()


def test_nothing_docker_keeps_is_within_the_users_reach(lab: host.Lab, alice: str) -> None:
    lab.ssh("alice", "docker import - devices:latest", input=_tar_with_devices())
    lab.ssh("alice", "docker rm -f keep >/dev/null 2>&1; docker volume create kv >/dev/null; "
            "docker network create kn >/dev/null 2>&1; "
            f"docker run -d --name keep --network kn -v kv:/v {IMAGE} sleep 300; "
            f"mkdir -p ~/bld && printf 'FROM {IMAGE}\\nRUN echo x > /x\\n' > ~/bld/Dockerfile && "
            "DOCKER_BUILDKIT=0 docker build -q -t kb ~/bld")  # fmt: skip
    try:
        uid, gid = _ids(lab, "alice")
        # As root: nothing Docker keeps for itself is owned by alice. Not inside layers and
        # volumes: what a container writes there as alice's own id (keep-id) is alice's,
        # behind parents she cannot pass (below).
        found = lab.run(["find", "/run/dtenant", "/var/lib/dtenant", "/run/docker",
                         "(", "-path", "*/diff", "-o", "-path", "*/_data", ")", "-prune", "-o",
                         "(", "-uid", str(uid), "-o", "-gid", str(gid), ")",
                         "-print"], check=False).stdout  # fmt: skip
        assert found.strip() == ""
        # As alice: nothing past the shared parents can be listed or reached.
        reach = lab.ssh("alice", "find /run/dtenant /var/lib/dtenant -mindepth 1 2>/dev/null; "
                        "ls -d /var/lib/dtenant/tenants/alice/docker/*/overlay2 "
                        "/run/dtenant/tenants/alice/exec 2>&1", check=False)  # fmt: skip
        assert "Permission denied" in reach.stdout
        listed = [line for line in reach.stdout.splitlines() if not line.startswith("ls:")]
        assert listed == [], listed
        # The device nodes exist in the layer, but only container root's ids own them.
        nodes = lab.run(["find", "/var/lib/dtenant/tenants/alice", "-path", "*/diff/dev/vda",
                         "-printf", "%u\n"]).stdout.split()  # fmt: skip
        assert nodes and all(owner.startswith("_dtenant") for owner in nodes)
    finally:
        lab.ssh("alice", "docker rm -f keep; docker volume rm kv; docker network rm kn; "
                "docker rmi devices kb", check=False)  # fmt: skip


def test_a_directory_user_without_ranges_gets_its_own_block(lab: host.Lab) -> None:
    lab.add_account("ldapuser")
    lab.run(["sed", "-i", "/^ldapuser:/d", "/etc/subuid", "/etc/subgid"])  # as SSSD users have
    load_image(lab, "ldapuser")
    lab.ssh("ldapuser", f"docker run -d --name rr --user 5 {IMAGE} sleep 300")
    try:
        pid = lab.ssh("ldapuser", "docker inspect -f '{{.State.Pid}}' rr").stdout.strip()
        assert int(_host_uid(lab, pid)) == container_root(lab, "ldapuser") + 5
    finally:
        lab.ssh("ldapuser", "docker rm -f rr", check=False)


def test_tenants_sharing_a_primary_group_share_nothing(lab: host.Lab, alice: str) -> None:
    for user in ("grp1", "grp2"):  # as with LDAP's usual `users` group
        lab.run(["useradd", "--create-home", "--gid", "users", "--shell", "/bin/bash", user])
        lab.authorize_key(user)
        load_image(lab, user)
    lab.ssh("grp1", f"docker run --rm -v secret:/v {IMAGE} sh -c 'echo s > /v/f; chmod 640 /v/f'")
    probe = lab.ssh("grp2", "cat /var/lib/dtenant/tenants/grp1/docker/*/volumes/secret/_data/f; "
                    "ls /var/lib/dtenant/tenants/grp1/docker", check=False)  # fmt: skip
    assert "Permission denied" in probe.stderr and "s" not in probe.stdout.split()
    groups = {lab.run(["stat", "-c", "%g", f"/var/lib/dtenant/tenants/{user}/docker"]).stdout
              for user in ("grp1", "grp2")}  # fmt: skip
    assert len(groups) == 2 and "100\n" not in groups


def test_tenant_files_are_not_world_readable(lab: host.Lab, alice: str) -> None:
    mode = lab.run(["stat", "-c", "%a %U", "/var/lib/dtenant/tenants/alice/daemon.json"])
    assert mode.stdout.split() == ["600", "root"]
    assert lab.ssh("alice", "cat /var/lib/dtenant/tenants/alice/daemon.json",
                   check=False).returncode != 0  # fmt: skip


# -- the daemon writes nowhere but its own places ----------------------------------------


def _gone(lab: host.Lab, *paths: str) -> None:
    for path in paths:
        assert lab.run(["test", "-e", path], check=False).returncode == 1, path


def test_a_bind_source_swapped_between_create_and_start_creates_nothing(
    lab: host.Lab, alice: str
) -> None:
    lab.ssh("bob", "true")
    swaps = [("/etc", "/etc/nologin"), ("/home/bob", "/home/bob/x"), ("/run", "/run/x"),
             ("/var/lib/dtenant/tenants/bob", "/var/lib/dtenant/tenants/bob/x"),
             ("/usr/lib/dtenant", "/usr/lib/dtenant/x")]  # fmt: skip
    for target, created in swaps:
        name = created.rsplit("/", 1)[1]
        script = (f"rm -rf ~/sw; mkdir -p ~/sw; docker rm -f sw >/dev/null 2>&1; "
                  f"docker create --name sw -v ~/sw/{name}:/x {IMAGE} true >/dev/null && "
                  f"rm -rf ~/sw && ln -s {target} ~/sw && docker start sw")  # fmt: skip
        lab.ssh("alice", script, check=False)
        _gone(lab, created)
    lab.ssh("alice", "docker rm -f sw; rm -f ~/sw", check=False)


def test_a_start_checks_the_binds_as_they_are_now(lab: host.Lab, alice: str) -> None:
    lab.ssh("alice", "rm -rf ~/st; mkdir ~/st; docker rm -f st >/dev/null 2>&1; "
            f"docker create --name st -v ~/st:/x {IMAGE} true >/dev/null; "
            "rm -rf ~/st; ln -s /etc ~/st")  # fmt: skip
    try:
        _denied(lab, "docker start st", "really /etc")
    finally:
        lab.ssh("alice", "docker rm -f st; rm -f ~/st", check=False)


def test_a_mount_source_swapped_after_create_is_checked_at_start(lab: host.Lab, alice: str) -> None:
    # --mount (HostConfig.Mounts), not -v: the start check covers both.
    lab.ssh("alice", "rm -rf ~/mt; mkdir ~/mt; docker rm -f mt >/dev/null 2>&1; "
            f"docker create --name mt --mount type=bind,src=$HOME/mt,dst=/x {IMAGE} true "
            ">/dev/null; rm -rf ~/mt; ln -s /etc ~/mt")  # fmt: skip
    try:
        _denied(lab, "docker start mt", "really /etc")
    finally:
        lab.ssh("alice", "docker rm -f mt; rm -f ~/mt", check=False)


def test_a_policy_change_reaches_containers_made_before(lab: host.Lab, alice: str) -> None:
    lab.ssh("alice", f"mkdir -p ~/data; docker rm -f old >/dev/null 2>&1; "
            f"docker create --name old -v ~/data:/d {IMAGE} true")  # fmt: skip
    lab.run(["mkdir", "-p", "/etc/dtenant/dtenant.toml.d", "/scratch"])
    dropin = "/etc/dtenant/dtenant.toml.d/60-test-binds.toml"
    lab.run(["tee", dropin], input='[policy]\nbind_roots = ["/scratch/{user}"]\n')
    changed = time.monotonic()
    try:
        lab.run(["dtenant", "setup"])
        policy_in_force(changed)
        _denied(lab, "docker start old", "only paths under /scratch/alice")
    finally:
        lab.run(["rm", "-f", dropin])
        lab.run(["dtenant", "setup"])
        lab.ssh("alice", "docker rm -f old", check=False)


def test_docker_cp_cannot_read_through_a_swapped_bind(lab: host.Lab, alice: str) -> None:
    lab.ssh("alice", f"rm -rf ~/cp; mkdir ~/cp; docker rm -f cp1 >/dev/null 2>&1; "
            f"docker run -d --name cp1 -v ~/cp:/c {IMAGE} sleep 300 >/dev/null; "
            "rm -rf ~/cp; ln -s /etc ~/cp")  # fmt: skip
    try:
        result = lab.ssh("alice", "docker cp cp1:/c/shadow - | head -c 300", check=False)
        assert "root:" not in result.stdout
        _denied(lab, "docker cp cp1:/c/shadow -", "docker cp is not available")
    finally:
        lab.ssh("alice", "docker rm -f cp1; rm -f ~/cp", check=False)


def test_a_swap_race_never_creates_etc_nologin(lab: host.Lab, alice: str) -> None:
    script = f"""
        rm -rf ~/race; mkdir ~/race
        ( end=$(($(date +%s) + 20)); while [ $(date +%s) -lt $end ]; do
            rm -rf ~/race.tmp; mkdir ~/race.tmp; mv -T ~/race.tmp ~/race 2>/dev/null
            ln -sfn /etc ~/race.tmp && mv -T ~/race.tmp ~/race 2>/dev/null
          done ) &
        for i in $(seq 25); do
            docker run --rm -v ~/race/nologin:/x {IMAGE} true >/dev/null 2>&1
        done
        wait
    """
    lab.ssh("alice", script, check=False, timeout=300)
    _gone(lab, "/etc/nologin")
    lab.ssh("alice", "rm -rf ~/race ~/race.tmp", check=False)
    assert lab.ssh("bob", "true").returncode == 0  # logins still work


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
