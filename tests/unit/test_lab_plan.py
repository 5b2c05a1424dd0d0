from __future__ import annotations

from pathlib import Path

import pytest

from dtenant_session import mountinfo
from tests.lab import boot
from tests.lab.paths import DATA_DIRS, LabNameError, LabPaths, check_name

PATHS = LabPaths("demo", Path("/var/lib/dtenant-lab"))
ROOT = "/var/lib/dtenant-lab/demo/root"
HYBRID = [
    mountinfo.CgroupMount("/sys/fs/cgroup/memory", "cgroup", ("memory",)),
    mountinfo.CgroupMount("/sys/fs/cgroup/systemd", "cgroup", ("name=systemd",)),
    mountinfo.CgroupMount("/sys/fs/cgroup/unified", "cgroup2", ()),
]
UNIFIED = [mountinfo.CgroupMount("/sys/fs/cgroup", "cgroup2", ())]


def _plan(cgroups: list[mountinfo.CgroupMount] = HYBRID) -> list[boot.Step]:
    return boot.boot_plan(PATHS, cgroups, "lab-demo")


def _index(plan: list[boot.Step], wanted: boot.Step) -> int:
    return plan.index(wanted)


def test_root_is_an_overlay_of_slash_on_the_labs_disk() -> None:
    """The upper layer is on the scratch tmpfs the real machine holds (host.up): a mount
    made in the plan would be the lab's own and go with it at a reboot."""
    plan = _plan()
    assert not [s for s in plan if isinstance(s, boot.Mount) and s.target == str(PATHS.scratch)]
    overlay = next(s for s in plan if isinstance(s, boot.Mount) and s.fstype == "overlay")
    assert overlay.target == ROOT
    assert "lowerdir=/," in overlay.options
    assert f"upperdir={PATHS.scratch}/upper" in overlay.options


def test_docker_data_is_on_real_directories_of_the_state_dir() -> None:
    binds = {s.target: s.source for s in _plan() if isinstance(s, boot.Bind)}
    for relative in DATA_DIRS:
        assert binds[f"{ROOT}/{relative}"].startswith(str(PATHS.state) + "/")


def test_host_devices_are_copied_never_bound() -> None:
    plan = _plan()
    assert boot.Mount("tmpfs", "tmpfs", f"{ROOT}/dev", "mode=755,nosuid") in plan
    assert boot.CopyDevice("/dev/null", f"{ROOT}/dev/null") in plan
    assert not [s for s in plan if isinstance(s, boot.Bind) and s.source.startswith("/dev")]


def test_global_sysctls_are_read_only_network_ones_writable() -> None:
    plan = _plan()
    net = boot.Bind(f"{ROOT}/proc/sys/net", f"{ROOT}/proc/sys/net")
    sys_ro = boot.Bind(f"{ROOT}/proc/sys", f"{ROOT}/proc/sys", recursive=True, readonly=True)
    assert plan.index(net) < plan.index(sys_ro)


def test_cgroups_mirror_the_host_layout() -> None:
    hybrid = [s for s in _plan() if isinstance(s, boot.Mount) and s.fstype.startswith("cgroup")]
    assert [(m.target, m.options) for m in hybrid] == [
        (f"{ROOT}/sys/fs/cgroup/memory", "memory"),
        (f"{ROOT}/sys/fs/cgroup/systemd", "none,name=systemd"),
        (f"{ROOT}/sys/fs/cgroup/unified", ""),
    ]
    unified = _plan(UNIFIED)
    assert boot.Mount("cgroup2", "cgroup", f"{ROOT}/sys/fs/cgroup", "") in unified
    assert not any(
        isinstance(s, boot.Mount) and s.target == f"{ROOT}/sys/fs/cgroup" and s.fstype == "tmpfs"
        for s in unified
    )


def test_units_that_would_touch_the_host_kernel_are_masked() -> None:
    masks = {s.path.rsplit("/", 1)[1] for s in _plan()
             if isinstance(s, boot.Symlink) and s.points_to == "/dev/null"}  # fmt: skip
    assert {"systemd-modules-load.service", "systemd-binfmt.service"} <= masks


@pytest.mark.parametrize("name", ["a", "pytest", "lab-2", "x" * 31])
def test_good_lab_names(name: str) -> None:
    assert check_name(name) == name


@pytest.mark.parametrize("name", ["", "-x", "Upper", "a/b", "../etc", "x" * 32, "a b"])
def test_bad_lab_names_are_refused(name: str) -> None:
    with pytest.raises(LabNameError, match="invalid lab name"):
        check_name(name)


@pytest.mark.parametrize("checkout", ["/tmp/dt any/dtenant", "/run/dt/x", "/root/dtany", "/srv/a"])
def test_a_bound_checkout_is_not_hidden_by_a_later_mount(checkout: str) -> None:
    """The lab's /tmp and /run are fresh tmpfs mounts: a checkout bound below them before
    they are mounted would be hidden inside ("install.sh: No such file or directory")."""
    plan = boot.boot_plan(PATHS, HYBRID, "lab-demo", (checkout,))
    target = f"{ROOT}{checkout}"
    bind = plan.index(boot.Bind(checkout, target, readonly=True))
    later = [s.target for s in plan[bind + 1 :] if isinstance(s, boot.Mount | boot.Bind)]
    assert [t for t in later if target == t or target.startswith(t + "/")] == []
