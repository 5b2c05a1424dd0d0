"""limits.disk_max in a lab. A lab may not use loop devices: they are the real machine's
(attaching one changes a host device, and when all are busy the kernel makes a new node in
the host's /dev), and the lab's own /dev has none. So a lab shows the fail-closed side: a
tenant whose disk cannot be mounted never starts its daemon on the bare directory (which
would fill the disk everyone shares), its user is told why, and the others keep working."""

from __future__ import annotations

import time

import pytest

from tests.lab import host
from tests.sandbox.conftest import load_image

USER = "diskcap"
DROPIN = "/etc/dtenant/dtenant.toml.d/60-disk.toml"


def test_a_capped_tenant_without_its_disk_does_not_start(lab: host.Lab, tenants: tuple[str, ...]
                                                         ) -> None:  # fmt: skip
    if lab.run(["test", "-e", "/dev/loop-control"], check=False).returncode == 0:
        pytest.skip("this lab has loop devices")
    lab.add_account(USER)
    load_image(lab, USER)
    lab.run(["systemctl", "stop", f"docker@{USER}.service"])
    root = f"/var/lib/dtenant/tenants/{USER}/docker"
    before = lab.sh(f"find {root} -newer /etc/hostname | sort | md5sum").stdout
    lab.sh(f"mkdir -p /etc/dtenant/dtenant.toml.d && printf '[limits]\\ndisk_max = \"2G\"\\n'"
           f" > {DROPIN}")  # fmt: skip
    try:
        made = lab.run(["dtenant", "provision", USER], check=False)
        assert made.returncode != 0 and "loop" in made.stderr.lower(), made.stderr
        for _ in range(10):
            refused = lab.ssh(USER, "docker ps", check=False)
            assert refused.returncode != 0
            if "cannot start" in refused.stderr:
                break
            time.sleep(1)
        assert "is not its own disk" in refused.stderr, refused.stderr
        assert lab.sh(f"find {root} -newer /etc/hostname | sort | md5sum").stdout == before
        assert lab.run(["pgrep", "-f", f"tenants/{USER}/daemon.json"], check=False).returncode
        # Another tenant's daemon, started without a login (a login now would provision
        # it with a disk, which this lab cannot mount either).
        other = f"unix:///run/docker-{tenants[1]}.sock"
        assert lab.run(["docker", "-H", other, "ps", "-q"], check=False).returncode == 0
        verify = lab.run(["dtenant", "verify", "--tenant", USER], check=False)
        assert "is not its own disk" in verify.stdout, verify.stdout
    finally:
        lab.run(["rm", "-f", DROPIN])
        for user in (USER, *tenants):  # uncapped again: as they were
            lab.run(["dtenant", "provision", user], check=False)
        lab.sh("systemctl reset-failed 'var-lib-dtenant-*.mount'", check=False)
    assert lab.ssh(USER, "docker ps -q", check=False).returncode == 0
