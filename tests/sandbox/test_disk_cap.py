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


# --- A virtual-machine lab: its own kernel, hence loop devices of its own ------------------
#
# The happy path, on a lab disk of ext4 and of xfs (the host filesystem holding the tenants'
# sparse images): a cap set on a tenant with data carries everything over; at its cap the
# tenant alone gets "no space left on device"; a larger cap grows the disk under a running
# container; a reboot brings the disk back with its data.

CAPPED, NEIGHBOUR = "dana", "erin"  # both capped; dana fills hers
TENANTS = "/var/lib/dtenant/tenants"
DOCKER_DATA = (
    "docker volume create keep >/dev/null && docker run --name kept -v keep:/v "
    "dtenant/busybox:latest sh -c 'echo carried > /v/note && echo layer > /mine'"
)


def _cap(lab: host.Lab, size: str) -> None:
    lab.sh(f"mkdir -p /etc/dtenant/dtenant.toml.d && printf '[limits]\\ndisk_max = \"{size}\"\\n'"
           f" > {DROPIN}")  # fmt: skip


def _mount_of(lab: host.Lab, user: str) -> tuple[str, str]:
    """(source, fstype) of the tenant's data-root mount."""
    found = lab.run(["findmnt", "-n", "-o", "SOURCE,FSTYPE", f"{TENANTS}/{user}/docker"],
                    check=False).stdout.split()  # fmt: skip
    return (found[0], found[1]) if len(found) == 2 else ("", "")


def _disk_of(lab: host.Lab, user: str) -> str:
    """The tenant's SIZE column of `dtenant status`."""
    header, row = lab.run(["dtenant", "status", user]).stdout.splitlines()[:2]
    return row.split()[header.split().index("SIZE")]


@pytest.fixture(scope="module")
def capped(vm_lab: host.Lab) -> str:
    """dana with an image, a volume and a stopped container, then capped at 1G."""
    lab = vm_lab
    for user in (CAPPED, NEIGHBOUR):
        lab.add_account(user)
        load_image(lab, user)
    lab.ssh(CAPPED, DOCKER_DATA, timeout=600)
    assert _mount_of(lab, CAPPED) == ("", "")  # the bare data-root, on the lab's disk
    _cap(lab, "1G")
    made = lab.run(["dtenant", "provision", CAPPED], timeout=600)
    assert "its data carried over" in made.stdout, made.stdout
    # The cap is every tenant's: the neighbour gets a disk of its own too, made by the
    # administrator (README: a login's time limit is short for a copy).
    assert "made its disk" in lab.run(["dtenant", "provision", NEIGHBOUR], timeout=600).stdout
    return CAPPED


def test_a_cap_carries_the_tenants_data_over(vm_lab: host.Lab, capped: str) -> None:
    lab = vm_lab
    source, fstype = _mount_of(lab, capped)
    assert source.startswith("/dev/loop") and fstype == "ext4", (source, fstype)
    backing = lab.run(["losetup", "-n", "-O", "BACK-FILE", source]).stdout.strip()
    assert backing == f"{TENANTS}/{capped}/disk.img"
    # Everything it had: its image, its volume's data, its container's writable layer.
    seen = lab.ssh(capped, "docker run --rm -v keep:/v dtenant/busybox:latest cat /v/note"
                   " && docker start -a kept >/dev/null && docker cp kept:/mine - | tar -xO"
                   " && docker ps -a --format '{{.Names}}'", timeout=600)  # fmt: skip
    assert seen.stdout.split() == ["carried", "layer", "kept"], seen.stdout
    assert _disk_of(lab, capped).endswith("/1.0G")
    assert lab.run(["test", "-e", f"{TENANTS}/{capped}/docker.uncapped"],
                   check=False).returncode == 1  # the bare copy is gone  # fmt: skip
    # A login later changes nothing: the disk stays, its data with it.
    lab.ssh(capped, "docker volume inspect keep >/dev/null", timeout=600)
    assert _mount_of(lab, capped)[0] == source


def test_at_its_cap_only_the_tenant_gets_no_space(vm_lab: host.Lab, capped: str) -> None:
    lab = vm_lab
    free_before = int(lab.run(["stat", "-f", "-c", "%a*%S", TENANTS]).stdout.split("*")[0])
    # A volume and a writable layer both count: fill through the volume, then the layer
    # has no room either.
    filled = lab.ssh(capped, "docker run --rm -v keep:/v dtenant/busybox:latest sh -c "
                     "'dd if=/dev/zero of=/v/big bs=1M; echo x > /layer || echo layer-full'",
                     check=False, timeout=900)  # fmt: skip
    assert "No space left on device" in filled.stderr + filled.stdout, filled
    assert "layer-full" in filled.stdout, filled.stdout
    try:
        used, cap = _disk_of(lab, capped).split("/")
        assert cap == "1.0G" and used.endswith(("M", "G")), used
        # Its daemon still answers; its neighbour and the host's disk are untouched.
        assert lab.ssh(
            capped, "docker ps -a --format '{{.Names}}'", timeout=300
        ).stdout.split() == ["kept"]
        assert lab.ssh(capped, "docker system df", timeout=300).returncode == 0
        write = "dd if=/dev/zero of=/f bs=1M count=64 && echo neighbour-ok"
        ran = lab.ssh(NEIGHBOUR, f"docker run --rm dtenant/busybox:latest sh -c '{write}'",
                      timeout=600)  # fmt: skip
        assert "neighbour-ok" in ran.stdout, ran
        free_after = int(lab.run(["stat", "-f", "-c", "%a*%S", TENANTS]).stdout.split("*")[0])
        assert free_after > free_before - (1100 << 20) // 4096  # the cap, no more
    finally:
        lab.ssh(capped, "docker run --rm -v keep:/v dtenant/busybox:latest rm -f /v/big",
                timeout=600)  # fmt: skip
    assert "ok" in lab.ssh(capped, "docker run --rm dtenant/busybox:latest echo ok",
                           timeout=600).stdout  # room again  # fmt: skip


def test_a_larger_cap_grows_the_disk_under_a_running_container(vm_lab: host.Lab, capped: str
                                                               ) -> None:  # fmt: skip
    lab = vm_lab
    lab.ssh(capped, "docker run -d --name runs dtenant/busybox:latest sleep 3600", timeout=600)
    started = lab.ssh(capped, "docker inspect -f '{{.State.StartedAt}}' runs").stdout
    _cap(lab, "2G")
    grown = lab.run(["dtenant", "provision", capped], timeout=600)
    assert "grew its disk" in grown.stdout, grown.stdout
    assert _disk_of(lab, capped).endswith("/2.0G")
    # Grown in place: the same container, running since before, sees the room.
    seen = lab.ssh(capped, "docker inspect -f '{{.State.StartedAt}} {{.State.Running}}' runs"
                   " && docker exec runs df -k /", timeout=300).stdout  # fmt: skip
    assert seen.startswith(f"{started.strip()} true"), seen
    assert int(seen.splitlines()[-1].split()[1]) > 1536 * 1024, seen  # KiB of its filesystem
    # A lower cap never shrinks a disk: data cannot be lost by a configuration change.
    _cap(lab, "1G")
    lab.run(["dtenant", "provision", capped], timeout=600)
    assert _disk_of(lab, capped).endswith("/2.0G")
    lab.ssh(capped, "docker rm -f runs >/dev/null", timeout=300)


def test_a_reboot_brings_the_disk_back_with_its_data(vm_lab: host.Lab, capped: str) -> None:
    lab = vm_lab
    lab.reboot(timeout=600)
    seen = lab.ssh(capped, "docker run --rm -v keep:/v dtenant/busybox:latest cat /v/note",
                   timeout=600)  # fmt: skip
    assert seen.stdout.strip() == "carried"
    source, _ = _mount_of(lab, capped)
    assert lab.run(["losetup", "-n", "-O", "BACK-FILE", source]).stdout.strip() == (
        f"{TENANTS}/{capped}/disk.img"
    )
    assert _disk_of(lab, capped).endswith("/2.0G")
