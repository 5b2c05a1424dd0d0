"""One tenant fills the disk that holds /var/lib/dtenant (no cap set), in a lab whose
/var/lib/dtenant is a small tmpfs holding a copy of the real one (the real machine's
disks are never touched): the other tenants' daemons still start, the administrator's
`status` and `verify` answer and name who filled it, and a daemon refused for lack of
space is back as soon as there is space again."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from tests import testimage
from tests.lab import host
from tests.sandbox.conftest import load_image

FILLER, VICTIM = "diskfill", "diskvictim"
FULL = "/run/lab-full-disk"  # the tmpfs, bound over /var/lib/dtenant
HEADROOM = 48 << 20  # what the filler's container may still write
IMAGE = testimage.IMAGE


def _stop_daemons(lab: host.Lab) -> None:
    lab.sh("systemctl stop 'docker@*.service' 'dtenant-daemon-failed@*.service' "
           "'dtenant-authz@*.service'; systemctl reset-failed 'docker@*.service'",
           check=False)  # fmt: skip


def _free_space(lab: host.Lab) -> None:
    lab.sh(f"find {FULL}/tenants/{FILLER} -name big -type f -delete; "
           f"find {FULL}/tenants/{FILLER} -name '*-json.log' -exec truncate -s 0 {{}} +; "
           f"mount -o remount,nr_inodes=1000000 {FULL}")  # fmt: skip


@pytest.fixture(scope="module")
def full_disk(lab: host.Lab) -> Iterator[None]:
    for user in (FILLER, VICTIM):
        lab.add_account(user)
        load_image(lab, user)
    _stop_daemons(lab)
    used = int(lab.sh("du -sb /var/lib/dtenant | cut -f1").stdout)
    size = used + HEADROOM
    lab.sh(f"mkdir -p {FULL} && mount -t tmpfs -o size={size},mode=700 tmpfs {FULL}"
           f" && cp -a /var/lib/dtenant/. {FULL}/"
           f" && mount --bind {FULL} /var/lib/dtenant")  # fmt: skip
    try:
        # The filler's container writes until nothing is left to it, then its log (which
        # its daemon, root, writes) takes the rest.
        fill = "dd if=/dev/zero of=/fill/big bs=1M; while :; do echo fill fill fill; done"
        lab.ssh(FILLER, f"docker run -d -v fill:/fill {IMAGE} sh -c '{fill}'")
        deadline = time.monotonic() + 90
        while int(lab.sh(f"stat -f -c %a {FULL}").stdout) > 0:
            assert time.monotonic() < deadline, "the disk is not full"
            time.sleep(1)
        lab.run(["systemctl", "stop", f"docker@{FILLER}.service"])
        # What its daemon freed as it stopped, its container would take again.
        lab.sh(f"cat /dev/zero >> $(find {FULL}/tenants/{FILLER} -name big -type f)", check=False)
        assert int(lab.sh(f"stat -f -c %a {FULL}").stdout) == 0
        yield
    finally:
        _stop_daemons(lab)
        # The tests after these run on the real /var/lib/dtenant, whatever still holds a
        # file of the small one: lazily unmounted if it is busy.
        lab.sh(f"umount /var/lib/dtenant || umount -l /var/lib/dtenant; "
               f"umount {FULL} || umount -l {FULL}", check=False)  # fmt: skip
        mounts = lab.run(["findmnt", "-n", "-o", "SOURCE", "/var/lib/dtenant"], check=False)
        assert FULL not in mounts.stdout and "tmpfs" not in mounts.stdout, mounts.stdout


def test_a_stopped_daemon_starts_on_a_full_disk(lab: host.Lab, full_disk: None) -> None:
    listed = lab.ssh(VICTIM, "docker images --format '{{.Repository}}'", check=False)
    assert listed.returncode == 0, listed.stderr + listed.stdout
    assert IMAGE.split(":")[0] in listed.stdout
    # Its own writes fail for lack of space, and say so.
    wrote = lab.ssh(VICTIM, f"docker run --rm {IMAGE} sh -c 'head -c 8M /dev/zero > /big'",
                    check=False)  # fmt: skip
    assert wrote.returncode != 0
    assert "no space left" in (wrote.stderr + wrote.stdout).lower()
    lab.run(["systemctl", "stop", f"docker@{VICTIM}.service"])


def test_status_and_verify_answer_and_name_the_largest(lab: host.Lab, full_disk: None) -> None:
    lab.run(["dtenant", "reap"], check=False)  # the reaper's pass measures data-roots
    status = lab.run(["dtenant", "status"], check=False)
    assert status.returncode == 0, status.stderr
    assert FILLER in status.stdout and VICTIM in status.stdout
    full_line = [line for line in status.stdout.splitlines() if "largest" in line]
    assert full_line, status.stdout
    assert full_line[0].split("largest", 1)[1].split()[1].startswith(FILLER), full_line
    rows = json.loads(lab.run(["dtenant", "status", "--json"]).stdout)
    filler = next(r for r in rows if r["user"] == FILLER)
    assert filler["data_root_bytes"] and filler["data_root_bytes"] > HEADROOM // 2, filler
    verify = lab.run(["dtenant", "verify"], check=False)
    assert verify.returncode in (0, 1), verify.stderr  # 2: it could not check
    assert "full" in verify.stdout and FILLER in verify.stdout, verify.stdout


def test_a_daemon_refused_for_space_is_back_once_there_is_space(
    lab: host.Lab, full_disk: None
) -> None:
    # Not a block nor an inode left: the daemon itself cannot start (it makes its
    # temporary directory at every start), and its user is told why.
    used = lab.sh(f"df --output=iused {FULL} | tail -1").stdout.strip()
    lab.sh(f"mount -o remount,nr_inodes={used} {FULL}")
    try:
        # The first command may find no explainer yet, the next finds it, with the reason.
        for _ in range(10):
            refused = lab.ssh(VICTIM, "docker ps", check=False)
            assert refused.returncode != 0
            if "cannot start" in refused.stderr:
                break
            time.sleep(1)
        assert "no space left" in refused.stderr.lower(), refused.stderr
        # Still refused while full: the user is not handed a daemon that fails again.
        time.sleep(6)
        assert lab.ssh(VICTIM, "docker ps", check=False).returncode != 0
    finally:
        _free_space(lab)
    deadline = time.monotonic() + 20
    while (tried := lab.ssh(VICTIM, "docker ps", check=False)).returncode != 0:
        assert time.monotonic() < deadline, f"still locked out: {tried.stderr}"
        time.sleep(1)
