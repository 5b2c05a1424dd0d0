"""The Debian package on a lab where dtenant is not installed: install, upgrade, remove,
reinstall, purge; lintian; and the install.sh path from a checkout."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from dtenant_session import command, testimage
from dtenant_session.lab import host
from tests.sandbox.conftest import CHECKOUT, build_deb, load_image

IMAGE = testimage.IMAGE
NAME = "pytest-deb"
UPGRADE = "0.1.0+upgrade1"


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
    return {k: v for k, v in rows[0].items() if k not in ("socket_state", "daemon_state")}


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

    # Upgrade: allocation, data and running containers kept; the local config edit too.
    _apt(lab, "install", str(newer))
    assert _version(lab) == f"{UPGRADE} installed"
    still_there()
    assert "time_limit = 9.0" in lab.run(["cat", "/etc/dtenant/dtenant.toml"]).stdout
    assert json.loads(lab.run(["dtenant", "config", "--json"]).stdout)["hook"]["time_limit"] == 9.0

    # Remove stops nothing a user runs; installing again brings every tenant back.
    _apt(lab, "remove", "dtenant")
    assert "pam-hook" not in lab.run(["cat", "/etc/pam.d/common-session"]).stdout
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


def test_install_script_from_a_checkout(bare_lab: host.Lab) -> None:
    lab = bare_lab
    lab.run(["dpkg", "--purge", "dtenant"])  # whatever an earlier test left
    lab.run([str(CHECKOUT / "packaging" / "install.sh")])
    lab.add_account("scriptuser")
    load_image(lab, "scriptuser")
    assert lab.ssh("scriptuser", f"docker run --rm {IMAGE} echo hi").stdout.strip() == "hi"
