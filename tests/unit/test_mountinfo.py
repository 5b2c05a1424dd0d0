from __future__ import annotations

from dtenant_session import mountinfo

HYBRID = """\
23 1 254:0 / / rw,relatime - ext4 /dev/vda rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid - cgroup cgroup rw,cpu,cpuacct
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw,nsdelegate
50 23 254:0 /srv/data /mnt/with\\040space rw - ext4 /dev/vda rw
"""


def test_parse_fields_and_escapes() -> None:
    entries = mountinfo.parse(HYBRID)
    assert entries[0].mount_point == "/"
    assert entries[0].fstype == "ext4"
    bind = entries[-1]
    assert bind.mount_point == "/mnt/with space"
    assert bind.root == "/srv/data"
    assert bind.device == "254:0"


def test_cgroup_mounts_of_a_hybrid_host() -> None:
    found = mountinfo.cgroup_mounts(mountinfo.parse(HYBRID))
    assert [(c.mount_point, c.mount_options) for c in found] == [
        ("/sys/fs/cgroup/cpu", "cpu"),
        ("/sys/fs/cgroup/cpu,cpuacct", "cpu,cpuacct"),
        ("/sys/fs/cgroup/systemd", "none,name=systemd"),
        ("/sys/fs/cgroup/unified", ""),
    ]


def test_cgroup_mounts_of_a_unified_host() -> None:
    text = "31 23 0:28 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n"
    found = mountinfo.cgroup_mounts(mountinfo.parse(text))
    assert [(c.mount_point, c.fstype) for c in found] == [("/sys/fs/cgroup", "cgroup2")]


def test_under_matches_whole_path_components() -> None:
    entries = mountinfo.parse(HYBRID)
    assert [e.mount_point for e in mountinfo.under(entries, "/sys/fs/cgroup/cpu")] == [
        "/sys/fs/cgroup/cpu"
    ]
