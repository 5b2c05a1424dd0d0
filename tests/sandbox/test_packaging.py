"""The Debian package on a lab where dtenant is not installed: install, upgrade, remove,
reinstall, purge; lintian; and the install.sh path from a checkout."""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest

from dtenant_session import command
from tests import testimage
from tests.lab import host
from tests.sandbox.conftest import CHECKOUT, LAB_NAME, build_deb, load_image

IMAGE = testimage.IMAGE
NAME = f"{LAB_NAME}-deb"
UPGRADE = "0.1.0+upgrade1"
# The last commit of version 0.1 (container root mapped to the user): the upgrade path
# from it must keep every tenant's images, containers and volumes.
PREVIOUS = "e7800df7efc4dd3e88160e6029bd8a478435233d"


@pytest.fixture(scope="module")
def debs() -> tuple[Path, Path]:
    return build_deb(), build_deb(UPGRADE)


@pytest.fixture(scope="module")
def bare_lab() -> Iterator[host.Lab]:
    """A lab of its own: nothing of dtenant installed."""
    lab = host.up(NAME, binds=[CHECKOUT])
    try:
        yield lab
    finally:
        host.down(NAME)


def _apt(lab: host.Lab, *args: str) -> command.Result:
    return lab.run(["apt-get", "-y", "-q", *args], timeout=600)


def _version(lab: host.Lab) -> str:
    return lab.run(["dpkg-query", "-W", "-f=${Version} ${db:Status-Status}", "dtenant"],
                   check=False).stdout.strip()  # fmt: skip


def _allocation(lab: host.Lab, user: str) -> dict[str, object]:
    rows = json.loads(lab.run(["dtenant", "status", user, "--json"]).stdout)
    assert isinstance(rows[0], dict)
    kept = ("user", "uid", "slot", "bridge", "subnet", "networks", "socket")  # the allocation
    return {k: v for k, v in rows[0].items() if k in kept}


def _development_tools(paths: list[str]) -> list[str]:
    """Files of the checkout's development tools (labs, test image, tests) among paths."""
    return [p for p in paths if re.search(r"/(lab|tests)(/|$)|testimage", p)]


def _no_lab_command(lab: host.Lab) -> None:
    result = lab.run(["dtenant", "lab", "list"], check=False)
    assert result.returncode == 2 and "invalid choice: 'lab'" in result.stderr, result.stderr


def test_the_package_ships_no_development_tool(debs: tuple[Path, Path], tmp_path: Path) -> None:
    for deb in debs:
        listing = command.run(["/usr/bin/dpkg-deb", "--contents", str(deb)]).stdout
        shipped = [line.split()[-1] for line in listing.splitlines()]
        assert any("/dtenant_session/" in p for p in shipped)
        assert _development_tools(shipped) == []
    command.run([str(CHECKOUT / "packaging" / "install.sh"), str(tmp_path)], timeout=300)
    staged = [f"/{p.relative_to(tmp_path)}" for p in tmp_path.rglob("*")]
    assert any("/dtenant_session/" in p for p in staged)
    assert _development_tools(staged) == []


def test_lintian_is_clean(debs: tuple[Path, Path]) -> None:
    for deb in debs:
        result = command.run(["/usr/bin/lintian", "--fail-on", "error,warning", str(deb)],
                             check=False, timeout=600)  # fmt: skip
        problems = [line for line in result.stdout.splitlines() if line[:2] in ("E:", "W:")]
        assert result.returncode == 0 and not problems, result.stdout + result.stderr


def test_the_package_lifecycle(bare_lab: host.Lab, debs: tuple[Path, Path]) -> None:
    lab = bare_lab
    first, newer = debs
    assert "installed" not in _version(lab)

    # Install with Debian's packages only; the next login gives a working docker.
    _apt(lab, "install", str(first))
    assert _version(lab) == "0.1.0 installed"
    _no_lab_command(lab)
    lab.add_account("pkguser")
    load_image(lab, "pkguser")
    assert lab.ssh("pkguser", f"docker run --rm {IMAGE} echo hi").stdout.strip() == "hi"
    lab.ssh("pkguser", f"docker run -d --name keep --restart unless-stopped {IMAGE} sleep 3600")
    container = lab.ssh("pkguser", "docker inspect -f '{{.Id}}' keep").stdout.strip()
    allocation = _allocation(lab, "pkguser")
    lab.run(["sed", "-i", "s/^#time_limit = 10.0/time_limit = 9.0/", "/etc/dtenant/dtenant.toml"])

    def still_there() -> None:
        running = lab.ssh("pkguser", "docker ps -q --no-trunc").stdout.split()
        assert container in running
        assert lab.ssh("pkguser", f"docker images -q {IMAGE}").stdout.strip()
        assert _allocation(lab, "pkguser") == allocation

    # Upgrade: allocation, data and running containers kept; the local config edit too;
    # the pre-start check's server (started with pkguser's daemon) does not go on with
    # the old version's checks (stopped by the upgrade, it starts with the next daemon).
    server = _main_pid(lab, "dtenant-check.service")
    assert server != "0"
    _apt(lab, "install", str(newer))
    assert _version(lab) == f"{UPGRADE} installed"
    still_there()
    assert _main_pid(lab, "dtenant-check.service") != server
    assert "time_limit = 9.0" in lab.run(["cat", "/etc/dtenant/dtenant.toml"]).stdout
    assert json.loads(lab.run(["dtenant", "config", "--json"]).stdout)["hook"]["time_limit"] == 9.0

    # Remove stops nothing a user runs; installing again brings every tenant back.
    _apt(lab, "remove", "dtenant")
    assert "pam-hook" not in lab.run(["cat", "/etc/pam.d/common-session"]).stdout
    assert _main_pid(lab, "dtenant-check.service") == "0"  # its program went with the package
    assert container in lab.run(["docker", "-H", "unix:///run/docker-pkguser.sock", "ps", "-q",
                                 "--no-trunc"]).stdout  # fmt: skip
    _apt(lab, "install", str(newer))
    assert "pam-hook" in lab.run(["cat", "/etc/pam.d/common-session"]).stdout
    still_there()

    # Purge: configuration and registry gone, tenants' data-roots kept.
    _apt(lab, "purge", "dtenant")
    assert "installed" not in _version(lab)
    gone = ["/etc/dtenant", "/var/lib/dtenant/registry.sqlite3"]
    assert lab.run(["ls", "-d", *gone], check=False).returncode != 0
    kept = lab.run(["ls", "/var/lib/dtenant/tenants/pkguser/docker"]).stdout.split()
    assert ".dtenant-owner" in lab.run(["ls", "-a", "/var/lib/dtenant/tenants/pkguser/docker"]
                                       ).stdout.split()  # fmt: skip
    assert kept


def _main_pid(lab: host.Lab, unit: str) -> str:
    return lab.run(["systemctl", "show", "-p", "MainPID", "--value", unit]).stdout.strip()


def test_setup_leaves_the_package_files_as_shipped(
    bare_lab: host.Lab, debs: tuple[Path, Path]
) -> None:
    """`dtenant setup` with eligibility rules of the host's own changes no file of the
    package (Debian policy; `dpkg --verify` names any it did), yet the rules apply."""
    lab = bare_lab
    _apt(lab, "install", str(debs[0]))
    try:
        lab.run(["groupadd", "-f", "dockerusers"])
        lab.run(["mkdir", "-p", "/etc/dtenant/dtenant.toml.d"])
        lab.run(["tee", "/etc/dtenant/dtenant.toml.d/50-site.toml"], input=(
            '[eligibility]\nmin_uid = 1500\nmax_uid = 50000\ngroups = ["dockerusers"]\n'
            'deny = ["root", "nobody", "mallory"]\n'))  # fmt: skip
        lab.run(["dtenant", "setup"], timeout=300)
        verified = lab.run(["dpkg", "--verify", "dtenant"], check=False)
        assert verified.returncode == 0 and verified.stdout == "", verified.stdout
        lab.run(["useradd", "--create-home", "--uid", "1600", "--groups", "dockerusers",
                 "siteuser"])  # fmt: skip
        lab.authorize_key("siteuser")
        shown = lab.ssh("siteuser", 'echo "${DOCKER_HOST:-unset}"').stdout.strip()
        assert shown == "unix:///run/docker-siteuser.sock"
    finally:
        _apt(lab, "purge", "dtenant")
    assert lab.run(["test", "-e", "/var/lib/dtenant/docker-host-users"],
                   check=False).returncode == 1  # fmt: skip


@pytest.fixture(scope="module")
def previous_deb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """dtenant 0.1 built from its commit in this checkout's history."""
    source = tmp_path_factory.mktemp("dtenant-0.1")
    unpack = f"git -C {shlex.quote(str(CHECKOUT))} archive {PREVIOUS} | tar -C {source} -xf -"
    command.run(["/bin/sh", "-c", unpack], timeout=120)
    out = CHECKOUT / "dist" / "previous"
    built = command.run([str(source / "packaging" / "build-deb"), "--version", "0.1.0~old",
                         str(out)], timeout=900).stdout.strip().splitlines()  # fmt: skip
    return Path(built[-1])


def test_an_upgrade_from_0_1_keeps_data_and_moves_it_to_the_tenants_own_ids(
    bare_lab: host.Lab, previous_deb: Path, debs: tuple[Path, Path]
) -> None:
    lab = bare_lab
    lab.run(["dpkg", "--purge", "dtenant"])  # whatever an earlier test left
    _apt(lab, "install", str(previous_deb))
    lab.add_account("olduser")
    load_image(lab, "olduser")
    uid = lab.run(["id", "-u", "olduser"]).stdout.strip()
    setup = f"""
        set -e
        docker volume create data >/dev/null
        docker run --rm -v data:/v {IMAGE} sh -c 'echo kept > /v/f && chown 1000:1000 /v/f &&
            cp /bin/busybox /v/suid && chmod 4755 /v/suid && mkdir -p /v/deep/a/b &&
            touch /v/deep/a/b/c'
        docker run -d --name svc --restart unless-stopped -v data:/v {IMAGE} sleep 3600 >/dev/null
        docker create --name idle {IMAGE} true >/dev/null
        docker inspect -f '{{{{.Id}}}}' svc
    """
    service = lab.ssh("olduser", setup).stdout.split()[-1]
    assert f"olduser:{uid}:1" in lab.run(["cat", "/etc/subuid"]).stdout  # 0.1's map

    _apt(lab, "install", str(debs[0]))

    # The data is all there, with the same ids inside the containers as before.
    check = f"""
        set -e
        docker ps -a --format '{{{{.Names}}}}' | sort | tr '\\n' ' '; echo
        docker run --rm -v data:/v -w /v {IMAGE} sh -c 'cat f; stat -c "%u:%g %a" f suid deep/a/b/c'
        docker images -q {IMAGE}
    """
    lines = lab.ssh("olduser", check).stdout.splitlines()  # a failure shows its stderr
    assert lines[0].split() == ["idle", "svc"]
    assert lines[1:5] == ["kept", "1000:1000 644", "0:0 4755", "0:0 644"]
    assert lines[5]
    # Its restart policy brought the container back.
    running = lab.ssh("olduser", "sleep 2; docker ps -q --no-trunc").stdout.split()
    assert service in running
    # The map is the new one: container root is the tenant's own account.
    pid = lab.ssh("olduser", "docker inspect -f '{{.State.Pid}}' svc").stdout.strip()
    root = lab.run(["stat", "-c", "%U", f"/proc/{pid}"]).stdout.strip()
    assert root.startswith("_dtenant")
    assert f"olduser:{uid}:1" not in lab.run(["cat", "/etc/subuid"]).stdout
    owners = lab.run(["find", "/var/lib/dtenant/tenants/olduser", "-uid", uid]).stdout
    assert owners.strip() == ""


def test_install_script_from_a_checkout(bare_lab: host.Lab) -> None:
    lab = bare_lab
    lab.run(["dpkg", "--purge", "dtenant"])  # whatever an earlier test left
    # What an install.sh of an earlier version left: the labs, shipped then.
    stale = "/usr/lib/python3/dist-packages/dtenant_session/lab/cli.py"
    lab.run(["install", "-D", "/dev/null", stale])
    lab.run([str(CHECKOUT / "packaging" / "install.sh")])
    assert lab.run(["test", "-e", stale], check=False).returncode == 1
    _no_lab_command(lab)
    # The manual, as the package installs it: `man dtenant` finds it.
    assert lab.run(["man", "-w", "dtenant"]).stdout.strip() == "/usr/share/man/man8/dtenant.8"
    lab.add_account("scriptuser")
    load_image(lab, "scriptuser")
    assert lab.ssh("scriptuser", f"docker run --rm {IMAGE} echo hi").stdout.strip() == "hi"
